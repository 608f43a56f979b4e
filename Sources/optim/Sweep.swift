import ArgumentParser
import Foundation
import Optim
import Safetensors
import Training

/// `optim sweep`: a small learning-rate grid per optimizer, each point trained over the seeds
/// asked, and the best learning rate (by mean validation loss, or test accuracy for digits)
/// written to sweep.json for `optim compare --lrs-from`.
struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find each optimizer's best learning rate on a task over a small grid.",
        discussion: """
        Every point of the grid trains from the same initial weights (per seed). Writes --out \\
        (default runs/sweep-<timestamp>): sweep.json (every point's scores and each optimizer's best \\
        learning rate, which optim compare --lrs-from reads) and one run folder per optimizer, \\
        learning rate and seed.
        """)

    @Option(help: "What to train: digits or austen.")
    var task = "digits"

    @Option(help: "Optimizers to sweep, comma-separated registry names.")
    var optimizers: String

    @Option(help: "Learning rates, comma-separated (default: each optimizer's default learning rate ×1/3, ×1, ×3).")
    var lrs: String?

    @Option(help: "Seeds per learning rate (--seed, --seed+1, …).")
    var seeds = 1

    @OptionGroup var options: TrainingOptions
    @OptionGroup(title: "Task austen") var textOptions: TextTaskOptions

    @Option(help: "The output folder (default: runs/sweep-<timestamp>). A folder that holds a sweep is refused without --force.")
    var out: String?

    @Flag(help: "Replace the sweep in --out if it holds one.")
    var force = false

    func run() throws {
        do {
            try sweep()
        } catch let error as ExitCode {
            throw error
        } catch {
            throw fail("sweep", error)
        }
    }

    func sweep() throws {
        if out?.isEmpty == true { throw TrainingError.invalidOption("--out is empty; give a path") }
        guard seeds >= 1, seeds <= 100 else { throw TrainingError.invalidOption("--seeds must be between 1 and 100, got \(seeds)") }
        let experiment = try Experiment(task: task, options: options, textOptions: textOptions)
        let names = try Experiment.names(optimizers, option: "--optimizers")
        var grid: [Double]?
        if let lrs {
            let values = lrs.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0!.isFinite && $0! > 0 }) else {
                throw TrainingError.invalidOption("--lrs must be positive numbers separated by commas, got '\(lrs)'")
            }
            guard Set(values.map { $0! }).count == values.count else { throw TrainingError.invalidOption("--lrs lists a learning rate twice") }
            grid = values.map { $0! }
        }
        let firstSeed = experiment.seed
        guard firstSeed <= UInt64.max - UInt64(seeds) else { throw TrainingError.invalidOption("--seed \(firstSeed) + --seeds \(seeds) overflows") }
        var plan: [(name: String, rates: [Double])] = []
        for name in names {
            let centre = try experiment.defaultLearningRate(name)
            let rates = grid ?? [centre / 3, centre, centre * 3]
            for lr in rates { _ = try experiment.configuration(optimizer: name, learningRate: lr, seed: firstSeed) }  // checked before any run
            plan.append((name, rates))
        }
        var firstTrainer: Trainer? = try experiment.trainer(try experiment.configuration(optimizer: plan[0].name, learningRate: plan[0].rates[0], seed: firstSeed))
        let folder: URL
        if let out {
            folder = URL(fileURLWithPath: out)
            try RunFolder.makeFolder(folder, option: "--out")
            let taken = (["sweep.json"] + names).filter { FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path) }
            if !force, !taken.isEmpty {
                throw TrainingError.file("--out \(folder.path) already holds \(taken.joined(separator: ", ")); pass --force to replace them")
            }
        } else {
            folder = try RunFolder.uniqueFolder(prefix: "sweep-")
        }
        Interrupts.install()
        var document = SweepResults(task: experiment.task.rawValue, score: experiment.task == .austen ? "validation loss" : "test accuracy", optimizers: [:])
        for (name, rates) in plan {
            var points: [SweepResults.Point] = []
            for lr in rates {
                var scores: [Double] = []
                for index in 0..<seeds {
                    let configuration = try experiment.configuration(optimizer: name, learningRate: lr, seed: firstSeed + UInt64(index))
                    let runFolder = folder.appendingPathComponent(name).appendingPathComponent(String(format: "lr-%g", lr)).appendingPathComponent("seed-\(configuration.seed)")
                    let result = try experiment.run(configuration, in: runFolder, force: force, trainer: firstTrainer)
                    firstTrainer = nil
                    say(name.padding(toLength: max(20, name.count + 1), withPad: " ", startingAt: 0) + String(format: "lr %-9.3g seed %-4d ", lr, index)
                        + experiment.describe(result) + (result.interrupted ? "  (interrupted)" : ""))
                    if result.interrupted {
                        let number = Interrupts.signal
                        writeIgnoringErrors(STDERR_FILENO, "optim sweep: interrupted by \(Interrupts.name(number)); sweep.json was not written\n")
                        throw ExitCode(128 + number)
                    }
                    scores.append(experiment.task == .austen ? result.testLoss : result.testAccuracy)
                }
                points.append(.init(lr: lr, scores: scores))
            }
            let best = points.min { cost($0) < cost($1) }!
            document.optimizers[name] = .init(best_lr: best.lr, points: points)
            say(String(format: "%@ best lr %.3g (mean %@ %.4g)", name, best.lr, document.score, best.scores.reduce(0, +) / Double(best.scores.count)))
        }
        let url = folder.appendingPathComponent("sweep.json")
        do {
            try SafetensorsFile.writeAtomically(try document.encoded(), to: url)
        } catch {
            throw TrainingError.file("cannot write \(url.path): \(error)")
        }
        say("wrote \(url.path)")

        func cost(_ point: SweepResults.Point) -> Double {
            let mean = point.scores.reduce(0, +) / Double(max(point.scores.count, 1))
            guard mean.isFinite else { return .infinity }
            return experiment.task == .austen ? mean : -mean
        }
    }
}

/// sweep.json: per optimizer, every learning rate's scores over the seeds and the best one.
struct SweepResults: Codable {
    struct Point: Codable {
        var lr: Double
        var scores: [Double]
    }
    struct Optimizer: Codable {
        var best_lr: Double
        var points: [Point]
    }
    var format = "optim-sweep/1"
    var task: String
    var score: String
    var optimizers: [String: Optimizer]

    init(task: String, score: String, optimizers: [String: Optimizer]) {
        self.task = task
        self.score = score
        self.optimizers = optimizers
    }

    func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(self)
    }

    /// Each optimizer's best learning rate, from a file written for `task`; a clear error otherwise.
    static func read(_ url: URL, task: TrainingConfiguration.Task) throws -> [String: Double] {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TrainingError.file("--lrs-from \(url.path): cannot read it (\(error.localizedDescription))")
        }
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let document = try? decoder.decode(SweepResults.self, from: data), document.format == "optim-sweep/1" else {
            throw TrainingError.file("--lrs-from \(url.path) is not a sweep.json written by optim sweep")
        }
        guard document.task == task.rawValue else {
            throw TrainingError.invalidOption("--lrs-from \(url.path) holds a sweep of task \(document.task), not \(task.rawValue)")
        }
        var rates: [String: Double] = [:]
        for (name, optimizer) in document.optimizers {
            guard optimizer.best_lr.isFinite, optimizer.best_lr > 0 else {
                throw TrainingError.file("--lrs-from \(url.path): \(name)'s best_lr \(optimizer.best_lr) is not a positive number")
            }
            rates[name] = optimizer.best_lr
        }
        return rates
    }
}
