/// Rprop (Riedmiller & Braun, 1993): every element keeps its own step size, grown while its
/// gradient keeps its sign and shrunk when the sign flips; only the gradient's sign is used.
/// Matches `torch.optim.Rprop` step for step.
///
/// ```
/// g ← −g if maximize
/// f ← η+ if g·g_prev > 0, η− if < 0, else 1
/// s ← clamp(s·f, s_min, s_max)                     (s starts at the learning rate)
/// g ← 0 where f = η−;   p ← p − sign(g)·s;   g_prev ← g
/// ```
/// Defaults: `lr` 1e-2, `etas` (0.5, 1.2), `step_sizes` (1e-6, 50). State: `prev`, `step_size`
/// (8 bytes per parameter). Full-batch by design: with noisy minibatch gradients the signs flip
/// often. Reference: `torch.optim.Rprop`; paper: "A Direct Adaptive Method for Faster
/// Backpropagation Learning: The RPROP Algorithm", IEEE ICNN 1993.
public typealias Rprop = GradientOptimizer<RpropRule>

/// The update rule of ``Rprop``: its hyperparameters, state, per-step coefficients and kernel.
public enum RpropRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "rprop"

    /// The hyperparameters of ``Rprop``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// The initial step size of every element.
        public var learningRate: Double
        /// (η−, η+): the factors that shrink and grow a step size, `0 < η− < 1 < η+`.
        public var etas: Betas
        /// (s_min, s_max): the bounds of a step size.
        public var stepSizes: Betas
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``Rprop``.
        public init(learningRate: Double = 1e-2, etas: Betas = .init(0.5, 1.2), stepSizes: Betas = .init(1e-6, 50), maximize: Bool = false) {
            self.learningRate = learningRate
            self.etas = etas
            self.stepSizes = stepSizes
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      etas: try reader.pair("etas", default: d.etas),
                      stepSizes: try reader.pair("step_sizes", default: d.stepSizes),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "etas": etas.value, "step_sizes": stepSizes.value, "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            guard etas.first > 0, etas.first < 1, etas.second > 1, etas.second.isFinite else {
                throw .invalidHyperparameter(optimizer: name, name: "etas", value: etas.value.description, expected: "(η−, η+) with 0 < η− < 1 < η+")
            }
            guard stepSizes.first >= 0, stepSizes.first <= stepSizes.second, stepSizes.second.isFinite else {
                throw .invalidHyperparameter(optimizer: name, name: "stepSizes (step_sizes)", value: stepSizes.value.description,
                                             expected: "(minimum, maximum) with 0 <= minimum <= maximum, finite")
            }
        }
    }

    /// The scalars of one step of ``Rprop``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var etaMinus: Float
        @usableFromInline var etaPlus: Float
        @usableFromInline var minimum: Float
        @usableFromInline var maximum: Float
        @usableFromInline var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["prev", "step_size"] }
    public static func initialState(_ h: Hyperparameters) -> [Float] { [0, Float(h.learningRate)] }
    public static func keepsMoment(_ h: Hyperparameters) -> Bool { false }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        Coefficients(etaMinus: Float(h.etas.first), etaPlus: Float(h.etas.second), minimum: Float(h.stepSizes.first),
                     maximum: Float(h.stepSizes.second), maximize: h.maximize)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        var g = c.maximize ? -gradient : gradient
        let product = g * Elementwise.load(o.state0, i, n)
        let factor = FloatVector(repeating: 1).replacing(with: c.etaPlus, where: product .> 0).replacing(with: c.etaMinus, where: product .< 0)
        let stepSize = Elementwise.clamp(Elementwise.load(o.state1, i, n) * factor, c.minimum, c.maximum)
        g.replace(with: 0, where: factor .== c.etaMinus)
        let after = before - Elementwise.sign(g) * stepSize
        Elementwise.store(g, o.state0, i, n)
        Elementwise.store(stepSize, o.state1, i, n)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: FloatVector())
    }
}

extension RpropRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Rprop",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.Rprop",
                         paper: "Riedmiller & Braun, 1993, \"A Direct Adaptive Method for Faster Backpropagation Learning: The RPROP Algorithm\", IEEE ICNN"),
        suggested: ["lr": .number(1e-3)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.01)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "rprop", stateBuffers: 2, coefficients: [0.5, 1.2, 1e-6, 50])))
}
