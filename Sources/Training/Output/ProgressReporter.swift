import Foundation

/// Shows a training run's progress: on a terminal, one bar redrawn in place (at most ten times a
/// second); otherwise plain lines, one per milestone (epoch end), that read well in a log file.
public final class ProgressReporter: @unchecked Sendable {
    /// A bar redrawn in place, plain lines, or nothing.
    public enum Style: Sendable {
        /// One bar redrawn in place (a terminal).
        case bar
        /// Plain lines, one per milestone (a log file).
        case lines
        /// Nothing.
        case silent
    }

    /// How progress is shown: by default a bar on a terminal, plain lines otherwise.
    public let style: Style
    private let output: FileHandle
    private var lastDraw = 0.0
    private var drewBar = false

    /// `style` defaults to a bar when `output` is a terminal and lines otherwise.
    public init(output: FileHandle = .standardOutput, style: Style? = nil) {
        self.output = output
        self.style = style ?? (isatty(output.fileDescriptor) == 1 ? .bar : .lines)
    }

    /// One line of text for a progress record.
    public static func describe(_ progress: TrainingProgress) -> String {
        var text = "epoch \(progress.epoch + 1)/\(progress.epochs)  step \(progress.step)/\(progress.totalSteps)"
        text += String(format: "  loss %.4f  acc %.1f%%", progress.loss, progress.accuracy * 100)
        if let test = progress.testAccuracy { text += String(format: "  test %.1f%%", test * 100) }
        text += String(format: "  %.0f steps/s", progress.stepsPerSecond)
        return text
    }

    /// Reports `progress`. A milestone (an epoch's end) is always drawn, and is all the line
    /// style prints.
    public func report(_ progress: TrainingProgress, milestone: Bool = false) {
        switch style {
        case .silent:
            return
        case .lines:
            if milestone { write(Self.describe(progress) + "\n") }
        case .bar:
            let now = ProcessInfo.processInfo.systemUptime
            guard milestone || now - lastDraw >= 0.1 else { return }
            lastDraw = now
            let width = 24, fraction = progress.totalSteps > 0 ? Double(progress.step) / Double(progress.totalSteps) : 1
            let filled = min(width, Int((fraction * Double(width)).rounded()))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            write("\r\u{1B}[2K[\(bar)] \(Self.describe(progress))")
            drewBar = true
        }
    }

    /// Ends the bar's line so later output starts on a fresh one.
    public func finish() {
        if drewBar { write("\n") }
        drewBar = false
    }

    private func write(_ text: String) { writeIgnoringErrors(output.fileDescriptor, text) }
}
