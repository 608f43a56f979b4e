import Foundation

/// Averaged SGD (Polyak & Juditsky, 1992) with the decaying step of Bottou (2012), matching
/// `torch.optim.ASGD` step for step: SGD whose running average `ax` of the iterates (from step
/// `t0` on) is the estimate to evaluate.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p
/// p ← p·(1 − λd·η);  p ← p − η·g                    (λd: lambd)
/// ax ← ax + (p − ax)·μ if μ ≠ 1, else ax ← p
/// η ← lr / (1 + λd·lr·t)^α;  μ ← 1 / max(1, t − t0)   (for the next step)
/// ```
/// Defaults: `lr` 1e-2, `lambd` 1e-4, `alpha` 0.75, `t0` 1e6, `weight_decay` 0. State: `ax`
/// (4 bytes per parameter) and the scalars `eta` and `mu` (float32, as torch keeps them; `eta`
/// starts at the learning rate of the first step). Reference: `torch.optim.ASGD`; papers:
/// Polyak & Juditsky, 1992, SIAM J. Control Optim. 30(4); Bottou, 2012, "Stochastic Gradient
/// Descent Tricks".
public typealias ASGD = GradientOptimizer<ASGDRule>

/// The update rule of ``ASGD``: its hyperparameters, state, per-step coefficients and kernel.
public enum ASGDRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "asgd"

    /// The hyperparameters of ``ASGD``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// λd, the decay term of the step size.
        public var lambd: Double
        /// α, the power of the step-size decay.
        public var alpha: Double
        /// The step from which averaging starts.
        public var t0: Double
        /// L2 penalty, added to the gradient.
        public var weightDecay: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``ASGD``.
        public init(learningRate: Double = 1e-2, lambd: Double = 1e-4, alpha: Double = 0.75, t0: Double = 1e6, weightDecay: Double = 0,
                    maximize: Bool = false) {
            self.learningRate = learningRate
            self.lambd = lambd
            self.alpha = alpha
            self.t0 = t0
            self.weightDecay = weightDecay
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      lambd: try reader.number("lambd", default: d.lambd),
                      alpha: try reader.number("alpha", default: d.alpha),
                      t0: try reader.number("t0", default: d.t0),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "lambd": .number(lambd), "alpha": .number(alpha), "t0": .number(t0),
             "weight_decay": .number(weightDecay), "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.nonNegative(lambd, "lambd", name)
            try Validate.finite(alpha, "alpha", name)
            try Validate.finite(t0, "t0", name)
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``ASGD``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable, TorchGradientOptions {
        @usableFromInline var decay: Float
        @usableFromInline var negativeEta: Float
        @usableFromInline var mu: Float
        @usableFromInline var averaging: Bool
        public var l2: Float
        public var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["ax"] }
    public static func scalarStateNames(_ h: Hyperparameters) -> [String] { ["eta", "mu"] }
    public static func initialScalars(_ h: Hyperparameters) -> [Float] { [Float(h.learningRate), 1] }
    public static func keepsMoment(_ h: Hyperparameters) -> Bool { false }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        var scalars = initialScalars(h)
        return coefficients(h, initialLearningRate: initialLearningRate, step: step, scalars: &scalars)
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int, scalars: inout [Float]) -> Coefficients {
        let eta = Double(scalars[0]), mu = scalars[1], t = Double(step), lr = h.learningRate
        let coefficients = Coefficients(decay: Float(1 - h.lambd * eta), negativeEta: Float(-eta), mu: mu, averaging: mu != 1,
                                        l2: Float(h.weightDecay), maximize: h.maximize)
        scalars[0] = Float(lr / pow(1 + h.lambd * lr * t, h.alpha))
        scalars[1] = Float(1 / max(1, t - h.t0))
        return coefficients
    }

    /// The vector kernel over `range`, in the usual case (no `maximize`, no L2 term) in a copy of
    /// the loop per averaging mode with the options constants, so that no test stays in the
    /// loop; the same bits.
    @inlinable @inline(__always)
    public static func update(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients) {
        guard !coefficients.maximize && coefficients.l2 == 0 else {
            return Elementwise.run(Self.self, operands, range, coefficients)
        }
        var usual = coefficients
        (usual.maximize, usual.l2) = (false, 0)
        if coefficients.averaging {
            usual.averaging = true
            Elementwise.run(Self.self, operands, range, usual)
        } else {
            usual.averaging = false
            Elementwise.run(Self.self, operands, range, usual)
        }
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let g = Elementwise.torchGradient(gradient, parameter: before, maximize: c.maximize, l2: c.l2)
        let after = before * c.decay + c.negativeEta * g
        let average: FloatVector
        if c.averaging {
            let previous = Elementwise.load(o.state0, i, n)
            average = previous + (after - previous) * c.mu
        } else {
            average = after
        }
        Elementwise.store(average, o.state0, i, n)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: FloatVector())
    }
}

extension ASGDRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "ASGD",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.ASGD",
                         paper: "Polyak & Juditsky, 1992, \"Acceleration of Stochastic Approximation by Averaging\", SIAM J. Control Optim. 30(4)"),
        suggested: ["lr": .number(0.05)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(1e-3)])),
        benchmark: .init(configuration: .init(name: name, hyperparameters: ["t0": .number(0)]),
                         reference: .kernel(symbol: "asgd", stateBuffers: 1, coefficients: [1 - 1e-6, -1e-2, 0.01])))
}
