import CoreMetrics
import Foundation

extension OptimizerMetrics {
    /// The Prometheus-style label of a metric: `optim_l2_norm_param`, `optim_cosine_update_grad`, …
    public static func label(of metric: String, prefix: String = "optim") -> String {
        "\(prefix)_" + metric.replacingOccurrences(of: "/", with: "_")
    }

    /// Records every value as a swift-metrics `Gauge` labelled by metric
    /// (``label(of:prefix:)``) with the parameter name as the `param` dimension, so a backend such
    /// as swift-prometheus exports `optim_l2_norm_param{param="fc1.weight"} 3.2`.
    public func record(prefix: String = "optim", dimensions: [(String, String)] = [],
                       factory: MetricsFactory = MetricsSystem.factory) {
        for (key, value) in values {
            guard let split = Self.splitKey(key) else { continue }
            Gauge(label: Self.label(of: split.metric, prefix: prefix), dimensions: dimensions + [("param", split.parameter)], factory: factory)
                .record(value)
        }
    }

    /// Splits `l2_norm/param/fc1.weight` into the metric and the parameter name.
    static func splitKey(_ key: String) -> (metric: String, parameter: String)? {
        let parts = key.split(separator: "/", maxSplits: 2).map(String.init)
        guard parts.count == 3 else { return nil }
        return (parts[0] + "/" + parts[1], parts[2])
    }

    /// One JSON Lines record: `{"step": N, …extra, "metrics": {"l2_norm/param/w": 3.2, …}}` with
    /// sorted keys; non-finite values are written as the strings "NaN", "Infinity", "-Infinity".
    public func jsonLine(step: Int, extra: [String: Double] = [:]) throws -> String {
        try Self.jsonLine(step: step, metrics: values, extra: extra)
    }

    /// One JSON Lines record from finished metric values (``values``); `metrics` is left out when
    /// there are none.
    public static func jsonLine(step: Int, metrics: [String: Double], extra: [String: Double] = [:]) throws -> String {
        struct Line: Encodable {
            var step: Int
            var extra: [String: Double]
            var metrics: [String: Double]
            enum CodingKeys: String, CodingKey { case step, metrics }
            struct Key: CodingKey {
                var stringValue: String
                var intValue: Int? { nil }
                init(stringValue: String) { self.stringValue = stringValue }
                init?(intValue: Int) { nil }
            }
            func encode(to encoder: Encoder) throws {
                var container = encoder.container(keyedBy: Key.self)
                try container.encode(step, forKey: Key(stringValue: "step"))
                for (key, value) in extra { try container.encode(value, forKey: Key(stringValue: key)) }
                if !metrics.isEmpty { try container.encode(metrics, forKey: Key(stringValue: "metrics")) }
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return String(decoding: try encoder.encode(Line(step: step, extra: extra, metrics: metrics)), as: UTF8.self)
    }
}
