import ArgumentParser
import ExampleModel
import Foundation
import Optim
import Training

/// `optim compare`: the same model from the same initial weights, trained with several
/// optimizers (each at its suggested learning rate), and an HTML report of the runs.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the same MLP with several optimizers and write an HTML report comparing them.",
        discussion: """
        Every run starts from the same initial weights (--seed) and sees the same batches. Writes \
        --out (default runs/compare-<timestamp>): report.html and one run folder per optimizer.
        """)

    static let defaultOptimizers = ["sgd", "adamw", "decoupled_adamw", "lion", "decoupled_lionw", "adopt", "lookahead"]

    @Option(help: "Optimizers to compare, comma-separated registry names (lookahead wraps adamw).")
    var optimizers = defaultOptimizers.joined(separator: ",")

    @OptionGroup var options: TrainingOptions

    @Option(help: "The output folder (default: runs/compare-<timestamp>).")
    var out: String?

    func run() throws {
        do {
            try compare()
        } catch let error as ExitCode {
            throw error
        } catch {
            throw fail("compare", error)
        }
    }

    func compare() throws {
        let base = try options.configuration()
        let names = optimizers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, !names.contains("") else { throw TrainingError.invalidOption("--optimizers must list registry names, got '\(optimizers)'") }
        // Check every name before training anything.
        var configurations: [TrainingConfiguration] = []
        for name in names {
            var configuration = base
            configuration.optimizer = name
            _ = try configuration.optimizerConfiguration()
            configurations.append(configuration)
        }
        let data = try options.datasets()
        let folder = out.map { URL(fileURLWithPath: $0) }
            ?? RunFolder.defaultURL().deletingLastPathComponent().appendingPathComponent("compare-" + RunFolder.defaultURL().lastPathComponent)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var runs: [(name: String, result: TrainingResult)] = []
        for configuration in configurations {
            let label = configuration.optimizer == "lookahead" ? "lookahead(\(configuration.baseOptimizer))" : configuration.optimizer
            let trainer = try Trainer(configuration: configuration, train: data.train, test: data.test)
            let run = try RunFolder(folder.appendingPathComponent(configuration.optimizer))
            let result = try trainer.run(recordingTo: run, checkpoint: run.checkpoint, extra: ["data": data.name])
            say(label.padding(toLength: 18, withPad: " ", startingAt: 0) + String(format: "test accuracy %6.2f%%  %7.3f ms/step  %2.0f B state/param",
                         result.testAccuracy * 100, result.seconds / Double(max(result.steps, 1)) * 1000, result.stateBytesPerParameter))
            runs.append((label, result))
        }
        let hidden = base.hidden.map(String.init).joined(separator: "-")
        let description = "MLP \(data.train.featureCount)-\(hidden)-\(runs.first.map { _ in String(max(data.train.classCount, data.test.classCount)) } ?? "?") (\(base.activation.rawValue)) on \(data.name), "
            + "\(data.train.count) train / \(data.test.count) test examples; \(base.epochs) epochs, batch \(base.batchSize), schedule \(base.schedule.rawValue)"
            + (base.warmupSteps > 0 ? " with \(base.warmupSteps) warm-up steps" : "") + (base.clipNorm.map { ", clip \($0)" } ?? "")
            + "; seed \(base.seed), \(base.threads) thread(s). All runs start from the same weights."
        let report = folder.appendingPathComponent("report.html")
        try Data(CompareReport.html(title: "swift-optim: optimizers compared", description: description, runs: runs).utf8).write(to: report, options: .atomic)
        say("wrote \(report.path)")
    }
}
