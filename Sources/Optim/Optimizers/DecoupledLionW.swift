/// `DecoupledLionW` (MosaicML LLM Foundry): Lion whose weight decay follows the learning-rate schedule but is
/// not scaled by the learning rate, as composer's ``DecoupledAdamW`` does for Adam.
///
/// ```
/// p ← p·(1 − (lr/lr₀)·λ)               (lr₀: the group's initial learning rate; skipped if λ = 0)
/// p ← p − lr·sign(lerp(m, g, 1 − β1))
/// m ← lerp(m, g, 1 − β2)
/// ```
/// `weightDecay` is the fraction of each weight removed per step at the peak learning rate; a
/// warning is logged for `weightDecay >= 1e-3`, as the reference does. Defaults: `lr` 1e-4,
/// `betas` (0.9, 0.99), `weight_decay` 0. Reference: `llmfoundry.optim.DecoupledLionW`
/// (MosaicML); Lion paper: arXiv:2302.06675.
public typealias DecoupledLionW = GradientOptimizer<DecoupledLionWRule>

/// The update rule of ``DecoupledLionW``: its hyperparameters, state, per-step coefficients and kernel.
public enum DecoupledLionWRule: LionVariant, VectorKernel {
    /// float32, or bfloat16 state (`state_dtype` "bfloat16").
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]
    /// The registry name.
    public static let name = "decoupled_lionw"

    /// The scalars of one step of ``DecoupledLionW``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var applyDecay: Bool
        @usableFromInline var decay: Float
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var lerpComplement1: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var lerpComplement2: Float
        @usableFromInline var negativeLearningRate: Float
    }

    public static func coefficients(_ h: LionHyperparameters<Self>, initialLearningRate: Double, step: Int) -> Coefficients {
        let weight1 = Float(1 - h.betas.first), weight2 = Float(1 - h.betas.second)
        return Coefficients(
            applyDecay: h.weightDecay != 0,
            decay: Float(1 - decoupledDecayFactor(h.learningRate, initialLearningRate) * h.weightDecay),
            oneMinusBeta1: weight1, lerpComplement1: 1 - weight1, oneMinusBeta2: weight2, lerpComplement2: 1 - weight2,
            negativeLearningRate: Float(-h.learningRate))
    }

    public static func advise(_ h: LionHyperparameters<Self>) { warnIfLargeDecoupledDecay(h.weightDecay, optimizer: "DecoupledLionW") }

    /// `exp_avg` on the signed map, as bitsandbytes' one-state optimizers keep it.
    public static func quantizationMaps(_ h: LionHyperparameters<Self>) -> [DynamicQuantizationMap] { [.signed] }

    /// 8-bit state (`state_dtype` "int8"): bitsandbytes has no 8-bit form of this optimizer, so
    /// its own float32 kernel runs on the state dequantized block by block and the new state is
    /// quantized with bitsandbytes' blockwise quantizer
    /// (``BlockwiseQuantization/runFloatKernel(_:_:_:_:map0:map1:collectingMetrics:)``).
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        BlockwiseQuantization.runFloatKernel(Self.self, o, range, c, map0: .signed, map1: nil, collectingMetrics: collectingMetrics)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        var p = before
        if c.applyDecay { p = p * c.decay }
        let g = Elementwise.gradient(o, i, n)
        var m = Elementwise.load(o.state0, i, n)
        let direction = Elementwise.lerp(m, g, weight: c.oneMinusBeta1, oneMinusWeight: c.lerpComplement1)
        p = p + c.negativeLearningRate * Elementwise.sign(direction)
        m = Elementwise.lerp(m, g, weight: c.oneMinusBeta2, oneMinusWeight: c.lerpComplement2)
        Elementwise.store(p, o.parameter, i, n)
        Elementwise.store(m, o.state0, i, n)
        return UpdateLanes(before: before, after: p, gradient: g, moment: m)
    }
}

extension DecoupledLionWRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "DecoupledLionW",
        reference: .init(library: "LLM Foundry", version: "(MosaicML)", symbol: "llmfoundry.optim.DecoupledLionW",
                         paper: "Chen et al., 2023, \"Symbolic Discovery of Optimization Algorithms\", arXiv:2302.06675"),
        suggested: ["lr": .number(5e-4), "weight_decay": .number(1e-5)],
        samples: .signBased(name),
        benchmark: .init(configuration: .init(name: name), reference: .lionKernel))
}
