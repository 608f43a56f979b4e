/// composer's `DecoupledAdamW`: Adam whose weight decay follows the learning-rate *schedule*
/// but is not scaled by the learning rate itself.
///
/// ```
/// p ← p·(1 − (lr/lr₀)·λ)            (lr₀: the group's initial learning rate)
/// m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;  v̂ ← max(v̂, v) if amsgrad
/// p ← p − lr/(1 − β1ᵗ) · m / (√v̂ / √(1 − β2ᵗ) + ε)
/// ```
/// So `weightDecay` is exactly "each step, multiply weights by `1 − weightDecay`" at the peak
/// learning rate: use values ~lr times smaller than for ``AdamW`` (default 1e-5). A warning is
/// logged for `weightDecay >= 1e-3`, as composer does. Defaults: `lr` 1e-3, `betas` (0.9, 0.95),
/// `eps` 1e-8, `weight_decay` 1e-5. Reference: `composer.optim.DecoupledAdamW`.
public typealias DecoupledAdamW = GradientOptimizer<DecoupledAdamWRule>

/// The update rule of ``DecoupledAdamW``: its hyperparameters, state, per-step coefficients and kernel.
public enum DecoupledAdamWRule: AdamVariant {
    /// float32, or bfloat16 state (`state_dtype` "bfloat16").
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]
    /// The registry name.
    public static let name = "decoupled_adamw"
    public static let defaultBetas = Betas(0.9, 0.95)
    public static let defaultWeightDecay = 1e-5
    public static let supportsMaximize = false

    public static func coefficients(_ h: AdamHyperparameters<Self>, initialLearningRate: Double, step: Int) -> AdamCoefficients {
        let decay: Double? = h.weightDecay != 0 ? 1 - decoupledDecayFactor(h.learningRate, initialLearningRate) * h.weightDecay : nil
        return h.coefficients(step: step, lerpFirstMoment: false, decay: decay, l2: 0)
    }

    public static func advise(_ h: AdamHyperparameters<Self>) { warnIfLargeDecoupledDecay(h.weightDecay, optimizer: "DecoupledAdamW") }

    /// 8-bit state (`state_dtype` "int8"): bitsandbytes has no 8-bit form of this optimizer, so
    /// its own float32 kernel runs on the state dequantized block by block and the new state is
    /// quantized with bitsandbytes' blockwise quantizer
    /// (``BlockwiseQuantization/runFloatKernel(_:_:_:_:map0:map1:collectingMetrics:)``).
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: AdamCoefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        BlockwiseQuantization.runFloatKernel(AdamKernel<MultiplyAddMoment>.self, o, range, c, map0: .signed, map1: .unsigned,
                                             collectingMetrics: collectingMetrics)
    }
}

/// `lr / initial_lr`, or 1 when the initial learning rate is 0 — the references' decay factor.
func decoupledDecayFactor(_ learningRate: Double, _ initialLearningRate: Double) -> Double {
    initialLearningRate != 0 ? learningRate / initialLearningRate : 1
}

/// The warning composer and LLM Foundry give for a large decoupled weight decay.
func warnIfLargeDecoupledDecay(_ weightDecay: Double, optimizer: String) {
    guard weightDecay >= 1e-3 else { return }
    OptimLogging.logger.warning(
        "You are using a high value of `weight_decay=\(weightDecay)` for the `\(optimizer)` optimizer. Are you sure you want to do this? Your model's weights will be multiplied by \(1.0 - weightDecay) on every step!")
}

extension DecoupledAdamWRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "DecoupledAdamW",
        reference: .init(library: "composer", version: "0.32.1", symbol: "composer.optim.DecoupledAdamW",
                         paper: "Loshchilov & Hutter, 2019, \"Decoupled Weight Decay Regularization\", arXiv:1711.05101"),
        suggested: ["lr": .number(2e-3), "weight_decay": .number(1e-5)],
        samples: .adaptive(name, ["weight_decay": .number(0)]),
        benchmark: .init(configuration: .init(name: name), reference: .adamKernel))
}
