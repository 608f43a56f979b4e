import Foundation

/// Schedule-free SGD (Defazio et al., 2024): SGD with momentum replaced by interpolation between
/// a base sequence z and its weighted average x, no learning-rate schedule to choose, matching
/// `schedulefree.SGDScheduleFree` step for step.
///
/// ```
/// (per group, see ScheduleFreeAveraging: lr, ckp1 = weight/weight_sum)
/// u ← g + λ·y
/// y ← lerp(y, z, ckp1);  y ← y + lr·(μ·(1 − ckp1) − 1)·u;  z ← z − lr·u
/// ```
/// The parameter holds y while training; ``GradientOptimizer/eval()`` moves it to
/// x = lerp(y, z, 1 − 1/μ), ``GradientOptimizer/train()`` back; a step in eval mode throws
/// ``OptimError/stepInEvalMode(optimizer:)``. `optim train` switches by itself.
///
/// Defaults: `lr` 1.0, `momentum` 0.9, `weight_decay` 0, `warmup_steps` 0, `r` 0,
/// `weight_lr_power` 2. State: `z` (a copy of the parameter at its first gradient; 4 bytes per
/// parameter); per group `k`, `lr_max`, `weight_sum`, `train_mode`. Reference: schedulefree 1.4.1
/// `SGDScheduleFree`; paper: "The Road Less Scheduled", arXiv:2405.15682.
public typealias ScheduleFreeSGD = GradientOptimizer<ScheduleFreeSGDRule>

/// The update rule of ``ScheduleFreeSGD``: its hyperparameters, state, per-step coefficients and kernel.
public enum ScheduleFreeSGDRule: ScheduleFreeRule, VectorKernel {
    /// The registry name.
    public static let name = "schedule_free_sgd"

    /// The hyperparameters of ``ScheduleFreeSGD``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: ScheduleFreeHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// The interpolation that plays momentum's part, in (0, 1).
        public var momentum: Double
        /// L2 penalty added to the gradient, at y.
        public var weightDecay: Double
        /// Steps of linear learning-rate warm-up.
        public var warmupSteps: Int
        /// The averaging weight's power of the step count.
        public var r: Double
        /// The averaging weight's power of the largest learning rate so far.
        public var weightLearningRatePower: Double
        /// The train/eval switch's interpolation constant: ``momentum``.
        public var interpolation: Double { momentum }

        /// The hyperparameters; those not written keep the defaults listed on ``ScheduleFreeSGD``.
        public init(learningRate: Double = 1.0, momentum: Double = 0.9, weightDecay: Double = 0, warmupSteps: Int = 0, r: Double = 0,
                    weightLearningRatePower: Double = 2) {
            self.learningRate = learningRate
            self.momentum = momentum
            self.weightDecay = weightDecay
            self.warmupSteps = warmupSteps
            self.r = r
            self.weightLearningRatePower = weightLearningRatePower
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      momentum: try reader.number("momentum", default: d.momentum),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      warmupSteps: try ScheduleFreeAveraging.integer(try reader.number("warmup_steps", default: Double(d.warmupSteps)),
                                                                      "warmupSteps (warmup_steps)", name),
                      r: try reader.number("r", default: d.r),
                      weightLearningRatePower: try reader.number("weight_lr_power", default: d.weightLearningRatePower))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "momentum": .number(momentum), "weight_decay": .number(weightDecay),
             "warmup_steps": .number(Double(warmupSteps)), "r": .number(r), "weight_lr_power": .number(weightLearningRatePower)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            // The reference's own check: eval() divides by the momentum.
            guard momentum > 0, momentum < 1 else { throw Validate.fail(name, "momentum", momentum, "a number in (0, 1)") }
            try Validate.weightDecay(weightDecay, name)
            try ScheduleFreeAveraging.validate(name, warmupSteps: warmupSteps, r: r, weightLearningRatePower: weightLearningRatePower)
        }
    }

    /// The scalars of one step of ``ScheduleFreeSGD``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var weightDecay: Float
        @usableFromInline var ckp1: Float
        @usableFromInline var oneMinusCkp1: Float
        /// `lr·(μ·(1 − ckp1) − 1)`, the factor on the update for y.
        @usableFromInline var yStep: Float
        @usableFromInline var negativeLearningRate: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["z"] }

    public static func coefficients(_ h: Hyperparameters, learningRate lr: Double, ckp1: Double, k: Double) -> Coefficients {
        let ckp1Float = Float(ckp1)
        return Coefficients(weightDecay: Float(h.weightDecay), ckp1: ckp1Float, oneMinusCkp1: 1 - ckp1Float,
                            yStep: Float(lr * (h.momentum * (1 - ckp1) - 1)), negativeLearningRate: Float(-lr))
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let y = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        var u = gradient
        if c.weightDecay != 0 { u = u + c.weightDecay * y }
        let after = ScheduleFreeAveraging.interpolate(o, i, n, y: y, u: u, ckp1: c.ckp1, oneMinusCkp1: c.oneMinusCkp1, yStep: c.yStep,
                                                      negativeLearningRate: c.negativeLearningRate)
        return UpdateLanes(before: y, after: after, gradient: gradient, moment: FloatVector(repeating: 0))
    }
}

extension ScheduleFreeSGDRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "ScheduleFreeSGD",
        reference: .init(library: "schedulefree", version: "1.4.1", symbol: "schedulefree.SGDScheduleFree",
                         paper: ScheduleFreeAveraging.paper),
        suggested: ["lr": .number(1.0)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       // Averaging over every iterate is slow on Rosenbrock's valley: weigh late ones more (r 2).
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(2.5e-3), "r": .number(2)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "schedule_free_sgd", stateBuffers: 1, coefficients: [0, 1e-3, -0.9, -1])))
}
