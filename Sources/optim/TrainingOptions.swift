import ArgumentParser
import ExampleModel
import Foundation
import Optim
import Training
#if canImport(Glibc)
import Glibc
#endif

/// The model, data and loop options `optim train` and `optim compare` share.
///
/// Options that define a run are optional here, so a resume can tell those given on the command
/// line from those it restores from the checkpoint (``RunSettings``); their defaults are in
/// ``RunSettings/defaults``.
struct TrainingOptions: ParsableArguments {
    @Option(help: "Learning-rate schedule after the warm-up: \(TrainingConfiguration.Schedule.allCases.map(\.rawValue).joined(separator: ", ")) (default: cosine).")
    var schedule: String?

    @Option(help: "Linear learning-rate warm-up steps (default: 0; task austen 100).")
    var warmup: Int?

    @Option(help: "Clip gradients to this global L2 norm (default: none; task austen 1).")
    var clip: Double?

    @Option(name: .customLong("batch-size"), help: "Examples per step (default: 32; task austen: sequences, 12).")
    var batchSize: Int?

    @Option(help: "Passes over the training set (default: 60).")
    var epochs: Int?

    @Option(help: "Hidden layer widths, comma-separated (default: 256,128).")
    var hidden: String?

    @Option(help: "Hidden activation: relu or gelu (default: relu).")
    var activation: String?

    @Option(help: "Seed for the initial weights, the train/test split and the batch order (default: 0).")
    var seed: UInt64?

    @Option(name: .customLong("param-dtype"), help: "Model parameter precision: float32 (default) or bfloat16 (every weight a bfloat16 number, updated with torchao's stochastic rounding seeded by --seed; -H bf16_stochastic_round=false rounds to nearest even, -H kahan_sum=true compensates the rounding, -H master_weights=true keeps exact float32 master weights in 2 more bytes a weight). bfloat16 parameters: adam, adamw, decoupled_adamw, lion, decoupled_lionw, sgd, rmsprop, adagrad, adopt, ademamix.")
    var paramDType: String?

    @Option(help: "Threads for the model and the optimizer (default: all cores).")
    var threads: Int?

    @Option(help: "Training data: a CSV file (label column + features) or an IDX images file (with --labels). Default: the embedded digits.")
    var data: String?

    @Option(help: "IDX labels file, with an IDX --data images file.")
    var labels: String?

    @Option(name: .customLong("label-column"), help: "Where a CSV file's label is: first or last (default: first).")
    var labelColumn: String?

    @Option(name: .customLong("test-fraction"), help: "Share of the data held out for testing (default: 0.2).")
    var testFraction: Double?

    @Option(name: .customLong("log-every"), help: "Steps between progress records.")
    var logEvery = 10

    @Option(name: .customLong("metrics-every"), help: "Steps between optimizer-metric collections (0: never).")
    var metricsEvery = 50

    /// The options given on the command line, as canonical text (``RunSettings``).
    func given() -> [String: String] {
        var values: [String: String] = [:]
        values["schedule"] = schedule
        values["warmup"] = warmup.map(String.init)
        values["clip"] = clip.map { RunSettings.text($0) }
        values["batch-size"] = batchSize.map(String.init)
        values["epochs"] = epochs.map(String.init)
        values["hidden"] = hidden.map { text in
            let widths = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            return widths.allSatisfy { $0 != nil } ? widths.map { String($0!) }.joined(separator: ",") : text
        }
        values["activation"] = activation
        values["seed"] = seed.map(String.init)
        values["param-dtype"] = paramDType
        values["threads"] = threads.map(String.init)
        values["data"] = data.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        values["labels"] = labels.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        values["label-column"] = labelColumn
        values["test-fraction"] = testFraction.map { RunSettings.text($0) }
        return values
    }

    /// The configuration without the optimizer, from the effective settings.
    func configuration(_ settings: [String: String]) throws -> TrainingConfiguration {
        var configuration = TrainingConfiguration()
        let scheduleName = settings["schedule"] ?? "cosine"
        guard let schedule = TrainingConfiguration.Schedule(rawValue: scheduleName) else {
            throw TrainingError.invalidOption("unknown --schedule '\(scheduleName)'; expected one of \(TrainingConfiguration.Schedule.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        configuration.schedule = schedule
        configuration.warmupSteps = try RunSettings.int(settings, "warmup")
        configuration.clipNorm = try settings["clip"].flatMap { $0 == "none" ? nil : try RunSettings.double(settings, "clip") }
        configuration.batchSize = try RunSettings.int(settings, "batch-size")
        configuration.epochs = try RunSettings.int(settings, "epochs")
        let hidden = settings["hidden"] ?? ""
        let widths = hidden.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !widths.isEmpty, widths.allSatisfy({ $0 != nil }) else {
            throw TrainingError.invalidOption("--hidden must be comma-separated integers, got '\(hidden)'")
        }
        configuration.hidden = widths.map { $0! }
        let activationName = settings["activation"] ?? ""
        guard let activation = Activation(rawValue: activationName) else {
            throw TrainingError.invalidOption("unknown --activation '\(activationName)'; expected relu or gelu")
        }
        configuration.activation = activation
        guard let seed = settings["seed"].flatMap({ UInt64($0) }) else { throw TrainingError.invalidOption("--seed must be an integer in 0...\(UInt64.max)") }
        configuration.seed = seed
        let dtypeName = settings["param-dtype"] ?? ""
        guard let parameterDType = ParameterDType(rawValue: dtypeName) else {
            throw TrainingError.invalidOption("--param-dtype: expected " + ParameterDType.allCases.map(\.rawValue).joined(separator: " or ") + ", got '\(dtypeName)'")
        }
        configuration.parameterDType = parameterDType
        if settings["threads"] != nil { configuration.threads = try RunSettings.int(settings, "threads") }
        configuration.logEvery = logEvery
        configuration.metricsEvery = metricsEvery
        try configuration.validate()
        return configuration
    }

    /// The train and test sets: the embedded digits or the user's file, split by seed. A split
    /// that leaves either set empty is refused.
    func datasets(_ settings: [String: String]) throws -> (train: Dataset, test: Dataset, name: String) {
        let testFraction = try RunSettings.double(settings, "test-fraction")
        guard testFraction > 0, testFraction < 1 else {
            throw TrainingError.invalidOption("--test-fraction must be between 0 and 1 (exclusive), got \(RunSettings.text(testFraction))")
        }
        let dataset: Dataset, name: String
        let data = settings["data"].flatMap { $0 == "digits" ? nil : $0 }, labels = settings["labels"].flatMap { $0 == "none" ? nil : $0 }
        if let data {
            try checkInputFile(data, option: "--data")
            if let labels {
                try checkInputFile(labels, option: "--labels")
                dataset = try Dataset.loadIDX(images: URL(fileURLWithPath: data), labels: URL(fileURLWithPath: labels))
            } else {
                let labelColumn = settings["label-column"] ?? ""
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
        guard let seed = settings["seed"].flatMap({ UInt64($0) }) else { throw TrainingError.invalidOption("--seed must be an integer in 0...\(UInt64.max)") }
        let split = try dataset.split(testFraction: testFraction, seed: seed)
        guard split.train.count > 0, split.test.count > 0 else {
            throw TrainingError.dataMismatch("\(name): \(dataset.count) example(s) split at --test-fraction \(RunSettings.text(testFraction)) leave \(split.train.count) to train on and \(split.test.count) to test on; both need at least one")
        }
        return (split.train, split.test, name)
    }
}

/// The optimizer options of `optim train`.
struct OptimizerOptions: ParsableArguments {
    @Option(help: "Optimizer, by registry name (optim list; default: decoupled_lionw, for task austen adamw).")
    var optimizer: String?

    @Option(help: "The optimizer lookahead wraps (default: adamw).")
    var base: String?

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

    @Option(name: .customLong("state-dtype"), help: "Optimizer state format: float32 (default), bfloat16 (rounded to nearest even; adam, adamw, decoupled_adamw, lion, decoupled_lionw, sgd, rmsprop, adagrad, adopt, ademamix), int8 (bitsandbytes' blockwise 8-bit state, for adam, adamw, decoupled_adamw, lion, decoupled_lionw, sgd with momentum, rmsprop, adagrad, adopt and ademamix) or int4 (torchao's 4-bit state, for adam and adamw); quantized state keeps float32 for tensors under 4096 elements.")
    var stateDType: String?

    @Option(name: [.customShort("H"), .customLong("hyperparameter")], help: "Any other hyperparameter, as name=value (repeatable; e.g. -H nesterov=true -H k=6).")
    var extra: [String] = []

    func hyperparameters() throws -> HyperparameterDictionary {
        var values: HyperparameterDictionary = [:]
        if let lr { values["lr"] = .number(lr) }
        if let weightDecay { values["weight_decay"] = .number(weightDecay) }
        if let momentum { values["momentum"] = .number(momentum) }
        if let eps { values["eps"] = .number(eps) }
        if let betas { values["betas"] = try Self.parse(betas, name: "betas") }
        if let stateDType {
            guard let dtype = StateDType(rawValue: stateDType) else {
                throw TrainingError.invalidOption("--state-dtype: expected " + StateDType.allCases.map(\.rawValue).joined(separator: " or ") + ", got '\(stateDType)'")
            }
            if dtype != .float32 { values["state_dtype"] = .string(dtype.rawValue) }  // float32 is every optimizer's default
        }
        for item in extra {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw TrainingError.invalidOption("-H expects name=value, got '\(item)'") }
            values[parts[0]] = try Self.parse(parts[1], name: parts[0])
        }
        return values
    }

    /// Hyperparameters whose values are names (FORMAT.md): taken as written.
    static let textHyperparameters: Set = ["state_dtype", "adjust_lr_fn", "line_search_fn"]

    /// `true`/`false`, a number, or comma-separated numbers; the text itself for a hyperparameter
    /// whose values are names (`state_dtype`).
    static func parse(_ text: String, name: String) throws -> HyperparameterValue {
        if textHyperparameters.contains(name), !["none", "null"].contains(text.lowercased()) { return .string(text) }
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
    let message = describe(error)
    writeIgnoringErrors(STDERR_FILENO, "optim \(command): \(message)\n")
    return ExitCode.failure
}

/// Prints a line on standard output unbuffered, in order with the progress display.
func say(_ text: String) { sayOnStandardOutput(text) }

func sayOnStandardOutput(_ text: String) {
    writeIgnoringErrors(STDOUT_FILENO, text + "\n")
}
