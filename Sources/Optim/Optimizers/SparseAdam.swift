import Foundation

/// SparseAdam: Adam for sparse gradients — embeddings, whose backward pass touches a few rows —
/// updating only the elements the gradient holds, and their moments, matching
/// `torch.optim.SparseAdam` step for step.
///
/// For every element present in the gradient (the rows of a row-sparse gradient set with
/// ``Parameter/setSparseGradient(rows:values:)``, or the non-zero elements of a dense one, as
/// torch's `grad.to_sparse()` gives):
/// ```
/// g ← −g if maximize
/// m ← m + (g − m)·(1 − β1);  v ← v + (g² − v)·(1 − β2)
/// p ← p − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m/(√v + ε)
/// ```
/// Absent elements, and their moments, are left as they are (`t` counts every step with a
/// gradient, as torch's does). A step over a row-sparse gradient visits only its rows. Under
/// ZeRO-1 sharding the gradient is taken as dense (its zero elements absent).
/// Defaults: `lr` 1e-3, `betas` (0.9, 0.999), `eps` 1e-8. State: `exp_avg`, `exp_avg_sq`
/// (8 bytes per parameter). Reference: `torch.optim.SparseAdam`; paper: arXiv:1412.6980.
public typealias SparseAdam = GradientOptimizer<SparseAdamRule>

/// The update rule of ``SparseAdam``: its hyperparameters, state, per-step coefficients and kernel.
public enum SparseAdamRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "sparse_adam"

    /// The hyperparameters of ``SparseAdam``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `betas`: the decays of the first and second moments.
        public var betas: Betas
        /// `eps`, added to `√v` in the denominator.
        public var eps: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``SparseAdam``.
        public init(learningRate: Double = 1e-3, betas: Betas = .init(0.9, 0.999), eps: Double = 1e-8, maximize: Bool = false) {
            self.learningRate = learningRate
            self.betas = betas
            self.eps = eps
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: try reader.pair("betas", default: d.betas),
                      eps: try reader.number("eps", default: d.eps),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "betas": betas.value, "eps": .number(eps), "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.betas(betas, name)
            try Validate.epsilon(eps, name)
        }
    }

    /// The scalars of one step of ``SparseAdam``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var eps: Float
        @usableFromInline var negativeStepSize: Float
        @usableFromInline var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["exp_avg", "exp_avg_sq"] }
    public static var acceptsSparseGradients: Bool { true }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let t = Double(step), (beta1, beta2) = h.betas.pair
        let stepSize = h.learningRate * (1 - pow(beta2, t)).squareRoot() / (1 - pow(beta1, t))
        return Coefficients(oneMinusBeta1: Float(1 - beta1), oneMinusBeta2: Float(1 - beta2), eps: Float(h.eps),
                            negativeStepSize: Float(-stepSize), maximize: h.maximize)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let g = c.maximize ? -gradient : gradient
        let oldMoment = Elementwise.load(o.state0, i, n), oldSquare = Elementwise.load(o.state1, i, n)
        var moment = oldMoment + (g - oldMoment) * c.oneMinusBeta1
        var square = oldSquare + (g * g - oldSquare) * c.oneMinusBeta2
        var after = before + moment / (Elementwise.squareRoot(square) + c.eps) * c.negativeStepSize
        if !o.rowSparse {
            // A dense gradient's zeros are absent from its sparse form: those elements stay.
            let absent = gradient .== 0
            moment.replace(with: oldMoment, where: absent)
            square.replace(with: oldSquare, where: absent)
            after.replace(with: before, where: absent)
        }
        Elementwise.store(moment, o.state0, i, n)
        Elementwise.store(square, o.state1, i, n)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: moment)
    }
}

extension SparseAdamRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "SparseAdam",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.SparseAdam",
                         paper: "Kingma & Ba, 2015, \"Adam: A Method for Stochastic Optimization\", arXiv:1412.6980"),
        suggested: ["lr": .number(2e-3)],
        samples: .adaptive(name),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "sparse_adam", stateBuffers: 2, coefficients: [0.1, 1e-3, 1e-8, -1e-3])))
}
