import ExampleModel
import Foundation
import Optim

/// Everything that defines a training run of an example model; saved in `summary.json` and in the
/// checkpoint so a run can be resumed and reproduced.
public struct TrainingConfiguration: Sendable, Equatable {
    /// What to train: the MLP on rows of features (the digits, or `--data`), or the GPT on Jane
    /// Austen's novels.
    public enum Task: String, Sendable, CaseIterable, Codable {
        /// `digits`: the MLP on rows of features; `austen`: the GPT on Jane Austen's novels.
        case digits, austen
    }

    /// A learning-rate schedule over the whole run, applied after the warm-up.
    public enum Schedule: String, Sendable, CaseIterable, Codable {
        /// The schedule's `--schedule` name: constant, cosine decay, linear decay,
        /// warm-up–stable–decay, exponential, step decay or one-cycle.
        case constant, cosine, linear, wsd, exponential, step, onecycle
    }

    /// Registry name of the optimizer (`optim list`).
    public var optimizer = "decoupled_lionw"
    /// The optimizer Lookahead wraps.
    public var baseOptimizer = "adamw"
    /// Hyperparameters by PyTorch name (`lr`, `weight_decay`, `betas`, …; Lookahead's `k`, `alpha`).
    public var hyperparameters: HyperparameterDictionary = [:]
    /// The learning-rate schedule after the warm-up; cosine by default.
    public var schedule = Schedule.cosine
    /// Linear warm-up steps before the schedule.
    public var warmupSteps = 0
    /// Global gradient-norm clipping limit, or nil for none.
    public var clipNorm: Double?
    /// Examples (rows, or text windows) in one global batch, shared by the ranks of a distributed run.
    public var batchSize = 32
    /// Passes over the training rows (the MLP task; the text task counts ``iterations``).
    public var epochs = 60
    /// The MLP's hidden-layer widths, in order.
    public var hidden = [256, 128]
    /// The MLP's activation function.
    public var activation = Activation.relu
    /// The seed of the weight initialisation, the batch order (rows) and the drawn windows (text).
    public var seed: UInt64 = 0
    /// Threads for the model and the optimizer.
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    /// Steps between progress records (loss and accuracy averaged over them).
    public var logEvery = 10
    /// Steps between optimizer-metric collections (0: never).
    public var metricsEvery = 50
    /// The cosine schedule's final learning rate as a fraction of the peak (0: decay to 0).
    public var finalLearningRateFactor = 0.0

    /// The model's parameter precision (`--param-dtype`): float32, or bfloat16 — every weight a
    /// bfloat16 number, updated by the optimizer with torchao's stochastic rounding
    /// (`bf16_stochastic_round`, seeded with ``seed``) unless the hyperparameters say otherwise.
    public var parameterDType = ParameterDType.float32

    /// What to train: the MLP on rows (`digits`), or the GPT on a text (`austen`).
    public var task = Task.digits
    /// The GPT (task austen): blocks, heads, embedding width and context length.
    public var layers = 4, heads = 4, embedding = 128, context = 64
    /// Steps of the text task, and steps between its validation evaluations (its "epochs").
    public var iterations = 2000, evaluateEvery = 250
    /// Validation batches per evaluation of the text task (the same ones every time).
    public var evaluationBatches = 20

    /// The defaults: DecoupledLionW on the digits with a cosine schedule.
    public init() {}

    /// Trains with a typed optimizer: ``optimizer`` becomes its registry name and
    /// ``hyperparameters`` every one of `hyperparameters` by PyTorch name — the typed form of
    /// setting the two by hand. All of them are written, so the registry's suggestions for the
    /// example tasks don't apply: the run uses exactly `hyperparameters` (the reference defaults
    /// where you wrote none).
    ///
    /// ```swift
    /// var configuration = TrainingConfiguration()
    /// configuration.setOptimizer(AdamW.self, hyperparameters: .init(learningRate: 3e-3, weightDecay: 0.1))
    /// ```
    public mutating func setOptimizer<O: TypedOptimizer>(_ optimizer: O.Type, hyperparameters: O.Hyperparameters) {
        let configuration = OptimizerConfiguration(optimizer, hyperparameters: hyperparameters)
        self.optimizer = configuration.name
        self.hyperparameters = configuration.hyperparameters
    }

    /// The registry configuration: the optimizer's suggested hyperparameters for the example
    /// tasks (`OptimizerInfo.suggested`: each its own learning rate, Lion's several times smaller
    /// than AdamW's, SGD with momentum) under the given ones; for a wrapper such as Lookahead, its
    /// own keys (`k`, `alpha`) stay on the wrapper and everything else goes to the wrapped
    /// optimizer, over that optimizer's suggestions.
    public func optimizerConfiguration() throws(OptimError) -> OptimizerConfiguration {
        let info = try OptimizerRegistry.info(named: optimizer)
        if info.isWrapper {
            let wrapperKeys = Set(info.defaults.keys)
            let own = hyperparameters.filter { wrapperKeys.contains($0.key) }
            let baseInfo = try OptimizerRegistry.info(named: baseOptimizer)
            let base = baseInfo.suggested.merging(hyperparameters.filter { !wrapperKeys.contains($0.key) }) { $1 }
            return OptimizerConfiguration(name: optimizer, hyperparameters: own, base: OptimizerConfiguration(name: baseOptimizer, hyperparameters: base))
        }
        var merged = info.suggested.merging(hyperparameters) { $1 }
        // bfloat16 weights train with stochastic rounding (torchao's recommendation) unless Kahan
        // compensation or master weights are asked for; an optimizer that cannot update them
        // refuses the parameters with its own message.
        if parameterDType == .bfloat16, info.updatesBFloat16Parameters, merged["bf16_stochastic_round"] == nil,
           merged["kahan_sum"] != .bool(true), merged["master_weights"] != .bool(true) {
            merged["bf16_stochastic_round"] = .bool(true)
            if merged["bf16_rounding_seed"] == nil { merged["bf16_rounding_seed"] = .number(Double(seed & (BFloat16Rounding.largestSeed - 1))) }
        }
        return OptimizerConfiguration(name: optimizer, hyperparameters: merged)
    }

    /// The learning-rate multiplier schedule for a run of `totalSteps`.
    public func learningRateSchedule(totalSteps: Int) -> any LearningRateSchedule {
        let warmup = max(0, min(warmupSteps, totalSteps))
        // Decays span one step more than the run, so the last step's rate is small but not 0 (as
        // PyTorch's schedulers, whose final value is only reached after the last step).
        let rest = max(1, totalSteps - warmup) + 1
        let main: any LearningRateSchedule
        switch schedule {
        case .constant: main = ConstantSchedule()
        case .cosine: main = CosineDecaySchedule(steps: rest, floor: finalLearningRateFactor)
        case .linear: main = LinearSchedule.decay(steps: rest, to: 0)
        case .wsd: main = WarmupStableDecaySchedule(warmupSteps: 0, stableSteps: rest * 4 / 5, decaySteps: max(1, rest - rest * 4 / 5))
        case .exponential: main = ExponentialSchedule(gamma: pow(0.01, 1 / Double(rest)))
        case .step: main = StepDecaySchedule(stepSize: max(1, rest / 3), gamma: 0.3)
        case .onecycle: return OneCycleSchedule(totalSteps: max(totalSteps, 2))
        }
        guard warmup > 0 else { return main }
        return SequentialSchedule([(LinearSchedule.warmup(steps: warmup), warmup)], then: main)
    }

    /// Checks the values a user sets; each error names the option.
    public func validate() throws(TrainingError) {
        guard batchSize >= 1 else { throw .invalidOption("--batch-size must be at least 1, got \(batchSize)") }
        guard epochs >= 1 else { throw .invalidOption("--epochs must be at least 1, got \(epochs)") }
        guard !hidden.isEmpty, hidden.allSatisfy({ $0 >= 1 && $0 <= 1 << 16 }) else {
            throw .invalidOption("--hidden must list layer widths between 1 and 65536, got \(hidden)")
        }
        guard warmupSteps >= 0 else { throw .invalidOption("--warmup must be at least 0, got \(warmupSteps)") }
        if let clipNorm, !(clipNorm.isFinite && clipNorm > 0) { throw .invalidOption("--clip must be a positive number, got \(clipNorm)") }
        guard threads >= 1, threads <= 1024 else { throw .invalidOption("--threads must be between 1 and 1024, got \(threads)") }
        guard logEvery >= 1 else { throw .invalidOption("the log interval must be at least 1, got \(logEvery)") }
        guard metricsEvery >= 0 else { throw .invalidOption("the metrics interval must be at least 0, got \(metricsEvery)") }
        guard finalLearningRateFactor >= 0, finalLearningRateFactor <= 1 else {
            throw .invalidOption("the final learning-rate factor must be between 0 and 1, got \(finalLearningRateFactor)")
        }
        if parameterDType == .float32 {
            // They round bfloat16 weights; on float32 ones the optimizer ignores them, which in a run is a forgotten option.
            for name in BFloat16Rounding.flagNames where hyperparameters[name] == .bool(true) {
                throw .invalidOption("-H \(name)=true applies to bfloat16 parameters; add --param-dtype bfloat16 (the parameters are float32)")
            }
        }
        if task == .austen {
            for (name, value) in [("--layers", layers), ("--heads", heads), ("--embedding", embedding), ("--context", context),
                                  ("--iters", iterations), ("--eval-every", evaluateEvery), ("--eval-batches", evaluationBatches)] where value < 1 {
                throw .invalidOption("\(name) must be at least 1, got \(value)")
            }
        }
    }
}

/// A training-run error: one line naming the problem.
public enum TrainingError: Error, Equatable, CustomStringConvertible {
    /// An option out of range or inconsistent with the data.
    case invalidOption(String)
    /// Data that does not fit the run: empty sets, or features that differ from the model's.
    case dataMismatch(String)
    /// A checkpoint that cannot resume this run.
    case resume(String)
    /// A loss that is not finite, that of global step `step` (counted from 1).
    case diverged(step: Int, message: String)
    /// A file-system problem with a run's files.
    case file(String)

    /// The error's one-line message.
    public var description: String {
        switch self {
        case let .invalidOption(message), let .dataMismatch(message), let .resume(message), let .file(message): return message
        case let .diverged(_, message): return message
        }
    }
}

/// `1.5 GB`, `512 MB`, … (powers of 1000).
public func formatBytes(_ bytes: Double) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    var value = bytes, unit = 0
    while value >= 1000, unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return String(format: unit == 0 ? "%.0f" : "%.1f", value) + " " + units[unit]
}
