import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Optim
import OptimDistributed
import Safetensors

/// A run's folder: `summary.json`, `metrics.jsonl` (written as the run goes), `loss.svg`,
/// `accuracy.svg` and `checkpoint.safetensors`.
///
/// Opening one claims it: `metrics.jsonl` is created (or opened) and locked (`flock`) for as long
/// as the ``RunFolder`` lives, so two runs never write the same folder at once. A folder that
/// already holds a run is refused unless the caller asks to replace it (``Mode/replace``) or to
/// continue it (``Mode/continue``, which appends to its metrics). Temporary files an interrupted
/// save left behind (`.<name>.<pid>.<n>.tmp` of a process that is gone) are removed.
public final class RunFolder: @unchecked Sendable {
    /// What to do with a folder that already holds a run.
    public enum Mode: Sendable {
        /// Refuse it.
        case new
        /// Start the run afresh in it (`--force`): its metrics are emptied.
        case replace
        /// Continue the run it holds (a resume into its own folder): metrics are appended.
        case `continue`
    }

    /// The files a run writes; a folder holding any of them holds a run.
    public static let runFiles = ["metrics.jsonl", "summary.json", "checkpoint.safetensors", "loss.svg", "accuracy.svg", "timeline.jsonl", "timeline.svg"]
    /// The folder of a run's sharded checkpoint (`ShardedCheckpoint`), in place of
    /// `checkpoint.safetensors` when each rank writes its own part of the state.
    public static let shardedCheckpointName = "checkpoint"

    /// The folder.
    public let url: URL
    /// `summary.json`: the configuration and the outcome, written when the run finishes.
    public var summary: URL { url.appendingPathComponent("summary.json") }
    /// `metrics.jsonl`: one JSON line per logged step.
    public var metrics: URL { url.appendingPathComponent("metrics.jsonl") }
    /// `checkpoint.safetensors`: the run's latest checkpoint.
    public var checkpoint: URL { url.appendingPathComponent("checkpoint.safetensors") }
    /// `loss.svg`: the loss chart.
    public var lossChart: URL { url.appendingPathComponent("loss.svg") }
    /// `accuracy.svg`: the accuracy chart.
    public var accuracyChart: URL { url.appendingPathComponent("accuracy.svg") }
    /// `timeline.jsonl`: a data-parallel run's per-step timeline on rank 0 (``StepTiming``), one
    /// JSON line per step: `compute_ms`, `communication_ms`, `exposed_ms`, `hidden_ms`,
    /// `optimizer_ms`, `overlapped`; charted in `timeline.svg`.
    public var timeline: URL { url.appendingPathComponent("timeline.jsonl") }
    /// The lines `metrics.jsonl` held when the folder was opened (0 unless continuing).
    public let earlierRecordCount: Int
    /// The records read back from `metrics.jsonl` when continuing, for the charts of the whole run.
    public let earlierRecords: [TrainingRecord]
    private let writer: MetricsWriter

    /// Opens (creating it and its parents) the run folder at `url`; `option` names where the path
    /// came from in messages (`--out`).
    public init(_ url: URL, mode: Mode = .new, option: String = "--out") throws {
        self.url = url
        let path = url.path
        try Self.makeFolder(url, option: option, allowExisting: true)
        var existing = Self.runFiles.filter { access(url.appendingPathComponent($0).path, F_OK) == 0 }
        let shardedCheckpoint = url.appendingPathComponent(Self.shardedCheckpointName)
        if ShardedCheckpoint.exists(at: shardedCheckpoint) { existing.append(Self.shardedCheckpointName + "/") }
        if mode == .new, !existing.isEmpty {
            throw TrainingError.file("\(option) \(path) already holds a run (\(existing.joined(separator: ", "))); pass --force to replace it, or --resume \(url.appendingPathComponent("checkpoint.safetensors").path) to continue it")
        }
        for name in Self.runFiles {
            var info = stat()
            if lstat(url.appendingPathComponent(name).path, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
                throw TrainingError.file("\(option) \(path): \(name) is not a regular file")
            }
        }
        writer = try MetricsWriter(url.appendingPathComponent("metrics.jsonl"), mode: mode, option: option)
        earlierRecordCount = mode == .continue ? writer.lineCount() : 0
        earlierRecords = mode == .continue ? Self.readRecords(url.appendingPathComponent("metrics.jsonl")) : []
        if mode == .replace {
            // The replaced run's other files go now, so none is mistaken for this run's.
            for name in Self.runFiles where name != "metrics.jsonl" { unlink(url.appendingPathComponent(name).path) }
            if ShardedCheckpoint.exists(at: shardedCheckpoint) { try? FileManager.default.removeItem(at: shardedCheckpoint) }
        }
        Self.removeStaleTemporaries(in: url)
    }

    /// A new folder `<parent>/<prefix><UTC timestamp>` (with `-2`, `-3`, … when another run took
    /// that name: two runs started in the same second get two folders).
    public static func unique(in parent: URL = URL(fileURLWithPath: "runs"), prefix: String = "", now: Date = Date()) throws -> RunFolder {
        try RunFolder(uniqueFolder(in: parent, prefix: prefix, now: now))
    }

    /// Creates a new, empty folder `<parent>/<prefix><UTC timestamp>[-n]` (`mkdir` is atomic: two
    /// processes never get the same one).
    public static func uniqueFolder(in parent: URL = URL(fileURLWithPath: "runs"), prefix: String = "", now: Date = Date()) throws -> URL {
        let name = prefix + defaultURL(now: now).lastPathComponent
        try makeFolder(parent, option: "the runs folder", allowExisting: true)
        for attempt in 1...10_000 {
            let url = parent.appendingPathComponent(attempt == 1 ? name : "\(name)-\(attempt)")
            if mkdir(url.path, 0o755) == 0 { return url }
            guard errno == EEXIST else { throw TrainingError.file("cannot create \(url.path): \(describeErrno(errno))") }
        }
        throw TrainingError.file("cannot find a free folder name for \(parent.appendingPathComponent(name).path)")
    }

    /// Creates `url` and its parents if need be; a file in the way is refused.
    public static func makeFolder(_ url: URL, option: String) throws { try makeFolder(url, option: option, allowExisting: true) }

    /// Creates `url` and its parents (each `mkdir` checked, so the message names the real cause).
    static func makeFolder(_ url: URL, option: String, allowExisting: Bool, target: URL? = nil) throws {
        let target = target ?? url
        let inside = target.path == url.path ? "" : " (\(url.path))"
        var info = stat()
        if stat(url.path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else {
                throw TrainingError.file("\(option) \(target.path): \(inside.isEmpty ? "it" : url.path) is a file, not a folder")
            }
            return
        }
        let parent = url.deletingLastPathComponent()
        if parent.path != url.path, !parent.path.isEmpty { try makeFolder(parent, option: option, allowExisting: true, target: target) }
        if mkdir(url.path, 0o755) != 0, errno != EEXIST {
            throw TrainingError.file("\(option) \(target.path): cannot create the folder\(inside): \(describeErrno(errno))")
        }
    }

    /// Removes `.<file>.<pid>.<n>.tmp` files whose writing process no longer runs.
    static func removeStaleTemporaries(in url: URL) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: url.path) else { return }
        for name in names where name.hasPrefix(".") && name.hasSuffix(".tmp") {
            let parts = name.split(separator: ".")
            guard parts.count >= 4, let pid = Int32(parts[parts.count - 3]) else { continue }
            if pid != getpid(), kill(pid, 0) != 0, errno == ESRCH { unlink(url.appendingPathComponent(name).path) }
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

    /// The records of a `metrics.jsonl` (lines that do not parse are skipped).
    static func readRecords(_ url: URL) -> [TrainingRecord] {
        guard let data = FileManager.default.contents(atPath: url.path) else { return [] }
        return data.split(separator: UInt8(ascii: "\n")).compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else { return nil }
            func number(_ key: String) -> Double? { (object[key] as? NSNumber)?.doubleValue }
            guard let step = number("step"), let loss = number("loss") else { return nil }
            return TrainingRecord(step: Int(step), epoch: Int(number("epoch") ?? 0), seconds: number("seconds") ?? 0,
                                  learningRate: number("lr") ?? 0, loss: loss, accuracy: number("accuracy") ?? 0,
                                  testLoss: number("test_loss"), testAccuracy: number("test_accuracy"),
                                  gradientNorm: number("grad_norm"), metrics: nil)
        }
    }

    /// The writer for `metrics.jsonl`, one record per line as the run goes.
    public func metricsWriter() -> MetricsWriter { writer }

    /// Adds `steps` to `timeline.jsonl` (after a continued run's earlier lines), atomically.
    public func appendTimeline(_ steps: [StepTiming]) throws {
        guard !steps.isEmpty else { return }
        var data = (try? Data(contentsOf: timeline)) ?? Data()
        if let last = data.last, last != UInt8(ascii: "\n") { data.append(UInt8(ascii: "\n")) }
        func milliseconds(_ seconds: Double) -> String { String(format: "%.3f", seconds * 1000) }
        for step in steps {
            data.append(contentsOf: ("{\"step\":\(step.step),\"compute_ms\":\(milliseconds(step.computeSeconds)),\"communication_ms\":\(milliseconds(step.communicationSeconds)),"
                + "\"exposed_ms\":\(milliseconds(step.exposedSeconds)),\"hidden_ms\":\(milliseconds(step.hiddenSeconds)),"
                + "\"optimizer_ms\":\(milliseconds(step.optimizerSeconds)),\"overlapped\":\(step.overlapped)}\n").utf8)
        }
        do {
            try SafetensorsFile.writeAtomically(data, to: timeline)
            try SafetensorsFile.writeAtomically(Data(Self.timelineChart(steps).render().utf8), to: url.appendingPathComponent("timeline.svg"))
        } catch {
            throw TrainingError.file(error.description)
        }
    }

    /// Milliseconds per step of the forward and backward pass, of the gradient communication's
    /// span, and of the part of it waited for after backward (`timeline.svg`).
    public static func timelineChart(_ steps: [StepTiming]) -> SVGChart {
        func series(_ name: String, _ value: (StepTiming) -> Double) -> SVGChart.Series {
            SVGChart.Series(name: name, points: steps.map { (Double($0.step), value($0) * 1000) })
        }
        return SVGChart(title: "Where each step's time went (rank 0)", xLabel: "step", yLabel: "milliseconds",
                        series: [series("forward + backward", \.computeSeconds), series("gradient communication", \.communicationSeconds),
                                 series("waited for after backward", \.exposedSeconds), series("optimizer", \.optimizerSeconds)])
    }

    /// Writes `summary.json` and the two charts.
    public func finish(_ result: TrainingResult, extra: [String: String] = [:], resume: ResumeRecord? = nil, status: String? = nil) throws {
        do {
            try SafetensorsFile.writeAtomically(Self.summaryJSON(result, extra: extra, resume: resume, status: status), to: summary)
            // A continued run's charts show the whole run: the earlier records up to where it resumed.
            var whole = result
            whole.records = earlierRecords.filter { $0.step <= result.startStep } + result.records
            try SafetensorsFile.writeAtomically(Data(Self.lossChart([(result.configuration.optimizer, whole)]).render().utf8), to: lossChart)
            try SafetensorsFile.writeAtomically(Data(Self.accuracyChart([(result.configuration.optimizer, whole)]).render().utf8), to: accuracyChart)
        } catch let error as SafetensorsError {
            throw TrainingError.file(error.description)
        }
    }

    /// Training loss (logarithmic) against step, one series per run.
    public static func lossChart(_ runs: [(name: String, result: TrainingResult)], againstTime: Bool = false) -> SVGChart {
        SVGChart(title: againstTime ? "Training loss against time" : "Training loss", xLabel: againstTime ? "seconds" : "step", yLabel: "loss",
                 series: runs.map { run in
                     .init(name: run.name, points: run.result.records.map { (againstTime ? $0.seconds : Double($0.step), $0.loss) })
                 }, logarithmicY: true)
    }

    /// Held-out loss (test or validation, at each evaluation) against step, one series per run.
    public static func heldOutLossChart(_ runs: [(name: String, result: TrainingResult)], againstTime: Bool = false) -> SVGChart {
        SVGChart(title: againstTime ? "Held-out loss against time" : "Held-out loss", xLabel: againstTime ? "seconds" : "step", yLabel: "loss",
                 series: runs.map { run in
                     .init(name: run.name, points: run.result.records.compactMap { record in
                         record.testLoss.map { (againstTime ? record.seconds : Double(record.step), $0) }
                     })
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
    /// `status` is `completed` or `interrupted` from the result unless given (`diverged`); values
    /// that are not finite are written as null.
    public static func summaryJSON(_ result: TrainingResult, extra: [String: String] = [:], resume: ResumeRecord? = nil, status: String? = nil) throws -> Data {
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
            var test_accuracy: Double?
            var test_loss: Double?
            var final_train_loss: Double?
            var steps: Int
            var start_step: Int
            var seconds: Double
            var wall_seconds: Double
            var steps_per_second: Double
            var parameter_count: Int
            var state_bytes_per_parameter: Double
            var parameter_dtype: String
            var status: String
            var resumed_from: String?
            var changed_on_resume: [String: [String]]?
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
            seed: configuration.seed, threads: configuration.threads, test_accuracy: result.testAccuracy.isFinite ? result.testAccuracy : nil,
            test_loss: result.testLoss.isFinite ? result.testLoss : nil,
            final_train_loss: result.finalTrainLoss.isFinite ? result.finalTrainLoss : nil, steps: result.steps, start_step: result.startStep, seconds: result.seconds,
            wall_seconds: result.wallSeconds, steps_per_second: result.stepsPerSecond, parameter_count: result.parameterCount,
            state_bytes_per_parameter: result.stateBytesPerParameter, parameter_dtype: configuration.parameterDType.rawValue, status: status ?? (result.interrupted ? "interrupted" : "completed"),
            resumed_from: resume?.checkpoint, changed_on_resume: resume.flatMap { $0.changed.isEmpty ? nil : $0.changed.mapValues { [$0.from, $0.to] } },
            extra: extra.isEmpty ? nil : extra)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try encoder.encode(summary) + Data("\n".utf8)
    }
}

/// Appends training records to a JSON Lines file, one object per line with sorted keys. The file
/// stays locked (`flock`) while the writer lives.
public final class MetricsWriter {
    private let descriptor: Int32
    private let url: URL
    /// Also writes every record's scalars as TensorBoard events, when set.
    public var tensorboard: TensorBoardWriter?

    init(_ url: URL, mode: RunFolder.Mode, option: String) throws {
        self.url = url
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (mode == .new ? O_EXCL : 0) | (mode == .continue ? O_APPEND : 0)
        let descriptor = open(url.path, flags, 0o644)
        guard descriptor >= 0 else {
            if errno == EEXIST {
                throw TrainingError.file("\(option) \(url.deletingLastPathComponent().path) already holds a run (metrics.jsonl); pass --force to replace it")
            }
            throw TrainingError.file("cannot write \(url.path): \(describeErrno(errno))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            close(descriptor)
            throw TrainingError.file(code == EWOULDBLOCK
                ? "\(option) \(url.deletingLastPathComponent().path) is in use by another optim run"
                : "cannot lock \(url.path): \(describeErrno(code))")
        }
        if mode == .replace, ftruncate(descriptor, 0) != 0 {
            let code = errno
            close(descriptor)
            throw TrainingError.file("cannot empty \(url.path): \(describeErrno(code))")
        }
        if mode == .continue {
            // A line cut short by a crash would merge with the next record: end it first.
            var info = stat()
            if fstat(descriptor, &info) == 0, info.st_size > 0, let data = FileManager.default.contents(atPath: url.path), data.last != UInt8(ascii: "\n") {
                _ = Self.writeAll(descriptor, Data("\n".utf8))
            }
        }
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// The number of lines in the file.
    func lineCount() -> Int {
        guard let data = FileManager.default.contents(atPath: url.path) else { return 0 }
        return data.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
    }

    static func writeAll(_ descriptor: Int32, _ data: Data) -> Int32? {
        data.withUnsafeBytes { bytes -> Int32? in
            var written = 0
            while written < bytes.count {
                let result = Glibc.write(descriptor, bytes.baseAddress! + written, bytes.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                written += result
            }
            return nil
        }
    }

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

    /// Appends the record's line (``line(_:)``) to `metrics.jsonl`, and to the TensorBoard log if
    /// there is one.
    public func write(_ record: TrainingRecord) throws {
        if let code = Self.writeAll(descriptor, Data((try Self.line(record) + "\n").utf8)) {
            throw TrainingError.file("cannot write \(url.path): \(describeErrno(code))")
        }
        try tensorboard?.write(record)
    }
}

/// How a resumed run relates to the checkpoint it continues, for `summary.json`.
public struct ResumeRecord: Sendable {
    /// An option's value in the checkpoint's run and on the resuming command line.
    public struct Change: Sendable, Equatable {
        /// The value the checkpoint's run had.
        public var from: String
        /// The value given on resuming.
        public var to: String
        /// A change of an option from `from` to `to`.
        public init(from: String, to: String) {
            self.from = from
            self.to = to
        }
    }

    /// The checkpoint's path.
    public var checkpoint: String
    /// Options given a new value on the command line, by option name (`epochs`).
    public var changed: [String: Change]

    /// A resume from `checkpoint` with the options in `changed` given new values.
    public init(checkpoint: String, changed: [String: Change] = [:]) {
        self.checkpoint = checkpoint
        self.changed = changed
    }
}

extension Trainer {
    /// Runs the trainer and records the run: each logged step appended to `folder`'s
    /// `metrics.jsonl` as it comes, a checkpoint every `checkpointEvery` epochs (0: only at the
    /// end) and at the end, then `summary.json` and the charts. With a nil folder (a data-parallel
    /// rank other than 0) nothing is written, but each checkpoint save still takes part in its
    /// collective; `checkpoint` is where rank 0 writes it.
    ///
    /// When `shouldStop` says so (a signal) the run stops before its next step, saves the
    /// checkpoint and writes a summary marked `interrupted`. A metrics line that cannot be
    /// written stops the run the same way (the checkpoint is still saved) and is then thrown. A
    /// diverged run writes a summary marked `diverged` and throws
    /// ``TrainingError/diverged(step:message:)`` naming the last good checkpoint, which it leaves
    /// as it was.
    public func run(recordingTo folder: RunFolder?, checkpoint: URL, until: Int? = nil, checkpointEvery: Int = 1,
                    extra: [String: String] = [:], resume: ResumeRecord? = nil, shouldStop: () -> Bool = { false },
                    progress: (TrainingProgress) -> Void = { _ in }) throws -> TrainingResult {
        let writer = folder?.metricsWriter()
        var writeError: (any Error)?
        var records: [TrainingRecord] = []
        var lastSaved: Int?
        let startStep = step
        let result: TrainingResult
        do {
            result = try run(until: until, progress: progress, record: { record in
                records.append(record)
                do { try writer?.write(record) } catch { writeError = writeError ?? error }
            }, shouldStop: { writeError != nil || shouldStop() }, epochEnded: { step in
                guard checkpointEvery > 0, (step / stepsPerEpoch) % checkpointEvery == 0, step < min(until ?? totalSteps, totalSteps) else { return }
                try saveCheckpoint(to: checkpoint)
                lastSaved = step
            })
        } catch let TrainingError.diverged(step, message) {
            let kept = lastSaved.map { "the last checkpoint, of step \($0), is \(checkpoint.path)" }
                ?? (startStep > 0 ? "the checkpoint it resumed from (step \(startStep)) is unchanged" : "no checkpoint was written")
            // The summary says so; the checkpoint stays the last good one.
            let parameterCount = model.parameters.reduce(0) { $0 + $1.count }
            let partial = TrainingResult(
                configuration: configuration, records: records, testAccuracy: .nan, testLoss: .nan,
                finalTrainLoss: records.last?.loss ?? .nan, steps: step - startStep, startStep: startStep,
                seconds: records.last?.seconds ?? 0, wallSeconds: 0, parameterCount: parameterCount, stateBytesPerParameter: 0)
            var notes = extra
            notes["diverged_at_step"] = String(step)
            notes["checkpoint_step"] = lastSaved.map(String.init) ?? (startStep > 0 ? "\(startStep) (the resumed checkpoint)" : "none")
            try? folder?.finish(partial, extra: notes, resume: resume, status: "diverged")
            throw TrainingError.diverged(step: step, message: "\(message); stopped, \(kept)")
        }
        if let writeError {
            try? saveCheckpoint(to: checkpoint)
            throw writeError
        }
        try saveCheckpoint(to: checkpoint)
        var extra = extra
        if !timeline.isEmpty {
            let summary = TimelineSummary(timeline)
            extra.merge(summary.summaryFields) { $1 }
            try folder?.appendTimeline(timeline)
        }
        var finished = result
        if finished.records.isEmpty, let last = folder?.earlierRecords.last(where: { $0.step <= startStep }) {
            // Finishing a run that had already trained to its end: its last train loss is on record.
            finished.finalTrainLoss = last.loss
        }
        // `stopped`: ended at `until` (--stop-after-epoch), before the configured end.
        try folder?.finish(finished, extra: extra, resume: resume, status: !finished.interrupted && step < totalSteps ? "stopped" : nil)
        return finished
    }
}

/// A run's timeline in a few numbers: medians per step of the communication's span, what was
/// waited for, and the share hidden behind backward.
public struct TimelineSummary: Sendable {
    /// Median seconds per step: forward and backward, the communication's span, the exposed
    /// part, the optimizer.
    public var compute: Double, communication: Double, exposed: Double, optimizer: Double
    /// The share of the communication hidden behind computation over the whole run,
    /// `1 − Σ exposed / Σ communication`.
    public var hiddenFraction: Double
    /// Steps summarised.
    public var steps: Int

    /// The summary of `timeline` (the steps after the first, which includes start-up costs,
    /// when there are more than one).
    public init(_ timeline: [StepTiming]) {
        let steps = timeline.count > 1 ? Array(timeline.dropFirst()) : timeline
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        compute = median(steps.map(\.computeSeconds))
        communication = median(steps.map(\.communicationSeconds))
        exposed = median(steps.map(\.exposedSeconds))
        optimizer = median(steps.map(\.optimizerSeconds))
        let total = steps.reduce(0) { $0 + $1.communicationSeconds }, waited = steps.reduce(0) { $0 + $1.exposedSeconds }
        hiddenFraction = total > 0 ? max(0, 1 - waited / total) : 1
        self.steps = steps.count
    }

    /// The fields `summary.json` gets.
    public var summaryFields: [String: String] {
        func milliseconds(_ seconds: Double) -> String { String(format: "%.3f", seconds * 1000) }
        return ["step_compute_ms": milliseconds(compute), "step_communication_ms": milliseconds(communication),
                "step_communication_exposed_ms": milliseconds(exposed), "communication_hidden": String(format: "%.3f", hiddenFraction)]
    }

    /// One line for a person.
    public var description: String {
        String(format: "per step (median): compute %.1f ms, gradient communication %.1f ms of which %.1f ms waited for after backward; %.0f%% hidden behind backward",
               compute * 1000, communication * 1000, exposed * 1000, hiddenFraction * 100)
    }
}
