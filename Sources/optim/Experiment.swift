import ExampleModel
import Foundation
import Optim
import Training

/// What `optim compare` and `optim sweep` share: the task's data, one configuration per
/// (optimizer, learning rate, seed) on it, and a run of each into its own folder.
struct Experiment {
    enum Data {
        case rows(train: Dataset, test: Dataset, name: String)
        case text(TextCorpus)
    }

    let task: TrainingConfiguration.Task
    let data: Data
    let settings: [String: String]
    let options: TrainingOptions
    let textOptions: TextTaskOptions

    /// Reads the task's data (and checks the options) before anything trains.
    init(task name: String, options: TrainingOptions, textOptions: TextTaskOptions) throws {
        guard let task = TrainingConfiguration.Task(rawValue: name) else {
            throw TrainingError.invalidOption("unknown --task '\(name)'; expected digits or austen")
        }
        var given = options.given()
        given["optimizer"] = nil
        settings = try RunSettings.resolve(given: given, hyperparameters: [:], saved: nil).settings
        self.task = task
        self.options = options
        self.textOptions = textOptions
        switch task {
        case .digits:
            let sets = try options.datasets(settings)
            data = .rows(train: sets.train, test: sets.test, name: sets.name)
        case .austen:
            guard options.data == nil, options.labels == nil else {
                throw TrainingError.invalidOption("--task austen trains on the bundled novels; --data and --labels are for --task digits")
            }
            data = .text(try TextCorpus.austen())
        }
    }

    /// `--seed` (the first seed of a shoot-out or sweep).
    var seed: UInt64 { settings["seed"].flatMap { UInt64($0) } ?? 0 }

    var dataName: String {
        switch data {
        case let .rows(_, _, name): return name
        case .text: return "austen"
        }
    }

    /// The learning rate an optimizer trains at when none is chosen: the task's recipe for the
    /// Adam family on austen (1e-3, nanoGPT's), else the registry's suggested one.
    func defaultLearningRate(_ optimizer: String, base: String = "adamw") throws -> Double {
        let info = try OptimizerRegistry.info(named: optimizer)
        let name = info.isWrapper ? base : optimizer
        if task == .austen, ["adamw", "adam", "decoupled_adamw", "adopt"].contains(name) { return 1e-3 }
        if case let .number(lr)? = try OptimizerRegistry.info(named: name).suggested["lr"] { return lr }
        return 1e-3
    }

    /// The configuration of one run: `optimizer` at `learningRate` (its default when `nil`), seed `seed`.
    func configuration(optimizer: String, base: String = "adamw", learningRate: Double?, seed: UInt64) throws -> TrainingConfiguration {
        let lr = try learningRate ?? defaultLearningRate(optimizer, base: base)
        var configuration: TrainingConfiguration
        switch task {
        case .digits:
            configuration = try options.configuration(settings)
            configuration.optimizer = optimizer
            configuration.baseOptimizer = base
            configuration.hyperparameters = ["lr": .number(lr)]
        case .austen:
            configuration = try textOptions.configuration(options: options, settings: settings, optimizer: optimizer, base: base,
                                                          hyperparameters: ["lr": .number(lr)])
        }
        configuration.seed = seed
        _ = try configuration.optimizerConfiguration()
        try configuration.validate()
        return configuration
    }

    func trainer(_ configuration: TrainingConfiguration) throws -> Trainer {
        switch data {
        case let .rows(train, test, _): return try Trainer(configuration: configuration, train: train, test: test)
        case let .text(corpus): return try Trainer(configuration: configuration, corpus: corpus)
        }
    }

    /// Trains `configuration` into `folder` (created with its parents; `force` replaces a run there).
    /// `trainer`, when given, is one built from `configuration` beforehand (to check a run can start
    /// before any folder is made).
    func run(_ configuration: TrainingConfiguration, in folder: URL, force: Bool, trainer prebuilt: Trainer? = nil) throws -> TrainingResult {
        let trainer = try prebuilt ?? self.trainer(configuration)
        var saved = settings
        saved["optimizer"] = configuration.optimizer
        saved["threads"] = String(configuration.threads)
        trainer.checkpointMetadata[RunSettings.metadataKey] = try RunSettings.json(saved)
        let run = try RunFolder(folder, mode: force ? .replace : .new)
        return try trainer.run(recordingTo: run, checkpoint: run.checkpoint, extra: ["data": dataName], shouldStop: { Interrupts.signal != 0 })
    }

    /// The score a sweep ranks by: validation loss for a text (lower is better), test accuracy
    /// otherwise (higher is better), as a value where lower is better.
    func cost(_ result: TrainingResult) -> Double {
        let value = task == .austen ? result.testLoss : -result.testAccuracy
        return value.isFinite ? value : .infinity
    }

    func describe(_ result: TrainingResult) -> String {
        task == .austen ? String(format: "val loss %.4f", result.testLoss) : String(format: "test accuracy %6.2f%%", result.testAccuracy * 100)
    }

    /// Comma-separated registry names, each once.
    static func names(_ list: String, option: String) throws -> [String] {
        let names = list.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, !names.contains("") else { throw TrainingError.invalidOption("\(option) must list registry names, got '\(list)'") }
        if let twice = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw TrainingError.invalidOption("\(option) lists \(twice) twice")
        }
        for name in names { _ = try OptimizerRegistry.info(named: name) }
        return names
    }
}
