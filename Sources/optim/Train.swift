import ArgumentParser
import ExampleModel
import Foundation
import Optim
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
        checkpoint.safetensors. --resume continues a run from its checkpoint.
        """)

    @Option(help: "What to train: digits (an MLP on the digits, or on --data) or austen (a character GPT on Jane Austen's novels, nanoGPT's CPU recipe).")
    var task = "digits"

    @OptionGroup var optimizerOptions: OptimizerOptions
    @OptionGroup var options: TrainingOptions
    @OptionGroup(title: "Task austen") var textOptions: TextTaskOptions

    @Option(help: "The run folder (default: runs/<timestamp>).")
    var out: String?

    @Option(help: "Continue from a checkpoint written by optim train (same model and optimizer options).")
    var resume: String?

    @Option(name: .customLong("stop-after-epoch"), help: "Stop (and write the run folder) after this epoch; the schedule still spans --epochs, so --resume continues the same run.")
    var stopAfterEpoch: Int?

    @Flag(help: "Plain progress lines even on a terminal.")
    var plain = false

    @Flag(help: "Data-parallel over MPI: run under mpirun (needs a build with --traits MPI); each rank takes its share of every batch, rank 0 prints and writes.")
    var distributed = false

    @Flag(name: .customLong("shard-state"), help: "With --distributed: each rank keeps only its slice of the optimizer state (ZeRO stage 1).")
    var shardState = false

    func run() throws {
        if task == TrainingConfiguration.Task.austen.rawValue {
            do {
                try trainText()
            } catch let error as ExitCode {
                throw error
            } catch {
                throw fail("train", error)
            }
            return
        }
        guard task == TrainingConfiguration.Task.digits.rawValue else {
            throw fail("train", TrainingError.invalidOption("unknown --task '\(task)'; expected digits or austen"))
        }
        guard distributed else {
            do {
                try train(communicator: nil)
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
        // Any rank's error is printed with its rank and ends the whole job (MPI_Abort).
        try communicator.abortingOnError { try train(communicator: communicator) }
        try MPIRuntime.finalize()
    }

    func train(communicator: (any Communicator)?) throws {
        let isRoot = communicator?.isRoot ?? true
        func say(_ text: String) { if isRoot { sayOnStandardOutput(text) } }
        var configuration = try options.configuration()
        if let communicator, options.threads == nil {
            // Ranks sharing a machine share its cores.
            let local = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? communicator.size
            configuration.threads = max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1))
        }
        configuration.optimizer = optimizerOptions.optimizer
        configuration.baseOptimizer = optimizerOptions.base
        configuration.hyperparameters = try optimizerOptions.hyperparameters()
        _ = try configuration.optimizerConfiguration()
        let data = try options.datasets()
        let trainer = try Trainer(configuration: configuration, train: data.train, test: data.test,
                                  communicator: communicator, shardState: shardState)
        if let resume { try trainer.resume(from: URL(fileURLWithPath: resume)) }
        // Rank 0 picks the folder and alone writes to it.
        var outPath = out ?? RunFolder.defaultURL().path
        if let communicator { outPath = try communicator.broadcast(outPath, from: 0) }
        if let stopAfterEpoch, stopAfterEpoch < 1 || stopAfterEpoch > configuration.epochs {
            throw TrainingError.invalidOption("--stop-after-epoch must be between 1 and --epochs (\(configuration.epochs)), got \(stopAfterEpoch)")
        }
        let folder = isRoot ? try RunFolder(URL(fileURLWithPath: outPath)) : nil
        let progress = ProgressReporter(style: !isRoot ? .silent : plain ? .lines : nil)
        let parameters = trainer.model.parameters.reduce(0) { $0 + $1.count }
        say("training an \(trainer.model.architecture) (\(parameters) parameters) on \(data.name): \(data.train.count) train / \(data.test.count) test")
        say("optimizer \(configuration.optimizer) \(CompareReport.describe(try configuration.optimizerConfiguration())), schedule \(configuration.schedule.rawValue), \(configuration.epochs) epochs of \(trainer.stepsPerEpoch) steps, \(configuration.threads) thread(s)")
        var extra = ["data": data.name]
        if let communicator {
            say("data parallel over \(communicator.size) ranks (\(configuration.threads) thread(s) each)\(shardState ? ", optimizer state sharded (ZeRO-1)" : ""); each global batch of \(configuration.batchSize) split between them")
            extra["ranks"] = String(communicator.size)
            extra["sharded_state"] = String(shardState)
        }
        if trainer.step > 0 { say("resumed at step \(trainer.step) from \(resume ?? "")") }
        let result = try trainer.run(recordingTo: folder, checkpoint: URL(fileURLWithPath: outPath).appendingPathComponent("checkpoint.safetensors"),
                                     until: stopAfterEpoch.map { $0 * trainer.stepsPerEpoch }, extra: extra) {
            progress.report($0, milestone: $0.step % trainer.stepsPerEpoch == 0)
        }
        progress.finish()
        guard let folder else { return }
        say(String(format: "test accuracy %.2f%%  (test loss %.4f, final train loss %.4f, %d steps in %.2f s, %.0f steps/s)",
                     result.testAccuracy * 100, result.testLoss, result.finalTrainLoss, result.steps, result.seconds, result.stepsPerSecond))
        say("wrote \(folder.url.path)/: summary.json metrics.jsonl loss.svg accuracy.svg checkpoint.safetensors")
    }
}
