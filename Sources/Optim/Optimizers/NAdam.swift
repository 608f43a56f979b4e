import Foundation

/// NAdam (Dozat, 2016): Adam with Nesterov momentum and a momentum schedule, matching
/// `torch.optim.NAdam` step for step.
///
/// ```
/// p ← p·(1 − lr·λ) if decoupled_weight_decay, else g ← g + λ·p;   g ← −g if maximize
/// μt = β1·(1 − ½·0.96^(t·ψ));  Πt = Πt−1·μt                    (ψ: momentum_decay; Π: mu_product)
/// m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  d = √(v/(1 − β2ᵗ)) + ε
/// p ← p − lr·(1 − μt)/(1 − Πt) · g/d − lr·μt+1/(1 − Πt·μt+1) · m/d
/// ```
/// Defaults: `lr` 2e-3, `betas` (0.9, 0.999), `eps` 1e-8, `weight_decay` 0, `momentum_decay`
/// 4e-3, `decoupled_weight_decay` false. State: `exp_avg`, `exp_avg_sq` (8 bytes per parameter)
/// and the scalar `mu_product` (float32, as torch keeps it). Reference: `torch.optim.NAdam`;
/// paper: "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
public typealias NAdam = GradientOptimizer<NAdamRule>

/// The update rule of ``NAdam``: its hyperparameters, state, per-step coefficients and kernel.
public enum NAdamRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "nadam"

    /// The hyperparameters of ``NAdam``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `betas`: the decays of the first and second moments.
        public var betas: Betas
        /// `eps`, added to the bias-corrected `√v` in the denominator.
        public var eps: Double
        /// `weight_decay`, λ: L2 added to the gradient, or decoupled with ``decoupledWeightDecay``.
        public var weightDecay: Double
        /// ψ of the momentum schedule `μt = β1·(1 − ½·0.96^(t·ψ))`.
        public var momentumDecay: Double
        /// Decay weights as AdamW does (`p ← p·(1 − lr·λ)`) instead of adding `λ·p` to the gradient.
        public var decoupledWeightDecay: Bool
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``NAdam``.
        public init(learningRate: Double = 2e-3, betas: Betas = .init(0.9, 0.999), eps: Double = 1e-8, weightDecay: Double = 0,
                    momentumDecay: Double = 4e-3, decoupledWeightDecay: Bool = false, maximize: Bool = false) {
            self.learningRate = learningRate
            self.betas = betas
            self.eps = eps
            self.weightDecay = weightDecay
            self.momentumDecay = momentumDecay
            self.decoupledWeightDecay = decoupledWeightDecay
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: try reader.pair("betas", default: d.betas),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      momentumDecay: try reader.number("momentum_decay", default: d.momentumDecay),
                      decoupledWeightDecay: try reader.bool("decoupled_weight_decay", default: d.decoupledWeightDecay),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "betas": betas.value, "eps": .number(eps), "weight_decay": .number(weightDecay),
             "momentum_decay": .number(momentumDecay), "decoupled_weight_decay": .bool(decoupledWeightDecay), "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.betas(betas, name)
            try Validate.nonNegative(eps, "eps", name)
            try Validate.weightDecay(weightDecay, name)
            try Validate.nonNegative(momentumDecay, "momentumDecay (momentum_decay)", name)
        }
    }

    /// The scalars of one step of ``NAdam``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable, TorchGradientOptions {
        @usableFromInline var applyDecay: Bool
        @usableFromInline var decay: Float
        public var l2: Float
        public var maximize: Bool
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var lerpComplement: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var biasCorrection2: Float
        @usableFromInline var eps: Float
        @usableFromInline var gradientFactor: Float
        @usableFromInline var momentFactor: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["exp_avg", "exp_avg_sq"] }
    public static func scalarStateNames(_ h: Hyperparameters) -> [String] { ["mu_product"] }
    public static func initialScalars(_ h: Hyperparameters) -> [Float] { [1] }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        var scalars: [Float] = [1]
        return coefficients(h, initialLearningRate: initialLearningRate, step: step, scalars: &scalars)
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int, scalars: inout [Float]) -> Coefficients {
        let t = Double(step), (beta1, beta2) = h.betas.pair, lr = h.learningRate
        let mu = beta1 * (1 - 0.5 * pow(0.96, t * h.momentumDecay))
        let muNext = beta1 * (1 - 0.5 * pow(0.96, (t + 1) * h.momentumDecay))
        scalars[0] = scalars[0] * Float(mu)  // torch's float32 0-dim tensor: `mu_product *= mu`
        let product = Double(scalars[0]), productNext = product * muNext
        let weight = Float(1 - beta1)
        return Coefficients(
            applyDecay: h.decoupledWeightDecay && h.weightDecay != 0, decay: Float(1 - lr * h.weightDecay),
            l2: h.decoupledWeightDecay ? 0 : Float(h.weightDecay), maximize: h.maximize,
            oneMinusBeta1: weight, lerpComplement: 1 - weight, beta2: Float(beta2), oneMinusBeta2: Float(1 - beta2),
            biasCorrection2: Float(1 - pow(beta2, t)), eps: Float(h.eps),
            gradientFactor: Float(-lr * (1 - mu) / (1 - product)), momentFactor: Float((-lr * muNext) / (1 - productNext)))
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        var p = c.applyDecay ? before * c.decay : before
        let gradient = Elementwise.gradient(o, i, n)
        let g = Elementwise.torchGradient(gradient, parameter: p, maximize: c.maximize, l2: c.l2)
        let m = Elementwise.lerp(Elementwise.load(o.state0, i, n), g, weight: c.oneMinusBeta1, oneMinusWeight: c.lerpComplement)
        let v = Elementwise.load(o.state1, i, n) * c.beta2 + c.oneMinusBeta2 * g * g
        Elementwise.store(m, o.state0, i, n)
        Elementwise.store(v, o.state1, i, n)
        let denominator = Elementwise.squareRoot(v / c.biasCorrection2) + c.eps
        p = p + c.gradientFactor * g / denominator
        p = p + c.momentFactor * m / denominator
        Elementwise.store(p, o.parameter, i, n)
        return UpdateLanes(before: before, after: p, gradient: gradient, moment: m)
    }
}

extension NAdamRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "NAdam",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.NAdam",
                         paper: "Dozat, 2016, \"Incorporating Nesterov Momentum into Adam\", ICLR 2016 workshop"),
        suggested: ["lr": .number(2e-3)],
        samples: .adaptive(name),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "nadam", stateBuffers: 2, coefficients: [0.1, 0.999, 1e-3, 0.5, 1e-8, -1e-4, -1e-2])))
}
