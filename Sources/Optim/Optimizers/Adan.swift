import Foundation

/// Adan, the adaptive Nesterov momentum method (Xie et al., 2022), matching `optax.adan` step for
/// step.
///
/// ```
/// d ← g − g_prev (0 on a parameter's first step)
/// m ← (1 − β1)·g + β1·m;  v ← (1 − β2)·d + β2·v;  n ← (1 − β3)·(g + (1 − β2)·d)² + β3·n
/// u ← (m/(1 − β1ᵗ) + (1 − β2)·v/(1 − β2ᵗ)) / (sqrt(n/(1 − β3ᵗ) + ε_root) + ε)
/// p ← p − lr·(u + λ·p);  g_prev ← g
/// ```
/// Weight decay is added to the update (AdamW style, as optax does), not the paper's proximal
/// division by 1 + lr·λ. Defaults (optax's): `b1` 0.98, `b2` 0.92, `b3` 0.99, `eps` 1e-8,
/// `eps_root` 1e-8, `weight_decay` 0; optax has no default learning rate, this library's is
/// 1e-3. State: `m`, `v`, `n`, `g` (the previous gradient; 16 bytes per parameter). Reference:
/// `optax.adan` 0.2.8; paper: arXiv:2208.06677.
public typealias Adan = GradientOptimizer<AdanRule>

/// The update rule of ``Adan``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdanRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "adan"

    /// The hyperparameters of ``Adan``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// β1, the gradient average's decay (optax `b1`).
        public var b1: Double
        /// β2, the gradient-difference average's decay (optax `b2`).
        public var b2: Double
        /// β3, the second moment's decay (optax `b3`).
        public var b3: Double
        /// ε, added to the root in the denominator (optax `eps`).
        public var eps: Double
        /// Added inside the square root (optax `eps_root`).
        public var epsRoot: Double
        /// Decay added to the update, AdamW style.
        public var weightDecay: Double

        /// The hyperparameters; those not written keep the defaults listed on ``Adan``.
        public init(learningRate: Double = 1e-3, b1: Double = 0.98, b2: Double = 0.92, b3: Double = 0.99, eps: Double = 1e-8,
                    epsRoot: Double = 1e-8, weightDecay: Double = 0) {
            self.learningRate = learningRate
            self.b1 = b1
            self.b2 = b2
            self.b3 = b3
            self.eps = eps
            self.epsRoot = epsRoot
            self.weightDecay = weightDecay
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      b1: try reader.number("b1", default: d.b1), b2: try reader.number("b2", default: d.b2),
                      b3: try reader.number("b3", default: d.b3), eps: try reader.number("eps", default: d.eps),
                      epsRoot: try reader.number("eps_root", default: d.epsRoot),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "b1": .number(b1), "b2": .number(b2), "b3": .number(b3), "eps": .number(eps),
             "eps_root": .number(epsRoot), "weight_decay": .number(weightDecay)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            for (label, beta) in [("b1", b1), ("b2", b2), ("b3", b3)] where !(beta >= 0 && beta < 1) {
                throw Validate.fail(name, label, beta, "a number in [0, 1)")
            }
            try Validate.nonNegative(eps, "eps", name)
            try Validate.nonNegative(epsRoot, "epsRoot (eps_root)", name)
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``Adan``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var b1: Float
        @usableFromInline var oneMinusB1: Float
        @usableFromInline var b2: Float
        @usableFromInline var oneMinusB2: Float
        @usableFromInline var b3: Float
        @usableFromInline var oneMinusB3: Float
        @usableFromInline var biasCorrection1: Float
        @usableFromInline var biasCorrection2: Float
        @usableFromInline var biasCorrection3: Float
        @usableFromInline var epsRoot: Float
        @usableFromInline var eps: Float
        @usableFromInline var weightDecay: Float
        @usableFromInline var negativeLearningRate: Float
        /// Whether this is the parameter's first step (no previous gradient: the difference is 0).
        @usableFromInline var first: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["m", "v", "n", "g"] }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        // optax computes 1 − bᵗ in float32 with XLA's pow (not correctly rounded); double, rounded
        // once, lands within the fixtures' tolerance (tools/reference/README.md).
        func correction(_ b: Double) -> Float { Float(1 - pow(Double(Float(b)), Double(step))) }
        return Coefficients(b1: Float(h.b1), oneMinusB1: Float(1 - h.b1), b2: Float(h.b2), oneMinusB2: Float(1 - h.b2),
                            b3: Float(h.b3), oneMinusB3: Float(1 - h.b3),
                            biasCorrection1: correction(h.b1), biasCorrection2: correction(h.b2), biasCorrection3: correction(h.b3),
                            epsRoot: Float(h.epsRoot), eps: Float(h.eps), weightDecay: Float(h.weightDecay),
                            negativeLearningRate: Float(-h.learningRate), first: step == 1)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let difference = c.first ? FloatVector(repeating: 0) : gradient - Elementwise.load(o.state3, i, n)
        let m = c.oneMinusB1 * gradient + c.b1 * Elementwise.load(o.state0, i, n)
        let v = c.oneMinusB2 * difference + c.b2 * Elementwise.load(o.state1, i, n)
        let corrected = gradient + c.oneMinusB2 * difference
        let second = c.oneMinusB3 * (corrected * corrected) + c.b3 * Elementwise.load(o.state2, i, n)
        Elementwise.store(m, o.state0, i, n)
        Elementwise.store(v, o.state1, i, n)
        Elementwise.store(second, o.state2, i, n)
        Elementwise.store(gradient, o.state3, i, n)
        let numerator = m / c.biasCorrection1 + c.oneMinusB2 * (v / c.biasCorrection2)
        var u = numerator / (Elementwise.squareRoot(second / c.biasCorrection3 + c.epsRoot) + c.eps)
        u = u + c.weightDecay * before
        let after = before + u * c.negativeLearningRate
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: m)
    }
}

extension AdanRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Adan",
        reference: .init(library: "optax", version: "0.2.8", symbol: "optax.adan",
                         paper: "Xie, Zhou, Li, Lin & Yan, 2022, \"Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models\", arXiv:2208.06677"),
        suggested: ["lr": .number(1e-3)],
        samples: .adaptive(name),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "adan", stateBuffers: 4,
                                            coefficients: [0.98, 0.02, 0.92, 0.08, 0.99, 0.01, 1, 1, 1, 1e-8, 1e-8, 0, -1e-3])))
}
