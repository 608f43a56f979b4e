import Foundation

/// AdEMAMix (Pagliardini, Ablin & Grangier, 2024): Adam whose numerator mixes the usual fast
/// moment with a second, slow exponential moving average of the gradients (β3 close to 1), with
/// optional warm-ups of the mixing weight α and of β3 — matching bitsandbytes' 32-bit `AdEMAMix`
/// (its CPU path) step for step.
///
/// With `t` the parameter's own step count (1 on its first update):
/// ```
/// α_t = min(t·α/t_alpha, α)                        if t_alpha (else α)
/// β3_t = min(exp(ln β1·ln β3 / ((1 − s)·ln β3 + s·ln β1)), β3),  s = t/t_beta3
///                                                   if t_beta3 (else β3)
/// m1 ← β1·m1 + (1 − β1)·g;   m2 ← β3_t·m2 + (1 − β3_t)·g;   ν ← β2·ν + (1 − β2)·g²
/// p ← p·(1 − lr·λ)                                  if λ > 0
/// p ← p − lr · (m1/(1 − β1ᵗ) + α_t·m2) / (√ν/√(1 − β2ᵗ) + ε)
/// ```
/// The bias corrections and both schedules are computed in Double; the slow moment `m2` is not
/// bias-corrected, and the decay uses the current learning rate (not `lr/initial_lr`), as in
/// bitsandbytes. `t_alpha` and `t_beta3` are off when `null` or 0.
///
/// Defaults: `lr` 1e-3, `betas` (0.9, 0.999, 0.9999), `alpha` 5, `t_alpha` null, `t_beta3` null,
/// `eps` 1e-8, `weight_decay` 0.01. State: `m1` and `m2` (bitsandbytes' `state1`, its two rows:
/// the fast and the slow moment) and `nu` (its `state2`, the second moment) — 12 bytes per
/// parameter; one step reads the parameter, the gradient and the three buffers and writes four
/// arrays (36 bytes per parameter). Reference: `bitsandbytes.optim.AdEMAMix` (0.50.2,
/// `optim_bits=32`); paper: arXiv:2409.03137.
public typealias AdEMAMix = GradientOptimizer<AdEMAMixRule>

/// AdEMAMix's three decay rates (β1, β2, β3), in dictionaries bitsandbytes' `betas` list of three.
public struct AdEMAMixBetas: Sendable, Hashable, CustomStringConvertible {
    /// β1, the fast first moment's decay.
    public var first: Double
    /// β2, the second moment's decay.
    public var second: Double
    /// β3, the slow first moment's decay (its final value when `t_beta3` warms it up).
    public var third: Double

    /// The decay rates β1, β2 and β3.
    public init(_ first: Double, _ second: Double, _ third: Double) {
        self.first = first
        self.second = second
        self.third = third
    }

    var list: [Double] { [first, second, third] }
    /// `(β1, β2, β3)`.
    public var description: String { "(\(first), \(second), \(third))" }
}

/// The update rule of ``AdEMAMix``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdEMAMixRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "ademamix"
    /// float32, bfloat16 state (`state_dtype` "bfloat16") or bitsandbytes' 8-bit blockwise state
    /// ("int8", as its `AdEMAMix8bit`).
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]

    /// The hyperparameters of ``AdEMAMix``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `betas`: β1, β2 and β3, the decays of the fast moment, the second moment and the slow moment.
        public var betas: AdEMAMixBetas
        /// α, the weight of the slow moment in the numerator (its final value under `t_alpha`).
        public var alpha: Double
        /// Steps over which α ramps up linearly from 0; `nil` (or 0) for none.
        public var alphaWarmup: Double?
        /// Steps over which β3 rises from β1 to its value; `nil` (or 0) for none.
        public var beta3Warmup: Double?
        /// `eps`, added to the bias-corrected `√ν` in the denominator.
        public var eps: Double
        /// Decoupled decay, `p ← p·(1 − lr·λ)`.
        public var weightDecay: Double
        /// The state format (`state_dtype`): float32, or bfloat16 (``StateDType/bfloat16``).
        public var statePrecision: StatePrecision

        /// The hyperparameters; those not written keep the defaults listed on ``AdEMAMix``.
        public init(learningRate: Double = 1e-3, betas: AdEMAMixBetas = .init(0.9, 0.999, 0.9999), alpha: Double = 5,
                    alphaWarmup: Double? = nil, beta3Warmup: Double? = nil, eps: Double = 1e-8, weightDecay: Double = 0.01,
                    statePrecision: StatePrecision = .float32) {
            self.learningRate = learningRate
            self.betas = betas
            self.alpha = alpha
            self.alphaWarmup = alphaWarmup
            self.beta3Warmup = beta3Warmup
            self.eps = eps
            self.weightDecay = weightDecay
            self.statePrecision = statePrecision
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            let betas = try reader.numbers("betas", count: 3, default: d.betas.list)
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: AdEMAMixBetas(betas[0], betas[1], betas[2]),
                      alpha: try reader.number("alpha", default: d.alpha),
                      alphaWarmup: try reader.optionalNumber("t_alpha", default: d.alphaWarmup),
                      beta3Warmup: try reader.optionalNumber("t_beta3", default: d.beta3Warmup),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      statePrecision: try StatePrecision(reading: &reader, supported: AdEMAMixRule.stateDTypes))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            var result: HyperparameterDictionary = [
                "lr": .number(learningRate), "betas": .numbers(betas.list), "alpha": .number(alpha),
                "t_alpha": alphaWarmup.map { .number($0) } ?? .null, "t_beta3": beta3Warmup.map { .number($0) } ?? .null,
                "eps": .number(eps), "weight_decay": .number(weightDecay)]
            statePrecision.write(into: &result)
            return result
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            for (index, beta) in betas.list.enumerated() {
                guard beta >= 0, beta < 1 else { throw Validate.fail(name, "betas.\(index) (betas[\(index)])", beta, "a number in [0, 1)") }
            }
            try Validate.nonNegative(alpha, "alpha", name)
            if let alphaWarmup { try Validate.nonNegative(alphaWarmup, "alphaWarmup (t_alpha)", name) }
            if let beta3Warmup { try Validate.nonNegative(beta3Warmup, "beta3Warmup (t_beta3)", name) }
            try Validate.nonNegative(eps, "eps", name)
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``AdEMAMix``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var beta1: Float
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var beta3: Float
        @usableFromInline var oneMinusBeta3: Float
        @usableFromInline var alpha: Float
        /// 1 − β1ᵗ.
        @usableFromInline var correction1: Float
        /// √(1 − β2ᵗ).
        @usableFromInline var correction2: Float
        @usableFromInline var eps: Float
        /// 1 − lr·λ.
        @usableFromInline var decay: Float
        @usableFromInline var applyDecay: Bool
        @usableFromInline var negativeLearningRate: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["m1", "m2", "nu"] }

    /// `m1` and `m2` on the signed map, `nu` on the unsigned one (bitsandbytes' `AdEMAMix8bit`:
    /// `state1` holds both averages, quantized with `qmap1`; `state2` with `qmap2`).
    public static func quantizationMaps(_ h: Hyperparameters) -> [DynamicQuantizationMap] { [.signed, .signed, .unsigned] }

    /// The 8-bit update, block by block, in bitsandbytes' order of operations (its CPU
    /// `_optimizer_update_8bit_blockwise_cpu`, "ademamix"), each value in float32:
    /// `m1 ← fma(g, 1 − β1, m1·β1)`, `m2 ← fma(g, 1 − β3, m2·β3)`, `ν ← fma((1 − β2)·g, g, ν·β2)`,
    /// `u ← (m1 / (1 − β1ᵗ) + α·m2) / (√ν / √(1 − β2ᵗ) + ε)`, `p ← p·(1 − lr·λ)` when λ > 0,
    /// `p ← fma(u, −lr, p)`; then the three buffers requantized.
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        BlockwiseQuantization.run(QuantizedAdEMAMixKernel.self, o, range, c, map0: .signed, map1: .signed, map2: .unsigned,
                                  collectingMetrics: collectingMetrics)
    }

    /// α at step `t` (bitsandbytes' `alpha_t`; a linear warm-up when `t_alpha` is set).
    static func alpha(_ h: Hyperparameters, step: Int) -> Double {
        guard let warmup = h.alphaWarmup, warmup != 0 else { return h.alpha }
        return min(Double(step) * h.alpha / warmup, h.alpha)
    }

    /// β3 at step `t` (bitsandbytes' `beta3_t`; rises from β1 to β3 over `t_beta3` steps).
    static func beta3(_ h: Hyperparameters, step: Int) -> Double {
        guard let warmup = h.beta3Warmup, warmup != 0 else { return h.betas.third }
        let s = Double(step) / warmup
        let logBeta1 = log(h.betas.first), logBeta3 = log(h.betas.third)
        return min(exp(logBeta1 * logBeta3 / ((1 - s) * logBeta3 + s * logBeta1)), h.betas.third)
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let t = Double(step), beta3 = beta3(h, step: step)
        return Coefficients(beta1: Float(h.betas.first), oneMinusBeta1: Float(1 - h.betas.first),
                            beta2: Float(h.betas.second), oneMinusBeta2: Float(1 - h.betas.second),
                            beta3: Float(beta3), oneMinusBeta3: Float(1 - beta3), alpha: Float(alpha(h, step: step)),
                            correction1: Float(1 - pow(h.betas.first, t)), correction2: Float((1 - pow(h.betas.second, t)).squareRoot()),
                            eps: Float(h.eps), decay: Float(1 - h.learningRate * h.weightDecay), applyDecay: h.weightDecay > 0,
                            negativeLearningRate: Float(-h.learningRate))
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let g = Elementwise.gradient(o, i, n)
        // bitsandbytes: mul_(β).add_(g, alpha=1 − β), and addcmul_(g, g, value=1 − β2).
        let m1 = Elementwise.load(o.state0, i, n) * c.beta1 + c.oneMinusBeta1 * g
        let m2 = Elementwise.load(o.state1, i, n) * c.beta3 + c.oneMinusBeta3 * g
        let nu = Elementwise.load(o.state2, i, n) * c.beta2 + c.oneMinusBeta2 * g * g
        Elementwise.store(m1, o.state0, i, n)
        Elementwise.store(m2, o.state1, i, n)
        Elementwise.store(nu, o.state2, i, n)
        let decayed = c.applyDecay ? before * c.decay : before
        let mixed = m1 / c.correction1 + c.alpha * m2
        let adaptive = Elementwise.squareRoot(nu) / c.correction2 + c.eps
        let after = decayed + c.negativeLearningRate * (mixed / adaptive)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: g, moment: m1)
    }
}

/// One vector of the 8-bit AdEMAMix update (``AdEMAMixRule/updateQuantized(_:_:_:collectingMetrics:)``),
/// in bitsandbytes' order of operations.
@usableFromInline
enum QuantizedAdEMAMixKernel: QuantizedVectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: AdEMAMixRule.Coefficients,
                             _ m1: inout FloatVector, _ m2: inout FloatVector, _ nu: inout FloatVector) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let g = Elementwise.gradient(o, i, n)
        m1 = Elementwise.fusedMultiplyAdd(g, FloatVector(repeating: c.oneMinusBeta1), m1 * c.beta1)
        m2 = Elementwise.fusedMultiplyAdd(g, FloatVector(repeating: c.oneMinusBeta3), m2 * c.beta3)
        nu = Elementwise.fusedMultiplyAdd(c.oneMinusBeta2 * g, g, nu * c.beta2)
        let update = (m1 / c.correction1 + c.alpha * m2) / (Elementwise.squareRoot(nu) / c.correction2 + c.eps)
        let decayed = c.applyDecay ? before * c.decay : before
        let after = Elementwise.fusedMultiplyAdd(update, FloatVector(repeating: c.negativeLearningRate), decayed)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: g, moment: m1)
    }
}

extension AdEMAMixRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "AdEMAMix",
        reference: .init(library: "bitsandbytes", version: "0.50.2", symbol: "bitsandbytes.optim.AdEMAMix (optim_bits=32)",
                         paper: "Pagliardini, Ablin & Grangier, 2024, \"The AdEMAMix Optimizer: Better, Faster, Older\", arXiv:2409.03137"),
        suggested: ["lr": .number(1e-3)],
        samples: .adaptive(name),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "ademamix", stateBuffers: 3,
                                            coefficients: [0.9, 0.1, 0.999, 1e-3, 0.9999, 1e-4, 5, 1, 1, 1e-8, 1 - 1e-5, -1e-3])))
}
