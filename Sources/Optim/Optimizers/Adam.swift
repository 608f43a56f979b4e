/// Adam (Kingma & Ba, 2015), matching `torch.optim.Adam` step for step.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p  (L2 weight decay)
/// m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  v̂ ← max(v̂, v) if amsgrad
/// p ← p − lr/(1 − β1ᵗ) · m / (√v̂ / √(1 − β2ᵗ) + ε)
/// ```
/// Defaults: `lr` 1e-3, `betas` (0.9, 0.999), `eps` 1e-8, `weight_decay` 0 (L2).
/// State: `exp_avg`, `exp_avg_sq` (+ `max_exp_avg_sq` with amsgrad): 8–12 bytes per parameter.
/// Reference: `torch.optim.Adam`; papers: arXiv:1412.6980, AMSGrad arXiv:1904.09237.
public typealias Adam = GradientOptimizer<AdamRule>

/// The update rule of ``Adam``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdamRule: AdamVariant {
    /// The registry name.
    public static let name = "adam"
    public static let defaultBetas = Betas(0.9, 0.999)
    public static let defaultWeightDecay = 0.0
    public static let supportsMaximize = true
    /// float32, bfloat16, bitsandbytes' 8-bit blockwise state (`state_dtype` "int8", as its `Adam8bit`) or torchao's 4-bit state ("int4", as its `Adam4bit`).
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8, .int4]

    public static func coefficients(_ h: AdamHyperparameters<Self>, initialLearningRate: Double, step: Int) -> AdamCoefficients {
        h.coefficients(step: step, lerpFirstMoment: true, decay: nil, l2: h.weightDecay)
    }
}

extension AdamRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Adam",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.Adam",
                         paper: "Kingma & Ba, 2015, \"Adam: A Method for Stochastic Optimization\", arXiv:1412.6980; AMSGrad: Reddi, Kale & Kumar, 2018, arXiv:1904.09237"),
        suggested: ["lr": .number(2e-3)],
        samples: .adaptive(name),
        benchmark: .init(configuration: .init(name: name), reference: .adamKernel))
}
