import Foundation

/// Adamax (Kingma & Ba, 2015, section 7.1): Adam with the infinity norm in place of the second
/// moment, matching `torch.optim.Adamax` step for step.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p
/// m ← lerp(m, g, 1 − β1);  u ← max(β2·u, |g| + ε)
/// p ← p − lr/(1 − β1ᵗ) · m/u
/// ```
/// Defaults: `lr` 2e-3, `betas` (0.9, 0.999), `eps` 1e-8, `weight_decay` 0. State: `exp_avg`,
/// `exp_inf` (8 bytes per parameter). Reference: `torch.optim.Adamax`; paper: arXiv:1412.6980.
public typealias Adamax = GradientOptimizer<AdamaxRule>

/// The update rule of ``Adamax``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdamaxRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "adamax"

    /// The hyperparameters of ``Adamax``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `betas`: the decays of the first moment and of the infinity norm.
        public var betas: Betas
        /// `eps`, added to `|g|` in the infinity norm.
        public var eps: Double
        /// L2 penalty, added to the gradient.
        public var weightDecay: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``Adamax``.
        public init(learningRate: Double = 2e-3, betas: Betas = .init(0.9, 0.999), eps: Double = 1e-8, weightDecay: Double = 0,
                    maximize: Bool = false) {
            self.learningRate = learningRate
            self.betas = betas
            self.eps = eps
            self.weightDecay = weightDecay
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: try reader.pair("betas", default: d.betas),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "betas": betas.value, "eps": .number(eps), "weight_decay": .number(weightDecay),
             "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.betas(betas, name)
            try Validate.nonNegative(eps, "eps", name)
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``Adamax``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable, TorchGradientOptions {
        @usableFromInline var negativeStepSize: Float
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var lerpComplement: Float
        @usableFromInline var beta2: Float
        @usableFromInline var eps: Float
        public var l2: Float
        public var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["exp_avg", "exp_inf"] }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let weight = Float(1 - h.betas.first)
        let stepSize = h.learningRate / (1 - pow(h.betas.first, Double(step)))
        return Coefficients(negativeStepSize: Float(-stepSize), oneMinusBeta1: weight, lerpComplement: 1 - weight,
                            beta2: Float(h.betas.second), eps: Float(h.eps), l2: Float(h.weightDecay), maximize: h.maximize)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let g = Elementwise.torchGradient(gradient, parameter: before, maximize: c.maximize, l2: c.l2)
        let m = Elementwise.lerp(Elementwise.load(o.state0, i, n), g, weight: c.oneMinusBeta1, oneMinusWeight: c.lerpComplement)
        let u = Elementwise.maximum(Elementwise.load(o.state1, i, n) * c.beta2, Elementwise.absolute(g) + c.eps)
        Elementwise.store(m, o.state0, i, n)
        Elementwise.store(u, o.state1, i, n)
        let after = before + c.negativeStepSize * m / u
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: m)
    }
}

extension AdamaxRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Adamax",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.Adamax",
                         paper: "Kingma & Ba, 2015, \"Adam: A Method for Stochastic Optimization\", section 7.1, arXiv:1412.6980"),
        suggested: ["lr": .number(2e-3)],
        samples: .adaptive(name),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "adamax", stateBuffers: 2, coefficients: [-2e-3, 0.1, 0.999, 1e-8])))
}
