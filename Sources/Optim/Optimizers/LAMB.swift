import Foundation

/// LAMB (You et al., 2020): Adam's direction plus decoupled weight decay, rescaled per tensor by
/// the trust ratio ‖p‖/‖u‖, so every layer moves by about `lr` times its own norm — matching
/// `optax.lamb` step for step.
///
/// With `t` the parameter's own step count (1 on its first update):
/// ```
/// m ← (1 − β1)·g + β1·m;   v ← (1 − β2)·g² + β2·v
/// u = (m/(1 − β1ᵗ)) / (√(v/(1 − β2ᵗ) + ε_root) + ε) + λ·p
/// r = ‖p‖ / ‖u‖   (Frobenius norms over the whole tensor; 1 when either is 0)
/// p ← p + (u·r)·(−lr)
/// ```
/// The bias corrections are computed in Double (optax's float32 `pow` is not correctly rounded;
/// the Double values are the exact ones it approximates).
///
/// Defaults: `b1` 0.9, `b2` 0.999, `eps` 1e-6, `eps_root` 0, `weight_decay` 0. `optax.lamb` has
/// no default learning rate; `lr` defaults to 1e-3 here (the example tasks suggest 1e-2: the
/// trust ratio makes it a relative step). State: `mu` and `nu` (optax's names; the count is the parameter's step count) — 8 bytes
/// per parameter.
///
/// Each tensor is updated whole, in two passes spread over the thread pool in fixed chunks (so
/// the norms, summed in chunk order, do not depend on the thread count): the first updates `m`
/// and `v` and sums ‖p‖² and ‖u‖² (`u` recomputed, never stored; reads p, g, m, v and writes m, v:
/// 24 bytes per parameter), the second recomputes `u` from the new `m` and `v` and writes `p`
/// (reads p, m, v, writes p: 16 bytes) — 40 bytes per parameter a step. ZeRO-1 sharding, which
/// splits tensors, does not take it.
///
/// Reference: `optax.lamb` (optax 0.2.8); paper: arXiv:1904.00962.
public typealias LAMB = GradientOptimizer<LAMBRule>

/// The update rule of ``LAMB``: its hyperparameters, state, per-step coefficients and kernel.
public enum LAMBRule: TensorPassRule {
    /// The registry name.
    public static let name = "lamb"

    /// The hyperparameters of ``LAMB``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// No default in optax; 1e-3 here.
        public var learningRate: Double
        /// β1, the first moment's decay (optax `b1`).
        public var beta1: Double
        /// β2, the second moment's decay (optax `b2`).
        public var beta2: Double
        /// ε, added to the root of the second moment.
        public var eps: Double
        /// ε_root, added to the second moment inside the root.
        public var epsRoot: Double
        /// Decoupled decay, `λ·p` added to the update before the trust ratio.
        public var weightDecay: Double

        /// The hyperparameters; those not written keep the defaults listed on ``LAMB``.
        public init(learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-6, epsRoot: Double = 0,
                    weightDecay: Double = 0) {
            self.learningRate = learningRate
            self.beta1 = beta1
            self.beta2 = beta2
            self.eps = eps
            self.epsRoot = epsRoot
            self.weightDecay = weightDecay
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      beta1: try reader.number("b1", default: d.beta1),
                      beta2: try reader.number("b2", default: d.beta2),
                      eps: try reader.number("eps", default: d.eps),
                      epsRoot: try reader.number("eps_root", default: d.epsRoot),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "b1": .number(beta1), "b2": .number(beta2), "eps": .number(eps),
             "eps_root": .number(epsRoot), "weight_decay": .number(weightDecay)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            guard beta1 >= 0, beta1 < 1 else { throw Validate.fail(name, "beta1 (b1)", beta1, "a number in [0, 1)") }
            guard beta2 >= 0, beta2 < 1 else { throw Validate.fail(name, "beta2 (b2)", beta2, "a number in [0, 1)") }
            try Validate.nonNegative(eps, "eps", name)
            try Validate.nonNegative(epsRoot, "epsRoot (eps_root)", name)
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``LAMB``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var beta1: Float
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        /// 1 − β1ᵗ.
        @usableFromInline var correction1: Float
        /// 1 − β2ᵗ.
        @usableFromInline var correction2: Float
        @usableFromInline var eps: Float
        @usableFromInline var epsRoot: Float
        @usableFromInline var weightDecay: Float
        @usableFromInline var negativeLearningRate: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["mu", "nu"] }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let t = Double(step)
        return Coefficients(beta1: Float(h.beta1), oneMinusBeta1: Float(1 - h.beta1), beta2: Float(h.beta2), oneMinusBeta2: Float(1 - h.beta2),
                            correction1: Float(1 - pow(h.beta1, t)), correction2: Float(1 - pow(h.beta2, t)),
                            eps: Float(h.eps), epsRoot: Float(h.epsRoot), weightDecay: Float(h.weightDecay),
                            negativeLearningRate: Float(-h.learningRate))
    }

    /// The update before the trust ratio, from the new moments and the parameter.
    @_transparent @usableFromInline
    static func direction(m: FloatVector, v: FloatVector, p: FloatVector, _ c: Coefficients) -> FloatVector {
        let u = (m / c.correction1) / (Elementwise.squareRoot(v / c.correction2 + c.epsRoot) + c.eps)
        return c.weightDecay != 0 ? u + c.weightDecay * p : u
    }

    /// Pass 0: the moments, and the sums of squares of p and u. Pass 1 (`pass.scalar` the trust
    /// ratio): u again, from the moments just stored, and the step.
    @_transparent
    public static func passVector(_ index: Int, _ collecting: Bool, _ o: KernelOperands, _ i: Int, _ lanes: Int,
                                  _ c: Coefficients, _ pass: TensorPass, _ sums: inout PassSums) {
        if index == 0 {
            let g = Elementwise.gradient(o, i, lanes)
            let m = c.oneMinusBeta1 * g + c.beta1 * Elementwise.load(o.state0, i, lanes)
            let v = c.oneMinusBeta2 * (g * g) + c.beta2 * Elementwise.load(o.state1, i, lanes)
            Elementwise.store(m, o.state0, i, lanes)
            Elementwise.store(v, o.state1, i, lanes)
            let p = Elementwise.load(o.parameter, i, lanes)
            sums.addSquares(p, direction(m: m, v: v, p: p, c), lanes: lanes)
        } else {
            let m = Elementwise.load(o.state0, i, lanes), v = Elementwise.load(o.state1, i, lanes)
            let before = Elementwise.load(o.parameter, i, lanes)
            let after = before + (direction(m: m, v: v, p: before, c) * pass.scalar) * c.negativeLearningRate
            Elementwise.store(after, o.parameter, i, lanes)
            if collecting {
                sums.addMetrics(UpdateLanes(before: before, after: after, gradient: Elementwise.gradient(o, i, lanes), moment: m), count: lanes)
            }
        }
    }

    public static func updateTensor(_ o: KernelOperands, shape: [Int], _ c: Coefficients, kernels: RuleKernels<Coefficients>, pool: ThreadPool,
                                    collectingMetrics: Bool) -> MetricAccumulator {
        guard o.count > 0 else { return MetricAccumulator() }
        let sums = TensorPasses.run(kernels, o, c, TensorPass(index: 0, rank: shape.count), pool: pool)
        let ratio = trustRatio(parameterSquares: sums.first, updateSquares: sums.second, trustCoefficient: 1, eps: 0)
        return TensorPasses.run(kernels, o, c, TensorPass(index: 1, rank: shape.count, scalar: ratio, collectingMetrics: collectingMetrics),
                                pool: pool).metrics
    }
}

extension LAMBRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "LAMB",
        reference: .init(library: "optax", version: "0.2.8", symbol: "optax.lamb",
                         paper: "You et al., 2020, \"Large Batch Optimization for Deep Learning: Training BERT in 76 minutes\", arXiv:1904.00962"),
        suggested: ["lr": .number(1e-2)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.02)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "lamb", stateBuffers: 2, coefficients: [0.9, 0.1, 0.999, 1e-3, 1, 1, 1e-6, 0, 0, -1e-3])))
}
