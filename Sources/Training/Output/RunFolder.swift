import Foundation
import Optim
import Safetensors

/// A run's folder: `summary.json`, `metrics.jsonl` (written as the run goes), `loss.svg`,
/// `accuracy.svg` and `checkpoint.safetensors`.
public struct RunFolder: Sendable {
    public let url: URL
    public var summary: URL { url.appendingPathComponent("summary.json") }
    public var metrics: URL { url.appendingPathComponent("metrics.jsonl") }
    public var checkpoint: URL { url.appendingPathComponent("checkpoint.safetensors") }
    public var lossChart: URL { url.appendingPathComponent("loss.svg") }
    public var accuracyChart: URL { url.appendingPathComponent("accuracy.svg") }

    /// Creates the folder (and its parents).
    public init(_ url: URL) throws {
        self.url = url
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw TrainingError.invalidOption("cannot create the run folder \(url.path): \(error.localizedDescription)")
        }
    }

    /// The default location: `runs/<UTC timestamp>` under the current directory.
    public static func defaultURL(now: Date = Date()) -> URL {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        return URL(fileURLWithPath: "runs").appendingPathComponent(formatter.string(from: now))
    }

    /// A writer for `metrics.jsonl`, one record per line as the run goes.
    public func metricsWriter(append: Bool = false) throws -> MetricsWriter { try MetricsWriter(metrics, append: append) }

    /// Writes `summary.json` and the two charts.
    public func finish(_ result: TrainingResult, extra: [String: String] = [:]) throws {
        try SafetensorsFile.writeAtomically(Self.summaryJSON(result, extra: extra), to: summary)
        try SafetensorsFile.writeAtomically(Data(Self.lossChart([(result.configuration.optimizer, result)]).render().utf8), to: lossChart)
        try SafetensorsFile.writeAtomically(Data(Self.accuracyChart([(result.configuration.optimizer, result)]).render().utf8), to: accuracyChart)
    }

    /// Training loss (logarithmic) against step, one series per run.
    public static func lossChart(_ runs: [(name: String, result: TrainingResult)], againstTime: Bool = false) -> SVGChart {
        SVGChart(title: againstTime ? "Training loss against time" : "Training loss", xLabel: againstTime ? "seconds" : "step", yLabel: "loss",
                 series: runs.map { run in
                     .init(name: run.name, points: run.result.records.map { (againstTime ? $0.seconds : Double($0.step), $0.loss) })
                 }, logarithmicY: true)
    }

    /// Test accuracy (at the end of each epoch) against step, one series per run.
    public static func accuracyChart(_ runs: [(name: String, result: TrainingResult)], againstTime: Bool = false) -> SVGChart {
        SVGChart(title: againstTime ? "Test accuracy against time" : "Test accuracy", xLabel: againstTime ? "seconds" : "step",
                 yLabel: "accuracy (%)", series: runs.map { run in
                     .init(name: run.name, points: run.result.records.compactMap { record in
                         record.testAccuracy.map { (againstTime ? record.seconds : Double(record.step), $0 * 100) }
                     })
                 })
    }

    /// The summary as pretty-printed JSON with sorted keys.
    public static func summaryJSON(_ result: TrainingResult, extra: [String: String] = [:]) throws -> Data {
        struct Summary: Encodable {
            var task: String
            /// Task austen: the validation loss (test_loss under its own name), and the GPT's shape.
            var val_loss: Double?
            var gpt: [String: Int]?
            var iterations: Int?
            var optimizer: String
            var base_optimizer: String?
            var hyperparameters: HyperparameterDictionary
            var base_hyperparameters: HyperparameterDictionary?
            var schedule: String
            var warmup_steps: Int
            var clip_norm: Double?
            var batch_size: Int
            var epochs: Int
            var hidden: [Int]
            var activation: String
            var seed: UInt64
            var threads: Int
            var test_accuracy: Double
            var test_loss: Double
            var final_train_loss: Double
            var steps: Int
            var start_step: Int
            var seconds: Double
            var wall_seconds: Double
            var steps_per_second: Double
            var parameter_count: Int
            var state_bytes_per_parameter: Double
            var extra: [String: String]?
        }
        let configuration = result.configuration
        let resolved = try configuration.optimizerConfiguration()
        let text = configuration.task == .austen
        let summary = Summary(
            task: configuration.task.rawValue, val_loss: text ? result.testLoss : nil,
            gpt: text ? ["layers": configuration.layers, "heads": configuration.heads, "embedding": configuration.embedding, "context": configuration.context] : nil,
            iterations: text ? configuration.iterations : nil,
            optimizer: configuration.optimizer, base_optimizer: resolved.base?.name, hyperparameters: resolved.hyperparameters,
            base_hyperparameters: resolved.base?.hyperparameters, schedule: configuration.schedule.rawValue,
            warmup_steps: configuration.warmupSteps, clip_norm: configuration.clipNorm, batch_size: configuration.batchSize,
            epochs: configuration.epochs, hidden: configuration.hidden, activation: configuration.activation.rawValue,
            seed: configuration.seed, threads: configuration.threads, test_accuracy: result.testAccuracy, test_loss: result.testLoss,
            final_train_loss: result.finalTrainLoss, steps: result.steps, start_step: result.startStep, seconds: result.seconds,
            wall_seconds: result.wallSeconds, steps_per_second: result.stepsPerSecond, parameter_count: result.parameterCount,
            state_bytes_per_parameter: result.stateBytesPerParameter, extra: extra.isEmpty ? nil : extra)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try encoder.encode(summary) + Data("\n".utf8)
    }
}

/// Appends training records to a JSON Lines file, one object per line with sorted keys.
public final class MetricsWriter {
    private let handle: FileHandle

    init(_ url: URL, append: Bool) throws {
        if !append || !FileManager.default.fileExists(atPath: url.path) {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw TrainingError.invalidOption("cannot write \(url.path)")
            }
        }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }

    deinit { try? handle.close() }

    /// The JSON line for a record: step, epoch, seconds, lr, loss, accuracy, and when present
    /// test_loss, test_accuracy, grad_norm and the optimizer metrics.
    public static func line(_ record: TrainingRecord) throws -> String {
        var object: [String: Double] = [
            "epoch": Double(record.epoch), "seconds": record.seconds, "lr": record.learningRate,
            "loss": record.loss, "accuracy": record.accuracy,
        ]
        if let value = record.testLoss { object["test_loss"] = value }
        if let value = record.testAccuracy { object["test_accuracy"] = value }
        if let value = record.gradientNorm { object["grad_norm"] = value }
        return try OptimizerMetrics.jsonLine(step: record.step, metrics: record.metrics ?? [:], extra: object)
    }

    public func write(_ record: TrainingRecord) throws {
        try handle.write(contentsOf: Data((try Self.line(record) + "\n").utf8))
    }
}

extension Trainer {
    /// Runs the trainer and records the run: each logged step appended to `folder`'s
    /// `metrics.jsonl` as it comes, then the checkpoint, `summary.json` and the charts. With a
    /// nil folder (a data-parallel rank other than 0) nothing is written, but the checkpoint save
    /// still takes part in its collective; `checkpoint` is where rank 0 writes it.
    public func run(recordingTo folder: RunFolder?, checkpoint: URL, until: Int? = nil, extra: [String: String] = [:],
                    progress: (TrainingProgress) -> Void = { _ in }) throws -> TrainingResult {
        let writer = try folder?.metricsWriter()
        var writeError: (any Error)?
        let result = try run(until: until, progress: progress, record: { record in
            do { try writer?.write(record) } catch { writeError = writeError ?? error }
        })
        if let writeError { throw writeError }
        try saveCheckpoint(to: checkpoint)
        try folder?.finish(result, extra: extra)
        return result
    }
}
