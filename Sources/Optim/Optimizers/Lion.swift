/// Lion, "EvoLved Sign Momentum" (Chen et al., 2023), matching Google's reference code as
/// packaged by `lion-pytorch`.
///
/// ```
/// p ← p·(1 − lr·λ)
/// p ← p − lr·sign(β1·m + (1 − β1)·g)
/// m ← β2·m + (1 − β2)·g
/// ```
/// One state buffer (`exp_avg`, 4 bytes per parameter: half of AdamW's). Every element moves by
/// exactly `lr` (when λ = 0 and the interpolation is non-zero), so the update norm is larger than
/// Adam's: the paper advises a learning rate 3–10× smaller than AdamW's, with a weight decay
/// 3–10× larger to keep `lr·λ` the same. Defaults: `lr` 1e-4, `betas` (0.9, 0.99),
/// `weight_decay` 0. Paper: arXiv:2302.06675; reference: google/automl `lion_pytorch.py`.
public typealias Lion = GradientOptimizer<LionRule>

/// The update rule of ``Lion``: its hyperparameters, state, per-step coefficients and kernel.
public enum LionRule: LionVariant, VectorKernel {
    /// The registry name.
    public static let name = "lion"

    /// The scalars of one step of ``Lion``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var decay: Float
        @usableFromInline var beta1: Float
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var negativeLearningRate: Float
    }

    public static func coefficients(_ h: LionHyperparameters<Self>, initialLearningRate: Double, step: Int) -> Coefficients {
        Coefficients(decay: Float(1 - h.learningRate * h.weightDecay), beta1: Float(h.betas.first), oneMinusBeta1: Float(1 - h.betas.first),
                     beta2: Float(h.betas.second), oneMinusBeta2: Float(1 - h.betas.second), negativeLearningRate: Float(-h.learningRate))
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let g = Elementwise.gradient(o, i, n)
        var m = Elementwise.load(o.state0, i, n)
        let after = before * c.decay + c.negativeLearningRate * Elementwise.sign(m * c.beta1 + c.oneMinusBeta1 * g)
        m = m * c.beta2 + c.oneMinusBeta2 * g
        Elementwise.store(after, o.parameter, i, n)
        Elementwise.store(m, o.state0, i, n)
        return UpdateLanes(before: before, after: after, gradient: g, moment: m)
    }
}

extension LionRule {
    /// float32, or bitsandbytes' 8-bit blockwise state (`state_dtype` "int8", as its `Lion8bit`).
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]

    /// `exp_avg` on the signed map (bitsandbytes' `qmap1`).
    public static func quantizationMaps(_ h: LionHyperparameters<Self>) -> [DynamicQuantizationMap] { [.signed] }

    /// The 8-bit update, block by block, in bitsandbytes' order of operations (its CPU
    /// `_optimizer_update_8bit_blockwise_cpu`, "lion"), each value in float32:
    /// `p ← p·(1 − lr·λ)`, `p ← p − lr·sign(m·β1 + g·(1 − β1))`, `m ← fma(g, 1 − β2, m·β2)`
    /// (torch's `add_(alpha)` is a fused multiply-add on CPU); then the moment requantized.
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        BlockwiseQuantization.run(QuantizedLionKernel.self, o, range, c, map0: .signed, map1: nil, collectingMetrics: collectingMetrics)
    }
}

/// One vector of the 8-bit Lion update (``LionRule/updateQuantized(_:_:_:collectingMetrics:)``),
/// in bitsandbytes' order of operations.
@usableFromInline
enum QuantizedLionKernel: QuantizedVectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: LionRule.Coefficients,
                             _ m: inout FloatVector, _ unused: inout FloatVector, _ unused2: inout FloatVector) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let g = Elementwise.gradient(o, i, n)
        let after = before * c.decay + c.negativeLearningRate * Elementwise.sign(m * c.beta1 + g * c.oneMinusBeta1)
        m = Elementwise.fusedMultiplyAdd(g, FloatVector(repeating: c.oneMinusBeta2), m * c.beta2)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: g, moment: m)
    }
}

extension LionRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Lion",
        reference: .init(library: "lion-pytorch", version: "0.2.5", symbol: "lion_pytorch.Lion (google/automl's reference code)",
                         paper: "Chen et al., 2023, \"Symbolic Discovery of Optimization Algorithms\", arXiv:2302.06675"),
        suggested: ["lr": .number(5e-4), "weight_decay": .number(0.1)],
        samples: .signBased(name),
        benchmark: .init(configuration: .init(name: name), reference: .lionKernel))
}
