import ArgumentParser
import ExampleModel
import Foundation
import Optim
import Safetensors
import Training

/// `optim compare`: the same model from the same initial weights, trained with several
/// optimizers (each at its suggested learning rate, or the one a sweep chose), once or over
/// several seeds, and an HTML report of the runs.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the same model with several optimizers and write an HTML report comparing them.",
        discussion: """
        Every run of a seed starts from the same initial weights and sees the same batches. Writes \
        --out (default runs/compare-<timestamp>): report.html and one run folder per optimizer (per \
        optimizer and seed with --seeds above 1, and then shootout.json: means, spreads, and which \
        differences exceed the seed-to-seed spread). --task austen compares on the GPT (validation \
        loss); --lrs-from takes each optimizer's learning rate from an `optim sweep`.
        """)

    static let defaultOptimizers = ["sgd", "adamw", "decoupled_adamw", "lion", "decoupled_lionw", "adopt", "lookahead",
                                    "schedule_free_adamw", "schedule_free_sgd", "ademamix", "adan", "lamb", "lars", "mars", "soap", "prodigy"]
    static let defaultTextOptimizers = ["sgd", "adamw", "lion", "decoupled_lionw", "adopt", "schedule_free_adamw", "ademamix", "adan", "lamb",
                                        "mars", "prodigy"]

    @Option(help: "What to train: digits or austen.")
    var task = "digits"

    @Option(help: "Optimizers to compare, comma-separated registry names (lookahead wraps adamw). Default for digits: \(defaultOptimizers.joined(separator: ",")); for austen: \(defaultTextOptimizers.joined(separator: ",")).")
    var optimizers: String?

    @Option(help: "Seeds: every optimizer trains once per seed (--seed, --seed+1, …); above 1 the report gives each optimizer's mean and spread and which differences exceed the spread.")
    var seeds = 1

    @Option(name: .customLong("lrs-from"), help: "A sweep.json written by optim sweep: each optimizer it holds trains at the learning rate it found best.")
    var learningRatesFrom: String?

    @OptionGroup var options: TrainingOptions
    @OptionGroup(title: "Task austen") var textOptions: TextTaskOptions

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
        for (option, value) in [("--out", out), ("--data", options.data), ("--labels", options.labels), ("--lrs-from", learningRatesFrom)] where value?.isEmpty == true {
            throw TrainingError.invalidOption("\(option) is empty; give a path")
        }
        guard seeds >= 1, seeds <= 1000 else { throw TrainingError.invalidOption("--seeds must be between 1 and 1000, got \(seeds)") }
        let experiment = try Experiment(task: task, options: options, textOptions: textOptions)
        let defaults = experiment.task == .austen ? Self.defaultTextOptimizers : Self.defaultOptimizers
        let names = try Experiment.names(optimizers ?? defaults.joined(separator: ","), option: "--optimizers")
        let chosen = try learningRatesFrom.map { try SweepResults.read(URL(fileURLWithPath: $0), task: experiment.task) } ?? [:]
        let firstSeed = experiment.seed
        let base = try experiment.configuration(optimizer: names[0], learningRate: nil, seed: firstSeed)
        guard firstSeed <= UInt64.max - UInt64(seeds) else { throw TrainingError.invalidOption("--seed \(firstSeed) + --seeds \(seeds) overflows") }
        // Every configuration checked before anything trains or a folder is made.
        let plan = try (0..<seeds).map { index in
            try names.map { name in
                try experiment.configuration(optimizer: name, base: base.baseOptimizer, learningRate: chosen[name], seed: firstSeed + UInt64(index))
            }
        }

        // The first run's trainer, built before any folder is made (it refuses what the
        // configuration's checks cannot see, such as a step count that overflows).
        var firstTrainer: Trainer? = try experiment.trainer(plan[0][0])
        let folder: URL
        if let out {
            folder = URL(fileURLWithPath: out)
            try RunFolder.makeFolder(folder, option: "--out")
            let taken = (["report.html", "shootout.json"] + names).filter { FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path) }
            if !force, !taken.isEmpty {
                throw TrainingError.file("--out \(folder.path) already holds \(taken.joined(separator: ", ")); pass --force to replace them")
            }
        } else {
            folder = try RunFolder.uniqueFolder(prefix: "compare-")
        }
        Interrupts.install()
        var results: [[TrainingResult]] = Array(repeating: [], count: names.count)
        var interrupted = false
        seedLoop: for (index, configurations) in plan.enumerated() {
            for (position, configuration) in configurations.enumerated() {
                let label = Self.label(configuration)
                var runFolder = folder.appendingPathComponent(configuration.optimizer)
                if seeds > 1 { runFolder = runFolder.appendingPathComponent("seed-\(configuration.seed)") }
                let result = try experiment.run(configuration, in: runFolder, force: force, trainer: firstTrainer)
                firstTrainer = nil
                let milliseconds = result.seconds / Double(max(result.steps, 1)) * 1000
                let seedNote = seeds > 1 ? String(format: "seed %-4d ", index) : ""
                say(label.padding(toLength: max(20, label.count + 1), withPad: " ", startingAt: 0) + seedNote
                    + experiment.describe(result) + String(format: "  %7.3f ms/step  %2.0f B state/param", milliseconds, result.stateBytesPerParameter)
                    + (result.interrupted ? "  (interrupted)" : ""))
                results[position].append(result)
                if result.interrupted {
                    interrupted = true
                    break seedLoop
                }
            }
        }
        let runs = zip(plan[0], results).compactMap { configuration, results in results.first.map { (Self.label(configuration), $0) } }
        var description: String
        switch experiment.data {
        case let .rows(train, test, name):
            let hidden = base.hidden.map(String.init).joined(separator: "-")
            let classes = String(max(train.classCount, test.classCount))
            description = "MLP \(train.featureCount)-\(hidden)-\(classes) (\(base.activation.rawValue)) on \(name), "
            description += "\(train.count) train / \(test.count) test examples; \(base.epochs) epochs, batch \(base.batchSize), schedule \(base.schedule.rawValue)"
        case let .text(corpus):
            description = "GPT \(base.layers) layers, \(base.heads) heads, \(base.embedding) wide, context \(base.context) on Jane Austen's novels "
            description += "(\(corpus.validationStart) training / \(corpus.tokens.count - corpus.validationStart) validation characters); "
            description += "\(base.iterations) steps of \(base.batchSize) sequences, schedule \(base.schedule.rawValue)"
        }
        description += (base.warmupSteps > 0 ? " with \(base.warmupSteps) warm-up steps" : "") + (base.clipNorm.map { ", clip \($0)" } ?? "")
        description += seeds > 1 ? "; seeds \(firstSeed)…\(firstSeed + UInt64(seeds - 1))" : "; seed \(firstSeed)"
        description += ", \(base.threads) thread(s). The runs of a seed start from the same weights."
        description += learningRatesFrom.map { " Learning rates from \($0) where it has them." } ?? " Learning rates: each optimizer's suggested one (optim list), nanoGPT's 1e-3 for the Adam family on austen."
        if interrupted { description += " Interrupted: the last run stopped early and later ones did not run." }
        let report = folder.appendingPathComponent("report.html")
        do {
            if seeds == 1 && experiment.task == .digits {
                try SafetensorsFile.writeAtomically(Data(CompareReport.html(title: "swift-optim: optimizers compared", description: description, runs: runs).utf8), to: report)
            } else {
                let shootOut = ShootOut(entries: zip(plan[0], results).map { ShootOut.Entry(name: Self.label($0), results: $1) })
                try SafetensorsFile.writeAtomically(try shootOut.json(), to: folder.appendingPathComponent("shootout.json"))
                try SafetensorsFile.writeAtomically(Data(shootOut.html(title: "swift-optim: optimizers compared over seeds", description: description).utf8), to: report)
                for summary in shootOut.summaries {
                    say(String(format: "%@ mean %@ %.4g ± %.2g over %d seed(s)", summary.name.padding(toLength: 20, withPad: " ", startingAt: 0),
                               shootOut.scoreName, summary.mean, summary.standardDeviation, summary.scores.count))
                }
                for difference in shootOut.differences {
                    say("\(difference.better) beats \(difference.worse) beyond the seed spread (by \(String(format: "%.4g", difference.difference)), threshold \(String(format: "%.4g", difference.threshold)))")
                }
                if let advice = shootOut.lionAdvice { say(advice) }
            }
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

    static func label(_ configuration: TrainingConfiguration) -> String {
        configuration.optimizer == "lookahead" ? "lookahead(\(configuration.baseOptimizer))" : configuration.optimizer
    }
}
