import Foundation
import Optim
import Training

/// The options that define a run, as canonical text by option name (`batch-size` → `32`, `hp.lr`
/// → `0.001`): saved in every checkpoint (metadata `optim/options`) so `--resume` restores them.
///
/// On a resume, an option left off the command line takes the checkpoint's value. One given on
/// the command line that contradicts the checkpoint is
/// - applied and recorded in `summary.json` (`changed_on_resume`) for `--epochs` (the schedule
///   then spans the new length), `--clip` and `--threads`;
/// - refused, naming both values, for every other option: the optimizer and its hyperparameters
///   (the checkpoint restores them), the schedule and warm-up, the model (`--hidden`,
///   `--activation`) and the data, split and batch order (`--data`, `--labels`, `--label-column`,
///   `--test-fraction`, `--seed`, `--batch-size`).
enum RunSettings {
    static let metadataKey = "optim/options"

    static let defaults: [String: String] = [
        "optimizer": "decoupled_lionw", "base": "adamw", "schedule": "cosine", "warmup": "0", "clip": "none",
        "batch-size": "32", "epochs": "60", "hidden": "256,128", "activation": "relu", "seed": "0",
        "data": "digits", "labels": "none", "label-column": "first", "test-fraction": "0.2", "param-dtype": "float32",
    ]

    /// Options a resume applies (and records) when the command line changes them.
    static let changeable: Set<String> = ["epochs", "clip", "threads"]

    static func reason(_ option: String) -> String {
        switch option {
        case "optimizer", "base": return "the checkpoint holds that optimizer's state"
        case "schedule", "warmup": return "the learning-rate schedule is part of the run"
        case "hidden", "activation", "param-dtype": return "the checkpoint holds that model"
        case "seed": return "the seed picks the train/test split and the batch order"
        case "batch-size": return "the steps and the batch order depend on it"
        default: return "the data and its split are part of the run"
        }
    }

    static func text(_ value: Double) -> String { String(value) }

    static func text(_ value: HyperparameterValue) -> String {
        switch value {
        case let .number(number): return text(number)
        case let .bool(flag): return String(flag)
        case let .numbers(numbers): return numbers.map(text).joined(separator: ",")
        case .null: return "none"
        case let .string(string): return string
        case let .list(values): return values.map(text).joined(separator: ",")
        }
    }

    static func int(_ settings: [String: String], _ key: String) throws -> Int {
        let value = settings[key] ?? ""
        guard let number = Int(value) else { throw TrainingError.invalidOption("--\(key) must be an integer, got '\(value)'") }
        return number
    }

    static func double(_ settings: [String: String], _ key: String) throws -> Double {
        let value = settings[key] ?? ""
        guard let number = Double(value) else { throw TrainingError.invalidOption("--\(key) must be a number, got '\(value)'") }
        return number
    }

    static func optionName(forHyperparameter name: String) -> String {
        switch name {
        case "lr": return "--lr"
        case "weight_decay": return "--weight-decay"
        case "momentum", "eps", "betas": return "--\(name)"
        case "state_dtype": return "--state-dtype"
        default: return "-H \(name)"
        }
    }

    /// The checkpoint's saved settings, or nil for a checkpoint written before they were saved.
    static func saved(in metadata: [String: String]) throws -> [String: String]? {
        guard let text = metadata[metadataKey] else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String] else {
            throw TrainingError.resume("the checkpoint's run options (\(metadataKey)) are malformed")
        }
        return object
    }

    static func json(_ settings: [String: String]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: settings, options: [.sortedKeys]), as: UTF8.self)
    }

    /// The effective settings: the defaults, under the checkpoint's (`saved`), under the command
    /// line's (`given`, `hyperparameters`); and the options a resume changes.
    static func resolve(given: [String: String], hyperparameters: HyperparameterDictionary, saved: [String: String]?, resuming: Bool = false) throws
        -> (settings: [String: String], hyperparameters: HyperparameterDictionary, changes: [String: ResumeRecord.Change]) {
        if resuming, saved == nil, let name = hyperparameters.keys.sorted().first {
            // A checkpoint from before the options were saved still restores the hyperparameters.
            throw TrainingError.resume("\(optionName(forHyperparameter: name)) cannot apply: the checkpoint restores the optimizer's hyperparameters (it predates saved run options, so they cannot be compared); drop \(optionName(forHyperparameter: name))")
        }
        var settings = defaults
        var explicit: HyperparameterDictionary = [:]
        var changes: [String: ResumeRecord.Change] = [:]
        if let saved {
            for (key, value) in saved {
                if key.hasPrefix("hp.") {
                    explicit[String(key.dropFirst(3))] = try OptimizerOptions.parse(value, name: String(key.dropFirst(3)))
                } else {
                    settings[key] = value
                }
            }
        }
        for (key, value) in given.sorted(by: { $0.key < $1.key }) {
            if saved != nil, let old = settings[key], old != value {
                guard changeable.contains(key) else {
                    throw TrainingError.resume("--\(key) \(value) contradicts the checkpoint's \(old): \(reason(key)); drop --\(key) to continue the run, or start a new one")
                }
                changes[key] = .init(from: old, to: value)
            }
            settings[key] = value
        }
        if saved != nil {
            let checkpoint = try effectiveHyperparameters(settings, explicit)
            for (name, value) in hyperparameters.sorted(by: { $0.key < $1.key }) where checkpoint[name] != value {
                let old = checkpoint[name].map(text) ?? "(not set)"
                throw TrainingError.resume("\(optionName(forHyperparameter: name)) \(text(value)) contradicts the checkpoint's \(name) \(old): the checkpoint restores the optimizer's hyperparameters; drop \(optionName(forHyperparameter: name)) to continue the run, or start a new one")
            }
        }
        explicit.merge(hyperparameters) { $1 }
        return (settings, explicit, changes)
    }

    /// The hyperparameters a run with these settings uses: registry defaults, suggested values,
    /// explicit ones (the wrapped optimizer's too, for Lookahead).
    static func effectiveHyperparameters(_ settings: [String: String], _ explicit: HyperparameterDictionary) throws -> HyperparameterDictionary {
        var configuration = TrainingConfiguration()
        configuration.optimizer = settings["optimizer"] ?? "decoupled_lionw"
        configuration.baseOptimizer = settings["base"] ?? "adamw"
        configuration.hyperparameters = explicit
        let resolved = try configuration.optimizerConfiguration()
        var values = try OptimizerRegistry.info(named: resolved.name).defaults
        if let base = resolved.base {
            values.merge(try OptimizerRegistry.info(named: base.name).defaults) { $1 }
            values.merge(base.hyperparameters) { $1 }
        }
        values.merge(resolved.hyperparameters) { $1 }
        return values
    }

    /// The settings with the explicit hyperparameters, as saved in a checkpoint.
    static func saving(_ settings: [String: String], _ hyperparameters: HyperparameterDictionary) -> [String: String] {
        var all = settings
        for (name, value) in hyperparameters { all["hp.\(name)"] = text(value) }
        return all
    }
}
