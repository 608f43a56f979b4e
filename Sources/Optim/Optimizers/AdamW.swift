/// AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, matching
/// `torch.optim.AdamW` step for step.
///
/// ```
/// p ← p·(1 − lr·λ)
/// m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  v̂ ← max(v̂, v) if amsgrad
/// p ← p − lr/(1 − β1ᵗ) · m / (√v̂ / √(1 − β2ᵗ) + ε)
/// ```
/// The decay is scaled by the *current* learning rate; ``DecoupledAdamW`` (composer) scales it
/// by the schedule only. Defaults: `lr` 1e-3, `betas` (0.9, 0.999), `eps` 1e-8,
/// `weight_decay` 1e-2. Reference: `torch.optim.AdamW`; paper: arXiv:1711.05101.
public typealias AdamW = GradientOptimizer<AdamWRule>

/// The update rule of ``AdamW``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdamWRule: AdamVariant {
    /// The registry name.
    public static let name = "adamw"
    public static let defaultBetas = Betas(0.9, 0.999)
    public static let defaultWeightDecay = 1e-2
    public static let supportsMaximize = true
    /// float32, bfloat16, bitsandbytes' 8-bit blockwise state (`state_dtype` "int8", as its `AdamW8bit`) or torchao's 4-bit state ("int4", as its `AdamW4bit`).
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8, .int4]

    public static func coefficients(_ h: AdamHyperparameters<Self>, initialLearningRate: Double, step: Int) -> AdamCoefficients {
        let decay: Double? = h.weightDecay != 0 ? 1 - h.learningRate * h.weightDecay : nil
        return h.coefficients(step: step, lerpFirstMoment: true, decay: decay, l2: 0)
    }
}

extension AdamWRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "AdamW",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.AdamW",
                         paper: "Loshchilov & Hutter, 2019, \"Decoupled Weight Decay Regularization\", arXiv:1711.05101"),
        suggested: ["lr": .number(2e-3)],
        samples: .adaptive(name, ["weight_decay": .number(0)]),
        benchmark: .init(configuration: .init(name: name), reference: .adamKernel))
}
