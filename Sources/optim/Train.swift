import ArgumentParser
import ExampleModel
import Foundation
import Optim
import OptimDistributed
import Safetensors
import OptimMPI
import Training

/// `optim train`: trains the example MLP on the embedded digits (or the user's data) and writes a
/// run folder with the summary, the metrics, two charts and a checkpoint.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train an MLP on the handwritten digits (or your own CSV/IDX data) with any optimizer.",
        discussion: """
        With no options: DecoupledLionW (lr 5e-4) on the embedded digits, an MLP 64-256-128-10, batch 32, cosine schedule, 60 epochs. \
        Writes --out (default runs/<timestamp>): summary.json, metrics.jsonl, loss.svg, accuracy.svg, \
        checkpoint.safetensors (saved every epoch). A folder holding a run is refused without --force. \
        --resume continues a run from its checkpoint, with the run's options, in its own folder. \
        SIGINT/SIGTERM save the checkpoint and a summary marked interrupted, then exit 130/143.
        """)

    @Option(help: "What to train: digits (an MLP on the digits, or on --data) or austen (a character GPT on Jane Austen's novels, nanoGPT's CPU recipe).")
    var task = "digits"

    @OptionGroup var optimizerOptions: OptimizerOptions
    @OptionGroup var options: TrainingOptions
    @OptionGroup(title: "Task austen") var textOptions: TextTaskOptions

    @Option(help: "The run folder (default: runs/<timestamp>, or with --resume the checkpoint's own run folder). A folder that holds a run is refused without --force.")
    var out: String?

    @Flag(help: "Replace the run in --out if it holds one.")
    var force = false

    @Option(help: "Continue from a checkpoint written by optim train: its run options are restored (see README: Resume).")
    var resume: String?

    @Option(name: .customLong("stop-after-epoch"), help: "Stop (and write the run folder) after this epoch; the schedule still spans --epochs, so --resume continues the same run.")
    var stopAfterEpoch: Int?

    @Option(name: .customLong("checkpoint-every"), help: "Save the checkpoint every this many epochs (0: only at the end); it is also saved at the end and on SIGINT/SIGTERM.")
    var checkpointEvery = 1

    @Option(help: "Also write TensorBoard event files into this folder: every scalar of metrics.jsonl, at its step (view with `tensorboard --logdir DIR`).")
    var tensorboard: String?

    @Flag(help: "Plain progress lines even on a terminal.")
    var plain = false

    @Flag(help: "Data-parallel over MPI: run under mpirun (needs a build with --traits MPI); each rank takes its share of every batch, rank 0 prints and writes.")
    var distributed = false

    @Option(name: .customLong("bucket-mb"), help: "With --distributed: the most megabytes (MiB) of gradients one allreduce carries (PyTorch DDP's bucket_cap_mb; the first bucket is at most 1 MiB).")
    var bucketMegabytes = 25.0

    /// --bucket-mb in bytes, checked.
    func bucketBytes() throws -> Int {
        guard bucketMegabytes.isFinite, bucketMegabytes * 1_048_576 >= 4, bucketMegabytes * 1_048_576 <= Double(Int32.max) * 4 else {
            throw TrainingError.invalidOption("--bucket-mb must be between 4 bytes (3.9e-6) and 8192, got \(bucketMegabytes)")
        }
        return Int(bucketMegabytes * 1_048_576)
    }

    @Flag(name: .customLong("no-overlap"), help: "With --distributed: reduce the gradients after the whole backward pass instead of bucket by bucket while it runs (the same gradients; for comparing timelines).")
    var noOverlap = false

    @Flag(name: .customLong("shard-state"), help: "With --distributed: each rank keeps only its slice of the optimizer state (ZeRO stage 1).")
    var shardState = false

    @Flag(name: .customLong("shard-gradients"), help: "With --shard-state: each rank keeps only its slice of the gradients too, reduce-scattered bucket by bucket (ZeRO stage 2).")
    var shardGradients = false

    @Flag(name: .customLong("sharded-checkpoint"), help: "With --shard-state: each rank writes its own part of the optimizer state into the run folder's checkpoint/ (an index and a file per rank) instead of rank 0 gathering it into checkpoint.safetensors. --resume takes either form, on any number of ranks.")
    var shardedCheckpoint = false

    func run() throws {
        if task == TrainingConfiguration.Task.austen.rawValue {
            guard distributed else {
                do {
                    try trainText(communicator: nil)
                } catch let error as ExitCode {
                    throw error
                } catch {
                    throw fail("train", error)
                }
                return
            }
            let communicator: any Communicator
            do {
                communicator = try MPIRuntime.world()
            } catch {
                throw fail("train", error)
            }
            try communicator.abortingOnError { try trainText(communicator: communicator) }
            try MPIRuntime.finalize()
            return
        }
        guard task == TrainingConfiguration.Task.digits.rawValue else {
            throw fail("train", TrainingError.invalidOption("unknown --task '\(task)'; expected digits or austen"))
        }
        guard distributed else {
            let status: Int32?
            do {
                status = try train(communicator: nil)
            } catch {
                throw fail("train", error)
            }
            if let status { throw ExitCode(status) }
            return
        }
        let communicator: any Communicator
        do {
            communicator = try MPIRuntime.world()
        } catch {
            throw fail("train", error)
        }
        // Any rank's error is printed with its rank and ends the whole job (MPI_Abort).
        let status = try communicator.abortingOnError { try train(communicator: communicator) }
        try MPIRuntime.finalize()
        if let status { throw ExitCode(status) }
    }

    /// Trains; returns nil, or the exit status of a run stopped by a signal (128 + its number).
    func train(communicator: (any Communicator)?) throws -> Int32? {
        let isRoot = communicator?.isRoot ?? true
        func say(_ text: String) { if isRoot { sayOnStandardOutput(text) } }
        for (option, value) in [("--out", out), ("--resume", resume), ("--data", options.data), ("--labels", options.labels)] where value?.isEmpty == true {
            throw TrainingError.invalidOption("\(option) is empty; give a path")
        }
        guard checkpointEvery >= 0 else { throw TrainingError.invalidOption("--checkpoint-every must be at least 0, got \(checkpointEvery)") }
        if stopAfterEpoch != nil, stopAfterEpoch! < 1 { throw TrainingError.invalidOption("--stop-after-epoch must be at least 1, got \(stopAfterEpoch!)") }

        if shardedCheckpoint, !shardState {
            throw TrainingError.invalidOption("--sharded-checkpoint needs --distributed --shard-state (each rank writes the part of the state it keeps)")
        }

        // The run's options: the checkpoint's when resuming, under those given here.
        var saved: [String: String]?
        if let resume {
            let sharded = ShardedCheckpoint.exists(at: URL(fileURLWithPath: resume))
            if !sharded { try checkInputFile(resume, option: "--resume") }
            let metadata: [String: String]
            do {
                metadata = sharded ? try ShardedCheckpoint.metadata(in: URL(fileURLWithPath: resume))
                    : try SafetensorsFile(contentsOf: URL(fileURLWithPath: resume)).metadata
            } catch {
                throw TrainingError.resume("--resume \(resume): \(error)")
            }
            saved = try RunSettings.saved(in: metadata)
        }
        var given = options.given()
        given["optimizer"] = optimizerOptions.optimizer
        given["base"] = optimizerOptions.base
        let resolved = try RunSettings.resolve(given: given, hyperparameters: try optimizerOptions.hyperparameters(), saved: saved, resuming: resume != nil)
        var settings = resolved.settings

        var configuration = try options.configuration(settings)
        if let communicator, settings["threads"] == nil {
            // Ranks sharing a machine share its cores.
            let local = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? communicator.size
            configuration.threads = max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1))
        }
        settings["threads"] = String(configuration.threads)
        configuration.optimizer = settings["optimizer"]!
        configuration.baseOptimizer = settings["base"]!
        configuration.hyperparameters = resolved.hyperparameters
        let optimizerConfiguration = try configuration.optimizerConfiguration()
        if let dtype = resolved.hyperparameters["state_dtype"], dtype != .string(StateDType.float32.rawValue) {
            // One line, before any data is read: the optimizer that keeps the state must offer it.
            let stateful = optimizerConfiguration.base ?? optimizerConfiguration
            let offered = try OptimizerRegistry.info(named: stateful.name).stateDTypes
            guard offered.contains(where: { HyperparameterValue.string($0.rawValue) == dtype }) else {
                throw TrainingError.invalidOption("--state-dtype \(dtype): optimizer '\(stateful.name)' keeps " + offered.map(\.rawValue).joined(separator: " or ")
                    + " state; \(dtype) state is offered by " + OptimizerRegistry.all.filter { $0.stateDTypes.contains(where: { HyperparameterValue.string($0.rawValue) == dtype }) }.map(\.name).joined(separator: ", "))
            }
        }
        if let stopAfterEpoch, stopAfterEpoch > configuration.epochs {
            throw TrainingError.invalidOption("--stop-after-epoch must be between 1 and --epochs (\(configuration.epochs)), got \(stopAfterEpoch)")
        }
        let data = try options.datasets(settings)
        let trainer = try Trainer(configuration: configuration, train: data.train, test: data.test,
                                  communicator: communicator, shardState: shardState, bucketBytes: try bucketBytes(), shardGradients: shardGradients)
        trainer.shardedCheckpoints = shardedCheckpoint
        trainer.overlapsCommunication = !noOverlap
        trainer.checkpointMetadata[RunSettings.metadataKey] = try RunSettings.json(RunSettings.saving(settings, resolved.hyperparameters))
        if let resume {
            do {
                try trainer.resume(from: URL(fileURLWithPath: resume))
            } catch let error as TrainingError {
                throw error
            } catch {
                throw TrainingError.resume("--resume \(resume): \(error)")
            }
        }
        let until = stopAfterEpoch.map { $0 * trainer.stepsPerEpoch } ?? trainer.totalSteps
        // A checkpoint at the run's end whose folder has no finished summary: the run was
        // stopped between saving its last checkpoint and writing summary.json. Resuming finishes
        // it (evaluation, summary, charts) instead of refusing.
        var unfinished = false
        if let resume, trainer.step >= until, stopAfterEpoch == nil, out == nil {
            unfinished = isRoot && Self.summaryUnfinished(besideCheckpoint: resume)
            if let communicator { unfinished = try communicator.broadcast(unfinished ? "1" : "0", from: 0) == "1" }
        }
        guard trainer.step < until || unfinished else {
            throw TrainingError.resume("--resume \(resume ?? ""): the checkpoint is at step \(trainer.step), which already ends \(stopAfterEpoch.map { "epoch \($0)" } ?? "its \(configuration.epochs) epoch(s)"); nothing is left to train (pass a larger --epochs to train further)")
        }

        // Rank 0 claims the folder and alone writes to it.
        if tensorboard?.isEmpty == true { throw TrainingError.invalidOption("--tensorboard needs a folder, got an empty path") }
        let folder = isRoot ? try claimFolder() : nil
        if let folder, let tensorboard {
            let writer = try TensorBoardWriter(directory: URL(fileURLWithPath: tensorboard))
            folder.metricsWriter().tensorboard = writer
            say("TensorBoard events: \(writer.url.path)")
        }
        var outPath = folder?.url.path ?? ""
        if let communicator { outPath = try communicator.broadcast(outPath, from: 0) }
        let resumeRecord = resume.map { ResumeRecord(checkpoint: $0, changed: resolved.changes) }
        Interrupts.install()

        let progress = ProgressReporter(style: !isRoot ? .silent : plain ? .lines : nil)
        let parameters = trainer.model.parameters.reduce(0) { $0 + $1.count }
        say("training an \(trainer.model.architecture) (\(parameters) parameters) on \(data.name): \(data.train.count) train / \(data.test.count) test")
        say("optimizer \(configuration.optimizer) \(CompareReport.describe(try configuration.optimizerConfiguration())), schedule \(configuration.schedule.rawValue), \(configuration.epochs) epochs of \(trainer.stepsPerEpoch) steps, \(configuration.threads) thread(s)")
        say("kernels: optimizer \(trainer.optimizer.instructionSet.rawValue), matrix multiply \(KernelDispatch.current.rawValue) (this CPU runs \(KernelDispatch.available.map(\.rawValue).joined(separator: ", ")); OPTIM_ISA forces one)")
        var extra = ["data": data.name]
        if let communicator {
            say("data parallel over \(communicator.size) ranks (\(configuration.threads) thread(s) each)\(shardGradients ? ", optimizer state and gradients sharded (ZeRO-2)" : shardState ? ", optimizer state sharded (ZeRO-1)" : ""); each global batch of \(configuration.batchSize) split between them")
            extra["ranks"] = String(communicator.size)
            extra["sharded_state"] = String(shardState)
            extra["sharded_gradients"] = String(shardGradients)
        }
        if trainer.step > 0 {
            let changed = resolved.changes.sorted { $0.key < $1.key }.map { "--\($0.key) \($0.value.from) → \($0.value.to)" }
            say("resumed at step \(trainer.step) from \(resume ?? "")" + (changed.isEmpty ? "" : "; changed: " + changed.joined(separator: ", ")))
            if unfinished { say("the checkpoint already ends the run, whose summary was not written: finishing it (evaluation, summary, charts)") }
        }
        if let folder, folder.earlierRecordCount > 0 { say("continuing \(folder.url.path)/ (metrics.jsonl holds \(folder.earlierRecordCount) earlier record(s))") }
        let checkpoint = URL(fileURLWithPath: outPath).appendingPathComponent(shardedCheckpoint ? RunFolder.shardedCheckpointName : "checkpoint.safetensors")
        let result: TrainingResult
        do {
            result = try trainer.run(recordingTo: folder, checkpoint: checkpoint, until: until, checkpointEvery: checkpointEvery,
                                     extra: extra, resume: resumeRecord, shouldStop: { Interrupts.signal != 0 }) {
                progress.report($0, milestone: $0.step % trainer.stepsPerEpoch == 0)
            }
        } catch {
            progress.finish()
            throw error
        }
        progress.finish()
        if result.interrupted {
            let number = Interrupts.signal
            if isRoot {
                writeIgnoringErrors(STDERR_FILENO, "optim train: interrupted by \(Interrupts.name(number)) at step \(trainer.step) of \(trainer.totalSteps); saved \(checkpoint.path) and a summary marked interrupted (continue with --resume \(checkpoint.path))\n")
            }
            return 128 + number
        }
        guard let folder else { return nil }
        if communicator != nil { say("gradient communication " + TimelineSummary(trainer.timeline).description + " (timeline.jsonl, timeline.svg)") }
        say(String(format: "test accuracy %.2f%%  (test loss %.4f, final train loss %.4f, %d steps in %.2f s, %.0f steps/s)",
                     result.testAccuracy * 100, result.testLoss, result.finalTrainLoss, result.steps, result.seconds, result.stepsPerSecond))
        say("wrote \(folder.url.path)/: summary.json metrics.jsonl loss.svg accuracy.svg \(checkpoint.lastPathComponent)\(shardedCheckpoint ? "/" : "")")
        return nil
    }

    /// True when the run folder beside `checkpoint` keeps metrics but no summary that says the
    /// run completed.
    static func summaryUnfinished(besideCheckpoint checkpoint: String) -> Bool {
        let folder = URL(fileURLWithPath: checkpoint).standardizedFileURL.resolvingSymlinksInPath().deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("metrics.jsonl").path) else { return false }
        guard let data = try? Data(contentsOf: folder.appendingPathComponent("summary.json")),
              let summary = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return true }
        return summary["status"] as? String != "completed"
    }

    /// The run folder: --out (refused if it holds a run, unless --force or it is the resumed
    /// checkpoint's own folder, which is continued), the resumed checkpoint's run folder, or a
    /// new runs/<timestamp>.
    func claimFolder() throws -> RunFolder {
        let checkpointFolder = resume.map { URL(fileURLWithPath: $0).standardizedFileURL.resolvingSymlinksInPath().deletingLastPathComponent() }
        if let out {
            let url = URL(fileURLWithPath: out)
            let same = checkpointFolder.map { $0.path == url.standardizedFileURL.resolvingSymlinksInPath().path } ?? false
            return try RunFolder(url, mode: same ? .continue : force ? .replace : .new)
        }
        if let checkpointFolder, FileManager.default.fileExists(atPath: checkpointFolder.appendingPathComponent("metrics.jsonl").path) {
            return try RunFolder(checkpointFolder, mode: .continue, option: "the resumed run's folder")
        }
        return try RunFolder.unique()
    }
}
