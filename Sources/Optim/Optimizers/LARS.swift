import Foundation

/// LARS (You, Gitman & Ginsburg, 2017): SGD with momentum whose step for each tensor is scaled by
/// a layer-wise trust ratio `tc·‖p‖/‖g + λ·p‖` — matching `optax.lars` step for step.
///
/// ```
/// u = g + λ·p
/// r = tc·‖p‖ / (‖u‖ + ε)   (Frobenius norms over the whole tensor; 1 when either is 0)
/// u ← (u·r)·(−lr)
/// b ← u + μ·b;   p ← p + b,   or with nesterov  p ← p + u + μ·b
/// ```
/// The learning rate is applied before the momentum buffer (optax's chain ends with `trace`), so
/// a learning-rate change does not rescale what the buffer already holds.
///
/// Defaults: `weight_decay` 0, `trust_coefficient` 0.001, `eps` 0, `momentum` 0.9, `nesterov`
/// false. `optax.lars` has no default learning rate; `lr` defaults to 1 here (with the trust
/// coefficient, a step moves a tensor by about `lr·tc` = 0.1 % of its norm). State: `trace`
/// (optax's momentum buffer) — 4 bytes per parameter.
///
/// Each tensor is updated whole, in two passes spread over the thread pool in fixed chunks (so
/// the norms, summed in chunk order, do not depend on the thread count): the first sums ‖p‖² and
/// ‖u‖² (reads p and g: 8 bytes per parameter), the second recomputes `u` and updates the buffer
/// and the parameter (reads p, g, b, writes b, p: 20 bytes) — 28 bytes per parameter a step.
/// ZeRO-1 sharding, which splits tensors, does not take it.
///
/// Reference: `optax.lars` (optax 0.2.8); paper: arXiv:1708.03888.
public typealias LARS = GradientOptimizer<LARSRule>

/// The update rule of ``LARS``: its hyperparameters, state, per-step coefficients and kernel.
public enum LARSRule: TensorPassRule {
    /// The registry name.
    public static let name = "lars"

    /// The hyperparameters of ``LARS``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// No default in optax; 1 here.
        public var learningRate: Double
        /// λ, added to the gradient (`g + λ·p`) before the trust ratio.
        public var weightDecay: Double
        /// tc, the factor on the trust ratio.
        public var trustCoefficient: Double
        /// ε, added to the update's norm in the trust ratio.
        public var eps: Double
        /// μ, the decay of the momentum buffer `trace` (optax `momentum`).
        public var momentum: Double
        /// Nesterov momentum: `p ← p + u + μ·b` instead of `p ← p + b` (optax `nesterov`).
        public var nesterov: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``LARS``.
        public init(learningRate: Double = 1, weightDecay: Double = 0, trustCoefficient: Double = 0.001, eps: Double = 0,
                    momentum: Double = 0.9, nesterov: Bool = false) {
            self.learningRate = learningRate
            self.weightDecay = weightDecay
            self.trustCoefficient = trustCoefficient
            self.eps = eps
            self.momentum = momentum
            self.nesterov = nesterov
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      trustCoefficient: try reader.number("trust_coefficient", default: d.trustCoefficient),
                      eps: try reader.number("eps", default: d.eps),
                      momentum: try reader.number("momentum", default: d.momentum),
                      nesterov: try reader.bool("nesterov", default: d.nesterov))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "weight_decay": .number(weightDecay), "trust_coefficient": .number(trustCoefficient),
             "eps": .number(eps), "momentum": .number(momentum), "nesterov": .bool(nesterov)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.weightDecay(weightDecay, name)
            guard trustCoefficient.isFinite, trustCoefficient > 0 else {
                throw Validate.fail(name, "trustCoefficient (trust_coefficient)", trustCoefficient, "a finite number > 0")
            }
            try Validate.nonNegative(eps, "eps", name)
            guard momentum >= 0, momentum < 1 else { throw Validate.fail(name, "momentum", momentum, "a number in [0, 1)") }
        }
    }

    /// The scalars of one step of ``LARS``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var weightDecay: Float
        @usableFromInline var trustCoefficient: Float
        @usableFromInline var eps: Float
        @usableFromInline var momentum: Float
        @usableFromInline var nesterov: Bool
        @usableFromInline var negativeLearningRate: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["trace"] }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        Coefficients(weightDecay: Float(h.weightDecay), trustCoefficient: Float(h.trustCoefficient), eps: Float(h.eps),
                     momentum: Float(h.momentum), nesterov: h.nesterov, negativeLearningRate: Float(-h.learningRate))
    }

    /// `g + λ·p`, the update before the trust ratio.
    @_transparent @usableFromInline
    static func direction(g: FloatVector, p: FloatVector, _ c: Coefficients) -> FloatVector {
        c.weightDecay != 0 ? g + c.weightDecay * p : g
    }

    /// Pass 0: the sums of squares of p and u. Pass 1 (`pass.scalar` the trust ratio): u again,
    /// the momentum buffer and the step.
    @_transparent
    public static func passVector(_ index: Int, _ collecting: Bool, _ o: KernelOperands, _ i: Int, _ lanes: Int,
                                  _ c: Coefficients, _ pass: TensorPass, _ sums: inout PassSums) {
        if index == 0 {
            let p = Elementwise.load(o.parameter, i, lanes)
            sums.addSquares(p, direction(g: Elementwise.gradient(o, i, lanes), p: p, c), lanes: lanes)
        } else {
            let before = Elementwise.load(o.parameter, i, lanes)
            let g = Elementwise.gradient(o, i, lanes)
            let u = (direction(g: g, p: before, c) * pass.scalar) * c.negativeLearningRate
            let buffer = u + c.momentum * Elementwise.load(o.state0, i, lanes)
            Elementwise.store(buffer, o.state0, i, lanes)
            let after = before + (c.nesterov ? u + c.momentum * buffer : buffer)
            Elementwise.store(after, o.parameter, i, lanes)
            if collecting { sums.addMetrics(UpdateLanes(before: before, after: after, gradient: g, moment: buffer), count: lanes) }
        }
    }

    public static func updateTensor(_ o: KernelOperands, shape: [Int], _ c: Coefficients, kernels: RuleKernels<Coefficients>, pool: ThreadPool,
                                    collectingMetrics: Bool) -> MetricAccumulator {
        guard o.count > 0 else { return MetricAccumulator() }
        let sums = TensorPasses.run(kernels, o, c, TensorPass(index: 0, rank: shape.count), pool: pool)
        let ratio = trustRatio(parameterSquares: sums.first, updateSquares: sums.second,
                               trustCoefficient: c.trustCoefficient, eps: c.eps)
        return TensorPasses.run(kernels, o, c, TensorPass(index: 1, rank: shape.count, scalar: ratio, collectingMetrics: collectingMetrics),
                                pool: pool).metrics
    }
}

extension LARSRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "LARS",
        reference: .init(library: "optax", version: "0.2.8", symbol: "optax.lars",
                         paper: "You, Gitman & Ginsburg, 2017, \"Large Batch Training of Convolutional Networks\", arXiv:1708.03888"),
        suggested: ["lr": .number(3)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(10)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(1)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(1)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "lars", stateBuffers: 1, coefficients: [0, 1e-3, 0, 0.9, 0, -1])))
}
