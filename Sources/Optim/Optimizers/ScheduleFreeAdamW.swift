import Foundation

/// Schedule-free AdamW (Defazio et al., 2024): no learning-rate schedule to choose — the
/// parameters follow the interpolation y between a base sequence z and its weighted average x,
/// matching `schedulefree.AdamWScheduleFree` step for step.
///
/// ```
/// (per group, see ScheduleFreeAveraging: lr, ckp1 = weight/weight_sum, k)
/// v ← β2·v + (1 − β2)·g²;  u ← g / (sqrt(v/(1 − β2^k)) + ε);  u ← u + λ·y
/// y ← lerp(y, z, ckp1);  y ← y + lr·(β1·(1 − ckp1) − 1)·u;  z ← z − lr·u
/// ```
/// The parameter holds y while training. Call ``GradientOptimizer/eval()`` before evaluating (it
/// moves the parameters to x = lerp(y, z, 1 − 1/β1)) and ``GradientOptimizer/train()`` before the
/// next step (back to y); a step in eval mode throws ``OptimError/stepInEvalMode(optimizer:)``.
/// `optim train` does both by itself.
///
/// Defaults: `lr` 0.0025, `betas` (0.9, 0.999), `eps` 1e-8, `weight_decay` 0, `warmup_steps` 0,
/// `r` 0, `weight_lr_power` 2. State: `z` (a copy of the parameter at its first gradient),
/// `exp_avg_sq` (8 bytes per parameter); per group `k`, `lr_max`, `weight_sum`, `train_mode`.
/// Reference: schedulefree 1.4.1 `AdamWScheduleFree`; paper: "The Road Less Scheduled",
/// arXiv:2405.15682.
public typealias ScheduleFreeAdamW = GradientOptimizer<ScheduleFreeAdamWRule>

/// The update rule of ``ScheduleFreeAdamW``: its hyperparameters, state, per-step coefficients and kernel.
public enum ScheduleFreeAdamWRule: ScheduleFreeRule, VectorKernel {
    /// The registry name.
    public static let name = "schedule_free_adamw"

    /// The hyperparameters of ``ScheduleFreeAdamW``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: ScheduleFreeHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `betas`: β1, which places y between x and z, and β2, the second moment's decay.
        public var betas: Betas
        /// `eps`, added to the bias-corrected `√v` in the denominator.
        public var eps: Double
        /// Decay added to the normalised update, at y.
        public var weightDecay: Double
        /// Steps of linear learning-rate warm-up.
        public var warmupSteps: Int
        /// The averaging weight's power of the step count.
        public var r: Double
        /// The averaging weight's power of the largest learning rate so far.
        public var weightLearningRatePower: Double
        /// The train/eval switch's interpolation constant: β1.
        public var interpolation: Double { betas.first }

        /// The hyperparameters; those not written keep the defaults listed on ``ScheduleFreeAdamW``.
        public init(learningRate: Double = 0.0025, betas: Betas = .init(0.9, 0.999), eps: Double = 1e-8, weightDecay: Double = 0,
                    warmupSteps: Int = 0, r: Double = 0, weightLearningRatePower: Double = 2) {
            self.learningRate = learningRate
            self.betas = betas
            self.eps = eps
            self.weightDecay = weightDecay
            self.warmupSteps = warmupSteps
            self.r = r
            self.weightLearningRatePower = weightLearningRatePower
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: try reader.pair("betas", default: d.betas),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      warmupSteps: try ScheduleFreeAveraging.integer(try reader.number("warmup_steps", default: Double(d.warmupSteps)),
                                                                      "warmupSteps (warmup_steps)", name),
                      r: try reader.number("r", default: d.r),
                      weightLearningRatePower: try reader.number("weight_lr_power", default: d.weightLearningRatePower))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "betas": betas.value, "eps": .number(eps), "weight_decay": .number(weightDecay),
             "warmup_steps": .number(Double(warmupSteps)), "r": .number(r), "weight_lr_power": .number(weightLearningRatePower)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.betas(betas, name)
            // eval() moves the parameters by lerp(y, z, 1 − 1/β1): β1 = 0 would divide by zero.
            guard betas.first > 0 else { throw Validate.fail(name, "betas.0 (betas[0])", betas.first, "a number in (0, 1)") }
            try Validate.nonNegative(eps, "eps", name)
            try Validate.weightDecay(weightDecay, name)
            try ScheduleFreeAveraging.validate(name, warmupSteps: warmupSteps, r: r, weightLearningRatePower: weightLearningRatePower)
        }
    }

    /// The scalars of one step of ``ScheduleFreeAdamW``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var biasCorrection2: Float
        @usableFromInline var eps: Float
        @usableFromInline var weightDecay: Float
        @usableFromInline var ckp1: Float
        @usableFromInline var oneMinusCkp1: Float
        /// `lr·(β1·(1 − ckp1) − 1)`, the factor on the update for y.
        @usableFromInline var yStep: Float
        @usableFromInline var negativeLearningRate: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["z", "exp_avg_sq"] }

    public static func coefficients(_ h: Hyperparameters, learningRate lr: Double, ckp1: Double, k: Double) -> Coefficients {
        let ckp1Float = Float(ckp1)
        return Coefficients(beta2: Float(h.betas.second), oneMinusBeta2: Float(1 - h.betas.second),
                            biasCorrection2: Float(1 - pow(h.betas.second, k + 1)), eps: Float(h.eps), weightDecay: Float(h.weightDecay),
                            ckp1: ckp1Float, oneMinusCkp1: 1 - ckp1Float, yStep: Float(lr * (h.betas.first * (1 - ckp1) - 1)),
                            negativeLearningRate: Float(-lr))
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let y = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let v = Elementwise.load(o.state1, i, n) * c.beta2 + c.oneMinusBeta2 * gradient * gradient
        Elementwise.store(v, o.state1, i, n)
        var u = gradient / (Elementwise.squareRoot(v / c.biasCorrection2) + c.eps)
        if c.weightDecay != 0 { u = u + c.weightDecay * y }
        let after = ScheduleFreeAveraging.interpolate(o, i, n, y: y, u: u, ckp1: c.ckp1, oneMinusCkp1: c.oneMinusCkp1, yStep: c.yStep,
                                                      negativeLearningRate: c.negativeLearningRate)
        return UpdateLanes(before: y, after: after, gradient: gradient, moment: FloatVector(repeating: 0))
    }
}

extension ScheduleFreeAdamWRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "ScheduleFreeAdamW",
        reference: .init(library: "schedulefree", version: "1.4.1", symbol: "schedulefree.AdamWScheduleFree",
                         paper: ScheduleFreeAveraging.paper),
        suggested: ["lr": .number(2.5e-3)],
        samples: .adaptive(name),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "schedule_free_adamw", stateBuffers: 2,
                                            coefficients: [0.999, 0.001, 0.5, 1e-8, 0, 1e-3, -2.5e-3, -2.5e-3])))
}
