import ArgumentParser
import ExampleModel
import Foundation
import Optim
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

    @OptionGroup var optimizerOptions: OptimizerOptions
    @OptionGroup var options: TrainingOptions

    @Option(help: "The run folder (default: runs/<timestamp>).")
    var out: String?

    @Option(help: "Continue from a checkpoint written by optim train (same model and optimizer options).")
    var resume: String?

    @Flag(help: "Plain progress lines even on a terminal.")
    var plain = false

    func run() throws {
        do {
            try train()
        } catch let error as ExitCode {
            throw error
        } catch {
            throw fail("train", error)
        }
    }

    func train() throws {
        var configuration = try options.configuration()
        configuration.optimizer = optimizerOptions.optimizer
        configuration.baseOptimizer = optimizerOptions.base
        configuration.hyperparameters = try optimizerOptions.hyperparameters()
        _ = try configuration.optimizerConfiguration()
        let data = try options.datasets()
        let trainer = try Trainer(configuration: configuration, train: data.train, test: data.test)
        if let resume { try trainer.resume(from: URL(fileURLWithPath: resume)) }
        let folder = try RunFolder(out.map { URL(fileURLWithPath: $0) } ?? RunFolder.defaultURL())
        let writer = try folder.metricsWriter()
        let progress = ProgressReporter(style: plain ? .lines : nil)
        let parameters = trainer.model.parameters.reduce(0) { $0 + $1.count }
        say("training an MLP \(data.train.featureCount)-\(configuration.hidden.map(String.init).joined(separator: "-"))-\(trainer.model.outputs) (\(parameters) parameters) on \(data.name): \(data.train.count) train / \(data.test.count) test")
        say("optimizer \(configuration.optimizer) \(CompareReport.describe(try configuration.optimizerConfiguration())), schedule \(configuration.schedule.rawValue), \(configuration.epochs) epochs of \(trainer.stepsPerEpoch) steps, \(configuration.threads) thread(s)")
        if trainer.step > 0 { say("resumed at step \(trainer.step) from \(resume ?? "")") }
        var writeError: (any Error)?
        let result = try trainer.run(progress: { progress.report($0, milestone: $0.step % trainer.stepsPerEpoch == 0) }, record: { record in
            do { try writer.write(record) } catch { writeError = writeError ?? error }
        })
        progress.finish()
        if let writeError { throw writeError }
        try trainer.saveCheckpoint(to: folder.checkpoint)
        try folder.finish(result, extra: ["data": data.name])
        say(String(format: "test accuracy %.2f%%  (test loss %.4f, final train loss %.4f, %d steps in %.2f s, %.0f steps/s)",
                     result.testAccuracy * 100, result.testLoss, result.finalTrainLoss, result.steps, result.seconds, result.stepsPerSecond))
        say("wrote \(folder.url.path)/: summary.json metrics.jsonl loss.svg accuracy.svg checkpoint.safetensors")
    }
}
