import Foundation

/// Muon (Jordan et al., 2024): SGD momentum whose update, for a weight matrix, is replaced by the
/// nearest semi-orthogonal matrix — approximately `U·Vᵀ` of its SVD, found by a few Newton–Schulz
/// iterations — matching `torch.optim.Muon`.
///
/// ```
/// B ← lerp(B, G, 1 − μ);   M = lerp(G, B, μ) if nesterov, else B
/// X = M / max(‖M‖_F, ε)   (transposed when R > C)
/// repeat ns_steps:  A = X·Xᵀ;  X ← a·X + (b·A + c·A·A)·X
/// P ← P·(1 − lr·λ) − lr·s·X,   s = √max(1, R/C) ("original"), 0.2·√max(R, C)
///                              ("match_rms_adamw") or √(R/C) ("spectral_unclamped")
/// ```
/// The matrix products run on the library's GEMM (``MatMul``), threaded. torch runs
/// Newton–Schulz in bfloat16: `ns_dtype` "bfloat16" (the default) emulates that — every stored
/// result rounded to bfloat16, products accumulated in float32 — and "float32" keeps float32
/// throughout (closer to the exact orthogonalisation). On a CPU with AVX512-BF16 the bfloat16
/// products run on its dot-product instruction, as torch's oneDNN runs them, which adds the terms
/// two at a time: the bfloat16 mode's bits then differ from a CPU without it, both within the
/// reference fixtures' tolerance. `ns_dtype` is this library's key; the others are torch's.
///
/// Only 2-D parameters: any other shape is refused when the optimizer is built, naming the
/// parameter — give biases, norms and embeddings to AdamW in a second optimizer, as Muon's
/// authors do. Defaults: `lr` 1e-3, `weight_decay` 0.1, `momentum` 0.95, `nesterov` true,
/// `ns_coefficients` (3.4445, −4.775, 2.0315), `eps` 1e-7, `ns_steps` 5, `adjust_lr_fn` None
/// ("original"). State: `momentum_buffer` (4 bytes per parameter). Reference:
/// `torch.optim.Muon`; Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural
/// networks" (kellerjordan.github.io/posts/muon); Liu et al., 2025, arXiv:2502.16982.
public typealias Muon = GradientOptimizer<MuonRule>

/// The update rule of ``Muon``: its hyperparameters, state, per-step coefficients and kernel.
public enum MuonRule: WholeTensorRule {
    /// The registry name.
    public static let name = "muon"

    /// How the learning rate is scaled for an `R × C` matrix (torch's `adjust_lr_fn`).
    public enum LearningRateAdjustment: String, Sendable, CaseIterable {
        /// `√max(1, R/C)` (Keller Jordan's original).
        case original
        /// `0.2·√max(R, C)`, which gives updates the RMS of AdamW's (Moonshot's).
        case matchRMSAdamW = "match_rms_adamw"
        /// `√(R/C)`.
        case spectralUnclamped = "spectral_unclamped"

        func ratio(rows: Int, columns: Int) -> Double {
            let r = Double(rows), c = Double(columns)
            switch self {
            case .original: return max(1, r / c).squareRoot()
            case .matchRMSAdamW: return 0.2 * max(r, c).squareRoot()
            case .spectralUnclamped: return (r / c).squareRoot()
            }
        }
    }

    /// The precision of the Newton–Schulz iterations.
    public enum NewtonSchulzPrecision: String, Sendable, CaseIterable {
        /// As torch: bfloat16 values, float32 accumulation.
        case bfloat16
        /// float32 throughout.
        case float32
    }

    /// The hyperparameters of ``Muon``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// Decoupled decay, `p ← p·(1 − lr·λ)` with the unadjusted learning rate.
        public var weightDecay: Double
        /// `momentum`, μ: the momentum buffer's decay.
        public var momentum: Double
        /// `nesterov`: orthogonalise `lerp(G, B, μ)` instead of the buffer `B`.
        public var nesterov: Bool
        /// (a, b, c) of the quintic iteration.
        public var nsCoefficients: [Double]
        /// `eps`, the floor of `‖M‖_F` when the update is normalised.
        public var eps: Double
        /// `ns_steps`: the number of Newton–Schulz iterations.
        public var nsSteps: Int
        /// `nil` is torch's `None`, which means ``LearningRateAdjustment/original``.
        public var adjustLearningRate: LearningRateAdjustment?
        /// `ns_dtype` (this library's key): the precision of the Newton–Schulz iterations.
        public var nsPrecision: NewtonSchulzPrecision

        /// The hyperparameters; those not written keep the defaults listed on ``Muon``.
        public init(learningRate: Double = 1e-3, weightDecay: Double = 0.1, momentum: Double = 0.95, nesterov: Bool = true,
                    nsCoefficients: [Double] = [3.4445, -4.775, 2.0315], eps: Double = 1e-7, nsSteps: Int = 5,
                    adjustLearningRate: LearningRateAdjustment? = nil, nsPrecision: NewtonSchulzPrecision = .bfloat16) {
            self.learningRate = learningRate
            self.weightDecay = weightDecay
            self.momentum = momentum
            self.nesterov = nesterov
            self.nsCoefficients = nsCoefficients
            self.eps = eps
            self.nsSteps = nsSteps
            self.adjustLearningRate = adjustLearningRate
            self.nsPrecision = nsPrecision
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            let steps = try reader.number("ns_steps", default: Double(d.nsSteps))
            guard steps == steps.rounded(), steps >= 0, steps < 100 else {
                throw .invalidHyperparameter(optimizer: name, name: "nsSteps (ns_steps)", value: HyperparameterValue.format(steps),
                                             expected: "an integer in [0, 100)")
            }
            let adjustment = try reader.choice("adjust_lr_fn", LearningRateAdjustment.allCases.map(\.rawValue), default: "", nullChoice: "")
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      momentum: try reader.number("momentum", default: d.momentum),
                      nesterov: try reader.bool("nesterov", default: d.nesterov),
                      nsCoefficients: try reader.numbers("ns_coefficients", count: 3, default: d.nsCoefficients),
                      eps: try reader.number("eps", default: d.eps),
                      nsSteps: Int(steps),
                      adjustLearningRate: LearningRateAdjustment(rawValue: adjustment),
                      nsPrecision: NewtonSchulzPrecision(rawValue: try reader.choice(
                          "ns_dtype", NewtonSchulzPrecision.allCases.map(\.rawValue), default: d.nsPrecision.rawValue))!)
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "weight_decay": .number(weightDecay), "momentum": .number(momentum),
             "nesterov": .bool(nesterov), "ns_coefficients": .numbers(nsCoefficients), "eps": .number(eps),
             "ns_steps": .number(Double(nsSteps)), "adjust_lr_fn": adjustLearningRate.map { .string($0.rawValue) } ?? .null,
             "ns_dtype": .string(nsPrecision.rawValue)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.weightDecay(weightDecay, name)
            try Validate.nonNegative(momentum, "momentum", name)
            for (index, value) in nsCoefficients.enumerated() { try Validate.finite(value, "nsCoefficients[\(index)] (ns_coefficients)", name) }
            try Validate.nonNegative(eps, "eps", name)
        }
    }

    /// The scalars of one step of ``Muon``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        var oneMinusMomentum: Float
        var oneMinusMomentumComplement: Float
        var momentum: Float
        var momentumComplement: Float
        var nesterov: Bool
        var a: Float, b: Float, c: Float
        var eps: Float
        var steps: Int
        var learningRate: Double
        var decay: Float
        var adjustment: LearningRateAdjustment
        var bfloat16: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["momentum_buffer"] }

    public static var requiresMatrices: Bool { true }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let weight = Float(1 - h.momentum), momentum = Float(h.momentum)
        return Coefficients(oneMinusMomentum: weight, oneMinusMomentumComplement: 1 - weight, momentum: momentum,
                            momentumComplement: 1 - momentum, nesterov: h.nesterov,
                            a: Float(h.nsCoefficients[0]), b: Float(h.nsCoefficients[1]), c: Float(h.nsCoefficients[2]),
                            eps: Float(h.eps), steps: h.nsSteps, learningRate: h.learningRate,
                            decay: Float(1 - h.learningRate * h.weightDecay), adjustment: h.adjustLearningRate ?? .original,
                            bfloat16: h.nsPrecision == .bfloat16)
    }

    public static func updateTensor(_ o: KernelOperands, shape: [Int], _ c: Coefficients, kernels: RuleKernels<Coefficients>, pool: ThreadPool,
                                    collectingMetrics: Bool) -> MetricAccumulator {
        let rows = shape[0], columns = shape[1], n = rows * columns
        guard n > 0 else { return MetricAccumulator() }
        let round: (Float) -> Float = c.bfloat16 ? BFloat16.round : { $0 }
        // X: the momentum update, transposed to short × long, in the iteration's precision.
        let short = min(rows, columns), long = max(rows, columns), transposed = rows > columns
        let current = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { current.deallocate() }
        for r in 0..<rows {
            for column in 0..<columns {
                let i = r * columns + column
                let g = o.gradientScale == 1 ? o.gradient[i] : o.gradient[i] * o.gradientScale
                let buffer = Elementwise.lerp(o.state0[i], g, weight: c.oneMinusMomentum, oneMinusWeight: c.oneMinusMomentumComplement)
                o.state0[i] = buffer
                let update = round(c.nesterov ? Elementwise.lerp(g, buffer, weight: c.momentum, oneMinusWeight: c.momentumComplement) : buffer)
                current[transposed ? column * rows + r : i] = update
            }
        }
        NewtonSchulz.orthogonalize(current, short: short, long: long, a: c.a, b: c.b, c: c.c, steps: c.steps, eps: c.eps,
                                   bfloat16: c.bfloat16, pool: pool)
        let negativeStep = Float(-(c.learningRate * c.adjustment.ratio(rows: rows, columns: columns)))
        var sums = MetricAccumulator()
        for r in 0..<rows {
            for column in 0..<columns {
                let i = r * columns + column
                let orthogonal = current[transposed ? column * rows + r : i]
                let before = o.parameter[i]
                let after = before * c.decay + negativeStep * orthogonal
                o.parameter[i] = after
                if collectingMetrics {
                    sums.add(before: before, after: after, gradient: o.gradient[i] * o.gradientScale, moment: o.state0[i])
                }
            }
        }
        return sums
    }
}

extension MuonRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Muon",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.Muon",
                         paper: "Jordan et al., 2024, \"Muon: An optimizer for hidden layers in neural networks\"; Liu et al., 2025, \"Muon is Scalable for LLM Training\", arXiv:2502.16982"),
        suggested: ["lr": .number(0.02)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.01)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .none(reason: "Newton–Schulz is matrix products; timed against torch.optim.Muon on one 4096 × 4096 matrix")))
}
