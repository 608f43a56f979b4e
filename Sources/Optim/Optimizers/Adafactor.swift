import Foundation

/// Adafactor (Shazeer & Stern, 2018): Adam-like steps whose second moment, for a matrix, is kept
/// as a row and a column statistic (`R + C` floats instead of `R·C`), with the update clipped by
/// its RMS and the step scaled by the parameter's RMS — matching `torch.optim.Adafactor`.
///
/// For a parameter of at least two dimensions (the last two are `R × C`; leading ones batch):
/// ```
/// g ← −g if maximize;   t ← t + 1;   β̂ = t^beta2_decay;   ρ = min(lr, 1/√t)
/// α = max(ε2, RMS(p))·ρ;   p ← p·(1 − lr·λ)
/// r ← lerp(r, ‖g‖²_rows / C, β̂);   c ← lerp(c, ‖g‖²_cols / R, β̂)
/// V = r·cᵀ / max(mean(r), ε1)                          (a vector keeps V ← lerp(V, g², β̂))
/// U = g / √max(V, ε1²);   p ← p − α / max(1, RMS(U)/d) · U
/// ```
/// Defaults: `lr` 1e-2, `beta2_decay` −0.8, `eps` (None = float32's machine epsilon, 1e-3),
/// `d` 1, `weight_decay` 0. State: `row_var` and `col_var` for a matrix, `variance` for a
/// vector or scalar. Each tensor is updated whole (several passes: the RMS values are over the
/// tensor), so ZeRO-1 sharding, which splits tensors, does not take it. Reference:
/// `torch.optim.Adafactor`; paper: arXiv:1804.04235.
public typealias Adafactor = GradientOptimizer<AdafactorRule>

/// The update rule of ``Adafactor``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdafactorRule: WholeTensorRule {
    /// The registry name.
    public static let name = "adafactor"

    /// The hyperparameters of ``Adafactor``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// The exponent of the second-moment weight `t^beta2_decay` (≤ 0).
        public var beta2Decay: Double
        /// ε1, the floor of the second moment (`nil`: float32's machine epsilon, 2⁻²³).
        public var eps1: Double?
        /// ε2, the floor of the parameter RMS that scales the step.
        public var eps2: Double
        /// The clipping threshold of the update's RMS (≥ 1).
        public var d: Double
        /// Decoupled decay, `p ← p·(1 − lr·λ)`.
        public var weightDecay: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``Adafactor``.
        public init(learningRate: Double = 1e-2, beta2Decay: Double = -0.8, eps1: Double? = nil, eps2: Double = 1e-3, d: Double = 1,
                    weightDecay: Double = 0, maximize: Bool = false) {
            self.learningRate = learningRate
            self.beta2Decay = beta2Decay
            self.eps1 = eps1
            self.eps2 = eps2
            self.d = d
            self.weightDecay = weightDecay
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            let eps = try reader.optionalNumbers("eps", count: 2, default: [d.eps1, d.eps2])
            guard let eps2 = eps[1] else {
                throw OptimError.hyperparameterType(optimizer: AdafactorRule.name, name: "eps", expected: "[eps1 or null, eps2] with eps2 a number", got: "eps2 null")
            }
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      beta2Decay: try reader.number("beta2_decay", default: d.beta2Decay),
                      eps1: eps[0], eps2: eps2,
                      d: try reader.number("d", default: d.d),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "beta2_decay": .number(beta2Decay),
             "eps": eps1.map { .numbers([$0, eps2]) } ?? .list([.null, .number(eps2)]),
             "d": .number(d), "weight_decay": .number(weightDecay), "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            guard beta2Decay.isFinite, beta2Decay <= 0 else { throw Validate.fail(name, "beta2Decay (beta2_decay)", beta2Decay, "a finite number <= 0") }
            if let eps1 { try Validate.nonNegative(eps1, "eps1 (eps[0])", name) }
            try Validate.nonNegative(eps2, "eps2 (eps[1])", name)
            guard d.isFinite, d >= 1 else { throw Validate.fail(name, "d", d, "a finite number >= 1") }
            try Validate.weightDecay(weightDecay, name)
        }
    }

    /// The scalars of one step of ``Adafactor``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        var weight: Float
        var weightComplement: Float
        var rho: Double
        var learningRate: Double
        var eps1: Double
        var eps2: Double
        var d: Double
        var decay: Float
        var applyDecay: Bool
        var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["row_var", "col_var"] }

    public static func stateLayout(_ h: Hyperparameters, shape: [Int]) -> [StateBuffer] {
        guard shape.count >= 2 else { return [StateBuffer(name: "variance", count: shape.reduce(1, *))] }
        let leading = shape.dropLast(2).reduce(1, *)
        return [StateBuffer(name: "row_var", count: leading * shape[shape.count - 2]),
                StateBuffer(name: "col_var", count: leading * shape[shape.count - 1])]
    }

    public static func keepsMoment(_ h: Hyperparameters) -> Bool { false }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let t = Double(step)
        let weight = Float(pow(t, h.beta2Decay))
        return Coefficients(weight: weight, weightComplement: 1 - weight, rho: min(h.learningRate, 1 / t.squareRoot()),
                            learningRate: h.learningRate, eps1: h.eps1 ?? Double(Float.ulpOfOne), eps2: h.eps2, d: h.d,
                            decay: Float(1 - h.learningRate * h.weightDecay), applyDecay: h.weightDecay != 0, maximize: h.maximize)
    }

    /// torch's `lerp` with the step's weight `t^beta2_decay`, one element.
    @inline(__always)
    static func lerp(_ start: Float, _ end: Float, _ c: Coefficients) -> Float {
        Elementwise.lerp(start, end, weight: c.weight, oneMinusWeight: c.weightComplement)
    }

    /// The float32 2-norm of `count` values `stride` apart, as torch's `vector_norm`: the sum of
    /// squares accumulated in Double, its square root rounded once.
    @inline(__always)
    static func norm(_ values: (Int) -> Float, count: Int) -> Float {
        var sum = 0.0
        for index in 0..<count {
            let x = Double(values(index))
            sum += x * x
        }
        return Float(sum.squareRoot())
    }

    public static func updateTensor(_ o: KernelOperands, shape: [Int], _ c: Coefficients, kernels: RuleKernels<Coefficients>, pool: ThreadPool,
                                    collectingMetrics: Bool) -> MetricAccumulator {
        let n = o.count
        guard n > 0 else { return MetricAccumulator() }
        let p = o.parameter, scale = o.gradientScale
        @inline(__always) func g(_ i: Int) -> Float {
            let raw = scale == 1 ? o.gradient[i] : o.gradient[i] * scale
            return c.maximize ? -raw : raw
        }
        let rootCount = Double(n).squareRoot()
        let alpha = max(c.eps2, Double(norm({ p[$0] }, count: n)) / rootCount) * c.rho
        let floor = Float(c.eps1 * c.eps1), eps1 = Float(c.eps1)
        // The second-moment estimate of element i, from the state just updated.
        let estimate: (Int) -> Float
        if shape.count >= 2 {
            let rows = shape[shape.count - 2], columns = shape[shape.count - 1], batches = n / max(rows * columns, 1)
            let rowVar = o.state0, columnVar = o.state1
            var rowMeans = [Float](repeating: 0, count: batches)
            for b in 0..<batches {
                let base = b * rows * columns
                for r in 0..<rows {
                    let rowNorm = norm({ g(base + r * columns + $0) }, count: columns)
                    rowVar[b * rows + r] = lerp(rowVar[b * rows + r], rowNorm * rowNorm / Float(columns), c)
                }
                for column in 0..<columns {
                    let columnNorm = norm({ g(base + $0 * columns + column) }, count: rows)
                    columnVar[b * columns + column] = lerp(columnVar[b * columns + column], columnNorm * columnNorm / Float(rows), c)
                }
                var sum = 0.0
                for r in 0..<rows { sum += Double(rowVar[b * rows + r]) }
                rowMeans[b] = max(Float(sum) / Float(rows), eps1)
            }
            estimate = { i in
                let b = i / (rows * columns), r = (i / columns) % rows, column = i % columns
                return rowVar[b * rows + r] * columnVar[b * columns + column] / rowMeans[b]
            }
        } else {
            let variance = o.state0
            for i in 0..<n {
                let gi = g(i)
                variance[i] = lerp(variance[i], gi * gi, c)
            }
            estimate = { variance[$0] }
        }
        @inline(__always) func update(_ i: Int) -> Float { 1 / max(estimate(i), floor).squareRoot() * g(i) }
        let denominator = max(1, Double(norm(update, count: n)) / (rootCount * c.d))
        let factor = Float(-alpha / denominator)
        var sums = MetricAccumulator()
        for i in 0..<n {
            let before = p[i]
            let after = (c.applyDecay ? before * c.decay : before) + factor * update(i)
            p[i] = after
            if collectingMetrics { sums.add(before: before, after: after, gradient: scale == 1 ? o.gradient[i] : o.gradient[i] * scale) }
        }
        return sums
    }
}

extension AdafactorRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Adafactor",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.Adafactor",
                         paper: "Shazeer & Stern, 2018, \"Adafactor: Adaptive Learning Rates with Sublinear Memory Cost\", arXiv:1804.04235"),
        suggested: ["lr": .number(1e-2)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.01)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .none(reason: "each tensor takes several passes (its RMS, row and column statistics); timed against torch only")))
}
