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

public enum LionRule: LionVariant, VectorKernel {
    public static let name = "lion"

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
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Lion",
        reference: .init(library: "lion-pytorch", version: "0.2.5", symbol: "lion_pytorch.Lion (google/automl's reference code)",
                         paper: "Chen et al., 2023, \"Symbolic Discovery of Optimization Algorithms\", arXiv:2302.06675"),
        suggested: ["lr": .number(5e-4), "weight_decay": .number(0.1)],
        samples: .signBased(name),
        benchmark: .init(configuration: .init(name: name), reference: .lionKernel))
}
