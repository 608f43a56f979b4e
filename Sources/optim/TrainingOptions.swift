import ArgumentParser
import ExampleModel
import Foundation
import Optim
import Training

/// The model, data and loop options `optim train` and `optim compare` share.
struct TrainingOptions: ParsableArguments {
    @Option(help: "Learning-rate schedule after the warm-up: \(TrainingConfiguration.Schedule.allCases.map(\.rawValue).joined(separator: ", ")).")
    var schedule = "cosine"

    @Option(help: "Linear learning-rate warm-up steps (default 0; task austen 100).")
    var warmup: Int?

    @Option(help: "Clip gradients to this global L2 norm (task austen: default 1).")
    var clip: Double?

    @Option(name: .customLong("batch-size"), help: "Examples per step (default 32; task austen: sequences, 12).")
    var batchSize: Int?

    @Option(help: "Passes over the training set.")
    var epochs = 60

    @Option(help: "Hidden layer widths, comma-separated.")
    var hidden = "256,128"

    @Option(help: "Hidden activation: relu or gelu.")
    var activation = "relu"

    @Option(help: "Seed for the initial weights and the batch order.")
    var seed: UInt64 = 0

    @Option(help: "Threads for the model and the optimizer (default: all cores).")
    var threads: Int?

    @Option(help: "Training data: a CSV file (label column + features) or an IDX images file (with --labels). Default: the embedded digits.")
    var data: String?

    @Option(help: "IDX labels file, with an IDX --data images file.")
    var labels: String?

    @Option(name: .customLong("label-column"), help: "Where a CSV file's label is: first or last.")
    var labelColumn = "first"

    @Option(name: .customLong("test-fraction"), help: "Share of the data held out for testing.")
    var testFraction = 0.2

    @Option(name: .customLong("log-every"), help: "Steps between progress records.")
    var logEvery = 10

    @Option(name: .customLong("metrics-every"), help: "Steps between optimizer-metric collections (0: never).")
    var metricsEvery = 50

    /// The configuration without the optimizer.
    func configuration() throws -> TrainingConfiguration {
        var configuration = TrainingConfiguration()
        guard let schedule = TrainingConfiguration.Schedule(rawValue: schedule) else {
            throw TrainingError.invalidOption("unknown --schedule '\(schedule)'; expected one of \(TrainingConfiguration.Schedule.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        configuration.schedule = schedule
        configuration.warmupSteps = warmup ?? 0
        configuration.clipNorm = clip
        configuration.batchSize = batchSize ?? 32
        configuration.epochs = epochs
        let widths = hidden.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !widths.isEmpty, widths.allSatisfy({ $0 != nil }) else {
            throw TrainingError.invalidOption("--hidden must be comma-separated integers, got '\(hidden)'")
        }
        configuration.hidden = widths.map { $0! }
        guard let activation = Activation(rawValue: activation) else {
            throw TrainingError.invalidOption("unknown --activation '\(activation)'; expected relu or gelu")
        }
        configuration.activation = activation
        configuration.seed = seed
        if let threads { configuration.threads = threads }
        configuration.logEvery = logEvery
        configuration.metricsEvery = metricsEvery
        try configuration.validate()
        return configuration
    }

    /// The train and test sets: the embedded digits or the user's file, split by seed.
    func datasets() throws -> (train: Dataset, test: Dataset, name: String) {
        guard testFraction > 0, testFraction < 1 else {
            throw TrainingError.invalidOption("--test-fraction must be between 0 and 1 (exclusive), got \(testFraction)")
        }
        let dataset: Dataset, name: String
        if let data {
            if let labels {
                dataset = try Dataset.loadIDX(images: URL(fileURLWithPath: data), labels: URL(fileURLWithPath: labels))
            } else {
                guard let column = Dataset.LabelColumn(rawValue: labelColumn) else {
                    throw TrainingError.invalidOption("--label-column must be first or last, got '\(labelColumn)'")
                }
                dataset = try Dataset.loadCSV(at: URL(fileURLWithPath: data), labelColumn: column)
            }
            name = URL(fileURLWithPath: data).lastPathComponent
        } else {
            guard labels == nil else { throw TrainingError.invalidOption("--labels needs --data (an IDX images file)") }
            dataset = try Dataset.digits()
            name = "digits (UCI, 1,797 8×8 images)"
        }
        let split = try dataset.split(testFraction: testFraction, seed: seed)
        return (split.train, split.test, name)
    }
}

/// The optimizer options of `optim train`.
struct OptimizerOptions: ParsableArguments {
    @Option(name: .customLong("optimizer"), help: "Optimizer, by registry name (optim list); default decoupled_lionw, for task austen adamw.")
    var optimizerName: String?

    var optimizer: String { optimizerName ?? "decoupled_lionw" }

    @Option(help: "The optimizer lookahead wraps.")
    var base = "adamw"

    @Option(help: "Learning rate (default: a suggested value per optimizer).")
    var lr: Double?

    @Option(name: .customLong("weight-decay"), help: "Weight decay (biases and other 1-D parameters get none).")
    var weightDecay: Double?

    @Option(help: "SGD momentum.")
    var momentum: Double?

    @Option(help: "Adam/Lion betas, as b1,b2.")
    var betas: String?

    @Option(help: "Adam-family epsilon.")
    var eps: Double?

    @Option(name: [.customShort("H"), .customLong("hyperparameter")], help: "Any other hyperparameter, as name=value (repeatable; e.g. -H nesterov=true -H k=6).")
    var extra: [String] = []

    func hyperparameters() throws -> HyperparameterDictionary {
        var values: HyperparameterDictionary = [:]
        if let lr { values["lr"] = .number(lr) }
        if let weightDecay { values["weight_decay"] = .number(weightDecay) }
        if let momentum { values["momentum"] = .number(momentum) }
        if let eps { values["eps"] = .number(eps) }
        if let betas { values["betas"] = try Self.parse(betas, name: "betas") }
        for item in extra {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw TrainingError.invalidOption("-H expects name=value, got '\(item)'") }
            values[parts[0]] = try Self.parse(parts[1], name: parts[0])
        }
        return values
    }

    /// `true`/`false`, a number, or comma-separated numbers.
    static func parse(_ text: String, name: String) throws -> HyperparameterValue {
        switch text.lowercased() {
        case "true": return .bool(true)
        case "false": return .bool(false)
        case "none", "null": return .null
        default: break
        }
        if text.contains(",") {
            let numbers = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !numbers.isEmpty, numbers.allSatisfy({ $0 != nil }) else { throw TrainingError.invalidOption("\(name): '\(text)' is not a list of numbers") }
            return .numbers(numbers.map { $0! })
        }
        guard let number = Double(text) else { throw TrainingError.invalidOption("\(name): '\(text)' is not a number, true or false") }
        return .number(number)
    }
}

/// Prints `optim <command>: <message>` on standard error and exits with status 1.
func fail(_ command: String, _ error: any Error) -> ExitCode {
    let message = "\(error)".split(separator: "\n").joined(separator: " ")
    FileHandle.standardError.write(Data("optim \(command): \(message)\n".utf8))
    return ExitCode.failure
}

/// Prints a line on standard output unbuffered, in order with the progress display.
func say(_ text: String) { sayOnStandardOutput(text) }

func sayOnStandardOutput(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
