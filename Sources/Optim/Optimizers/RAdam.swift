import Foundation

/// RAdam (Liu et al., 2020): Adam whose adaptive step is switched on only once the variance of
/// its second moment is tractable, and rectified by that variance — matching `torch.optim.RAdam`.
///
/// ```
/// p ← p·(1 − lr·λ) if decoupled_weight_decay, else g ← g + λ·p;   g ← −g if maximize
/// m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
/// ρ∞ = 2/(1 − β2) − 1;  ρt = ρ∞ − 2t·β2ᵗ/(1 − β2ᵗ)
/// ρt > 5: p ← p − (m/(1 − β1ᵗ))·lr·(√(1 − β2ᵗ)/(√v + ε))·r,  r = √((ρt−4)(ρt−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρt))
/// else:   p ← p − (m/(1 − β1ᵗ))·lr
/// ```
/// Defaults: `lr` 1e-3, `betas` (0.9, 0.999), `eps` 1e-8, `weight_decay` 0,
/// `decoupled_weight_decay` false. State: `exp_avg`, `exp_avg_sq` (8 bytes per parameter).
/// Reference: `torch.optim.RAdam`; paper: arXiv:1908.03265.
public typealias RAdam = GradientOptimizer<RAdamRule>

/// The update rule of ``RAdam``: its hyperparameters, state, per-step coefficients and kernel.
public enum RAdamRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "radam"

    /// The hyperparameters of ``RAdam``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `betas`: the decays of the first and second moments.
        public var betas: Betas
        /// `eps`, added to `√v` in the denominator.
        public var eps: Double
        /// `weight_decay`, λ: L2 added to the gradient, or decoupled with ``decoupledWeightDecay``.
        public var weightDecay: Double
        /// Decay weights as AdamW does (`p ← p·(1 − lr·λ)`) instead of adding `λ·p` to the gradient.
        public var decoupledWeightDecay: Bool
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``RAdam``.
        public init(learningRate: Double = 1e-3, betas: Betas = .init(0.9, 0.999), eps: Double = 1e-8, weightDecay: Double = 0,
                    decoupledWeightDecay: Bool = false, maximize: Bool = false) {
            self.learningRate = learningRate
            self.betas = betas
            self.eps = eps
            self.weightDecay = weightDecay
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
                      decoupledWeightDecay: try reader.bool("decoupled_weight_decay", default: d.decoupledWeightDecay),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "betas": betas.value, "eps": .number(eps), "weight_decay": .number(weightDecay),
             "decoupled_weight_decay": .bool(decoupledWeightDecay), "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.betas(betas, name)
            try Validate.nonNegative(eps, "eps", name)
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``RAdam``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable, TorchGradientOptions {
        @usableFromInline var applyDecay: Bool
        @usableFromInline var decay: Float
        public var l2: Float
        public var maximize: Bool
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var lerpComplement: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var biasCorrection1: Float
        @usableFromInline var learningRate: Float
        @usableFromInline var rectified: Bool
        @usableFromInline var biasCorrection2Sqrt: Float
        @usableFromInline var rectification: Float
        @usableFromInline var eps: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["exp_avg", "exp_avg_sq"] }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let t = Double(step), (beta1, beta2) = h.betas.pair
        let biasCorrection1 = 1 - pow(beta1, t), biasCorrection2 = 1 - pow(beta2, t)
        let rhoInfinity = 2 / (1 - beta2) - 1
        let rho = rhoInfinity - 2 * t * pow(beta2, t) / biasCorrection2
        let rectification = ((rho - 4) * (rho - 2) * rhoInfinity / ((rhoInfinity - 4) * (rhoInfinity - 2) * rho)).squareRoot()
        let weight = Float(1 - beta1)
        let decoupled = h.decoupledWeightDecay && h.weightDecay != 0
        return Coefficients(
            applyDecay: decoupled, decay: Float(1 - h.learningRate * h.weightDecay), l2: h.decoupledWeightDecay ? 0 : Float(h.weightDecay),
            maximize: h.maximize, oneMinusBeta1: weight, lerpComplement: 1 - weight, beta2: Float(beta2), oneMinusBeta2: Float(1 - beta2),
            biasCorrection1: Float(biasCorrection1), learningRate: Float(h.learningRate), rectified: rho > 5,
            biasCorrection2Sqrt: Float(biasCorrection2.squareRoot()), rectification: Float(rectification), eps: Float(h.eps))
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let p = c.applyDecay ? before * c.decay : before
        let gradient = Elementwise.gradient(o, i, n)
        let g = Elementwise.torchGradient(gradient, parameter: p, maximize: c.maximize, l2: c.l2)
        let m = Elementwise.lerp(Elementwise.load(o.state0, i, n), g, weight: c.oneMinusBeta1, oneMinusWeight: c.lerpComplement)
        let v = Elementwise.load(o.state1, i, n) * c.beta2 + c.oneMinusBeta2 * g * g
        Elementwise.store(m, o.state0, i, n)
        Elementwise.store(v, o.state1, i, n)
        let corrected = m / c.biasCorrection1
        let after: FloatVector
        if c.rectified {
            let adaptive = c.biasCorrection2Sqrt / (Elementwise.squareRoot(v) + c.eps)
            after = p - corrected * c.learningRate * adaptive * c.rectification
        } else {
            after = p - corrected * c.learningRate
        }
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: m)
    }
}

extension RAdamRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "RAdam",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.RAdam",
                         paper: "Liu et al., 2020, \"On the Variance of the Adaptive Learning Rate and Beyond\", arXiv:1908.03265"),
        suggested: ["lr": .number(2e-3)],
        // Its first steps are SGD with momentum, unscaled: Rosenbrock's gradients of ~200 need a small lr.
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(5e-3)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "radam", stateBuffers: 2, coefficients: [0.1, 0.999, 1e-3, 0.5, 1e-3, 0.5, 0.9, 1e-8])))
}
