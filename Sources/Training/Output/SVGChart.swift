import Foundation

/// A line chart rendered as a self-contained SVG document: axes with round-number ticks, one
/// polyline per series, a legend. Enough for training curves; no dependencies.
public struct SVGChart: Sendable {
    /// One named line of the chart.
    public struct Series: Sendable {
        /// The series' name in the legend.
        public var name: String
        /// The points, in drawing order; non-finite ones are left out.
        public var points: [(x: Double, y: Double)]
        /// A series of `points`, dropping any with a non-finite coordinate.
        public init(name: String, points: [(x: Double, y: Double)]) {
            self.name = name
            self.points = points.filter { $0.x.isFinite && $0.y.isFinite }
        }
    }

    /// The chart's title.
    public var title: String
    /// The x axis's label.
    public var xLabel: String
    /// The y axis's label.
    public var yLabel: String
    /// The lines, coloured from ``palette`` in order.
    public var series: [Series]
    /// The SVG's width.
    public var width = 640.0
    /// The SVG's height.
    public var height = 400.0
    /// A logarithmic y axis (for losses); values ≤ 0 are left out.
    public var logarithmicY = false

    /// Colours that stay apart for the usual colour-vision deficiencies (Okabe–Ito).
    public static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

    /// A 640 × 400 chart of `series`.
    public init(title: String, xLabel: String, yLabel: String, series: [Series], logarithmicY: Bool = false) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logarithmicY = logarithmicY
    }

    /// Round tick values covering `low...high`, about `count` of them (1, 2 or 5 × 10ⁿ apart).
    static func ticks(_ low: Double, _ high: Double, count: Int = 5) -> [Double] {
        guard high > low else { return [low] }
        let raw = (high - low) / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        var ticks: [Double] = []
        var value = (low / step).rounded(.up) * step
        while value <= high + step * 1e-9 {
            ticks.append(abs(value) < step * 1e-9 ? 0 : value)
            value += step
        }
        return ticks
    }

    static func label(_ value: Double) -> String {
        if value == 0 { return "0" }
        let magnitude = abs(value)
        if magnitude >= 1e5 || magnitude < 1e-3 { return String(format: "%.0e", value) }
        if value == value.rounded() { return String(format: "%.0f", value) }
        return String(format: magnitude < 0.1 ? "%.3g" : "%.2f", value).replacingOccurrences(of: #"\.?0+$"#, with: "", options: .regularExpression)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// The chart as an `<svg>` element (embeddable in HTML, or a file of its own).
    public func render() -> String {
        let left = 64.0, right = 16.0, top = 36.0, bottom = 48.0
        let legendHeight = Double((series.count + 2) / 3) * 18
        let plotWidth = width - left - right, plotHeight = height - top - bottom - legendHeight
        let transform: (Double) -> Double = logarithmicY ? { log10($0) } : { $0 }
        let points = series.flatMap { $0.points }.filter { !logarithmicY || $0.y > 0 }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="20" text-anchor="middle" font-size="15" font-weight="bold">\(Self.escape(title))</text>

        """
        guard let minX = points.map(\.x).min(), let maxX = points.map(\.x).max(),
              let minY = points.map({ transform($0.y) }).min(), let maxY = points.map({ transform($0.y) }).max() else {
            return svg + "<text x=\"\(width / 2)\" y=\"\(height / 2)\" text-anchor=\"middle\">no data</text>\n</svg>\n"
        }
        // Steps and seconds start at 0.
        let start = minX >= 0 ? 0 : minX
        let (x0, x1) = start == maxX ? (start - 1, maxX + 1) : (start, maxX)
        let padding = (maxY - minY) * 0.05
        let (y0, y1) = minY == maxY ? (minY - 1, maxY + 1) : (minY - padding, maxY + padding)
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * plotWidth }
        func py(_ y: Double) -> Double { top + (1 - (transform(y) - y0) / (y1 - y0)) * plotHeight }
        func format(_ value: Double) -> String { String(format: "%.1f", value) }

        svg += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#888\"/>\n"
        for tick in Self.ticks(x0, x1) {
            let x = format(px(tick))
            svg += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(top + plotHeight)\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(x)\" y=\"\(format(top + plotHeight + 16))\" text-anchor=\"middle\">\(Self.label(tick))</text>\n"
        }
        let yTicks: [Double] = logarithmicY
            ? Self.ticks(floor(y0), ceil(y1), count: 4).filter { $0 >= y0 && $0 <= y1 && $0 == $0.rounded() }.map { pow(10, $0) }
            : Self.ticks(y0, y1)
        for tick in yTicks {
            let y = format(py(tick))
            svg += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotWidth)\" y2=\"\(y)\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(y)\" text-anchor=\"end\" dominant-baseline=\"middle\">\(Self.label(tick))</text>\n"
        }
        svg += "<text x=\"\(left + plotWidth / 2)\" y=\"\(format(top + plotHeight + 36))\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        svg += "<text transform=\"translate(16 \(format(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel))</text>\n"
        for (index, item) in series.enumerated() {
            let colour = Self.palette[index % Self.palette.count]
            let coordinates = item.points.filter { !logarithmicY || $0.y > 0 }.map { "\(format(px($0.x))),\(format(py($0.y)))" }
            if coordinates.count == 1 {
                let parts = coordinates[0].split(separator: ",")
                svg += "<circle cx=\"\(parts[0])\" cy=\"\(parts[1])\" r=\"3\" fill=\"\(colour)\"/>\n"
            } else if !coordinates.isEmpty {
                svg += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.8\" points=\"\(coordinates.joined(separator: " "))\"/>\n"
            }
            let column = Double(index % 3), row = Double(index / 3)
            let lx = left + column * plotWidth / 3, ly = top + plotHeight + 52 + row * 18
            svg += "<rect x=\"\(format(lx))\" y=\"\(format(ly - 9))\" width=\"14\" height=\"4\" fill=\"\(colour)\"/>"
            svg += "<text x=\"\(format(lx + 20))\" y=\"\(format(ly - 4))\" dominant-baseline=\"middle\">\(Self.escape(item.name))</text>\n"
        }
        return svg + "</svg>\n"
    }
}
