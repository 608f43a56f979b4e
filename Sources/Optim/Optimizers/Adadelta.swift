/// Adadelta (Zeiler, 2012): steps sized by the ratio of running root mean squares of past updates
/// and gradients, matching `torch.optim.Adadelta` step for step.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p
/// v ← ρ·v + (1 − ρ)·g²
/// Δ ← √(u + ε)/√(v + ε) · g;  u ← ρ·u + (1 − ρ)·Δ²
/// p ← p − lr·Δ
/// ```
/// Defaults: `lr` 1.0, `rho` 0.9, `eps` 1e-6, `weight_decay` 0. State: `square_avg`,
/// `acc_delta` (8 bytes per parameter). Reference: `torch.optim.Adadelta`; paper:
/// arXiv:1212.5701.
public typealias Adadelta = GradientOptimizer<AdadeltaRule>

/// The update rule of ``Adadelta``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdadeltaRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "adadelta"

    /// The hyperparameters of ``Adadelta``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// The decay of both running averages.
        public var rho: Double
        /// `eps`, added inside both square roots.
        public var eps: Double
        /// L2 penalty, added to the gradient.
        public var weightDecay: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``Adadelta``.
        public init(learningRate: Double = 1.0, rho: Double = 0.9, eps: Double = 1e-6, weightDecay: Double = 0, maximize: Bool = false) {
            self.learningRate = learningRate
            self.rho = rho
            self.eps = eps
            self.weightDecay = weightDecay
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      rho: try reader.number("rho", default: d.rho),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "rho": .number(rho), "eps": .number(eps), "weight_decay": .number(weightDecay),
             "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.unitInterval(rho, "rho", name)
            try Validate.nonNegative(eps, "eps", name)
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``Adadelta``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable, TorchGradientOptions {
        @usableFromInline var negativeLearningRate: Float
        @usableFromInline var rho: Float
        @usableFromInline var oneMinusRho: Float
        @usableFromInline var eps: Float
        public var l2: Float
        public var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["square_avg", "acc_delta"] }
    public static func keepsMoment(_ h: Hyperparameters) -> Bool { false }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        Coefficients(negativeLearningRate: Float(-h.learningRate), rho: Float(h.rho), oneMinusRho: Float(1 - h.rho), eps: Float(h.eps),
                     l2: Float(h.weightDecay), maximize: h.maximize)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let g = Elementwise.torchGradient(gradient, parameter: before, maximize: c.maximize, l2: c.l2)
        let squareAverage = Elementwise.load(o.state0, i, n) * c.rho + c.oneMinusRho * g * g
        let std = Elementwise.squareRoot(squareAverage + c.eps)
        let accumulated = Elementwise.load(o.state1, i, n)
        let delta = Elementwise.squareRoot(accumulated + c.eps) / std * g
        Elementwise.store(squareAverage, o.state0, i, n)
        Elementwise.store(accumulated * c.rho + c.oneMinusRho * delta * delta, o.state1, i, n)
        let after = before + c.negativeLearningRate * delta
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: FloatVector())
    }
}

extension AdadeltaRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Adadelta",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.Adadelta",
                         paper: "Zeiler, 2012, \"ADADELTA: An Adaptive Learning Rate Method\", arXiv:1212.5701"),
        suggested: ["lr": .number(1.0)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(1.0)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(1.0)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(1.0)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "adadelta", stateBuffers: 2, coefficients: [-1, 0.9, 0.1, 1e-6])))
}
