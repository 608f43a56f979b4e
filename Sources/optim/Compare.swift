import ArgumentParser
import ExampleModel
import Foundation
import Optim
import Safetensors
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

    @Option(help: "The output folder (default: runs/compare-<timestamp>). A folder that holds a compare report or runs is refused without --force.")
    var out: String?

    @Flag(help: "Replace the report and runs in --out if it holds them.")
    var force = false

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
        for (option, value) in [("--out", out), ("--data", options.data), ("--labels", options.labels)] where value?.isEmpty == true {
            throw TrainingError.invalidOption("\(option) is empty; give a path")
        }
        var given = options.given()
        given["optimizer"] = nil
        let settings = try RunSettings.resolve(given: given, hyperparameters: [:], saved: nil).settings
        let base = try options.configuration(settings)
        let names = optimizers.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, !names.contains("") else { throw TrainingError.invalidOption("--optimizers must list registry names, got '\(optimizers)'") }
        if let twice = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw TrainingError.invalidOption("--optimizers lists \(twice) twice")
        }
        // Check every name, the data and the model before training anything or making a folder.
        var configurations: [TrainingConfiguration] = []
        for name in names {
            var configuration = base
            configuration.optimizer = name
            _ = try configuration.optimizerConfiguration()
            configurations.append(configuration)
        }
        let data = try options.datasets(settings)
        var firstTrainer: Trainer? = try Trainer(configuration: configurations[0], train: data.train, test: data.test)

        let folder: URL
        if let out {
            folder = URL(fileURLWithPath: out)
            try RunFolder.makeFolder(folder, option: "--out")
            let taken = (["report.html"] + names).filter { FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path) }
            if !force, !taken.isEmpty {
                throw TrainingError.file("--out \(folder.path) already holds \(taken.joined(separator: ", ")); pass --force to replace them")
            }
        } else {
            folder = try RunFolder.uniqueFolder(prefix: "compare-")
        }
        Interrupts.install()
        var runs: [(name: String, result: TrainingResult)] = []
        var interrupted = false
        for configuration in configurations {
            let label = configuration.optimizer == "lookahead" ? "lookahead(\(configuration.baseOptimizer))" : configuration.optimizer
            let trainer = try firstTrainer ?? Trainer(configuration: configuration, train: data.train, test: data.test)
            firstTrainer = nil
            var saved = settings
            saved["optimizer"] = configuration.optimizer
            saved["threads"] = String(configuration.threads)
            trainer.checkpointMetadata[RunSettings.metadataKey] = try RunSettings.json(saved)
            let run = try RunFolder(folder.appendingPathComponent(configuration.optimizer), mode: force ? .replace : .new)
            let result = try trainer.run(recordingTo: run, checkpoint: run.checkpoint, extra: ["data": data.name],
                                         shouldStop: { Interrupts.signal != 0 })
            let milliseconds = result.seconds / Double(max(result.steps, 1)) * 1000
            say(label.padding(toLength: max(20, label.count + 1), withPad: " ", startingAt: 0) + String(format: "test accuracy %6.2f%%  %7.3f ms/step  %2.0f B state/param",
                         result.testAccuracy * 100, milliseconds, result.stateBytesPerParameter) + (result.interrupted ? "  (interrupted)" : ""))
            runs.append((label, result))
            if result.interrupted {
                interrupted = true
                break
            }
        }
        let hidden = base.hidden.map(String.init).joined(separator: "-")
        let classes = String(max(data.train.classCount, data.test.classCount))
        var description = "MLP \(data.train.featureCount)-\(hidden)-\(classes) (\(base.activation.rawValue)) on \(data.name), "
        description += "\(data.train.count) train / \(data.test.count) test examples; \(base.epochs) epochs, batch \(base.batchSize), schedule \(base.schedule.rawValue)"
        description += (base.warmupSteps > 0 ? " with \(base.warmupSteps) warm-up steps" : "") + (base.clipNorm.map { ", clip \($0)" } ?? "")
        description += "; seed \(base.seed), \(base.threads) thread(s). All runs start from the same weights."
        if interrupted { description += " Interrupted: the last run stopped early and later ones did not run." }
        let report = folder.appendingPathComponent("report.html")
        do {
            try SafetensorsFile.writeAtomically(Data(CompareReport.html(title: "swift-optim: optimizers compared", description: description, runs: runs).utf8), to: report)
        } catch {
            throw TrainingError.file("cannot write \(report.path): \(error)")
        }
        say("wrote \(report.path)")
        if interrupted {
            let number = Interrupts.signal
            writeIgnoringErrors(STDERR_FILENO, "optim compare: interrupted by \(Interrupts.name(number)); the interrupted run saved its checkpoint and a summary marked interrupted, and \(report.path) shows the runs so far\n")
            throw ExitCode(128 + number)
        }
    }
}
