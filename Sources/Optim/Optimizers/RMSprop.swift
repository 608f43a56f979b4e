/// RMSprop (Hinton, 2012; centred form after Graves, 2013): the gradient divided by a running
/// root mean square, matching `torch.optim.RMSprop` step for step.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p
/// v ← α·v + (1 − α)·g²
/// centered: ḡ ← lerp(ḡ, g, 1 − α);  d ← √(v − ḡ²) + ε      else d ← √v + ε
/// momentum μ > 0: b ← μ·b + g/d;  p ← p − lr·b              else p ← p − lr·g/d
/// ```
/// Defaults: `lr` 1e-2, `alpha` 0.99, `eps` 1e-8, `weight_decay` 0, `momentum` 0, `centered`
/// false. State: `square_avg`, plus `momentum_buffer` with momentum and `grad_avg` when centred
/// (4–12 bytes per parameter). Reference: `torch.optim.RMSprop`; Hinton, Srivastava & Swersky,
/// 2012, Neural Networks for Machine Learning, lecture 6e; Graves, 2013, arXiv:1308.0850.
public typealias RMSprop = GradientOptimizer<RMSpropRule>

/// The update rule of ``RMSprop``: its hyperparameters, state, per-step coefficients and kernel.
public enum RMSpropRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "rmsprop"

    /// The hyperparameters of ``RMSprop``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// The smoothing constant of the running averages.
        public var alpha: Double
        /// `eps`, added to the root mean square in the denominator.
        public var eps: Double
        /// L2 penalty, added to the gradient.
        public var weightDecay: Double
        /// `momentum`, μ: the decay of the momentum buffer; 0 for none.
        public var momentum: Double
        /// Divide by the running variance (`v − ḡ²`) instead of the running mean square.
        public var centered: Bool
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool
        /// The state format (`state_dtype`, `min_8bit_size`): float32, or bitsandbytes' 8-bit
        /// blockwise `square_avg` (``StateDType/int8``, as its `RMSprop8bit`: no momentum, not centred).
        public var statePrecision: StatePrecision

        /// The hyperparameters; those not written keep the defaults listed on ``RMSprop``.
        public init(learningRate: Double = 1e-2, alpha: Double = 0.99, eps: Double = 1e-8, weightDecay: Double = 0,
                    momentum: Double = 0, centered: Bool = false, maximize: Bool = false, statePrecision: StatePrecision = .float32) {
            self.learningRate = learningRate
            self.alpha = alpha
            self.eps = eps
            self.weightDecay = weightDecay
            self.momentum = momentum
            self.centered = centered
            self.maximize = maximize
            self.statePrecision = statePrecision
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      alpha: try reader.number("alpha", default: d.alpha),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      momentum: try reader.number("momentum", default: d.momentum),
                      centered: try reader.bool("centered", default: d.centered),
                      maximize: try reader.bool("maximize", default: d.maximize),
                      statePrecision: try StatePrecision(reading: &reader, supported: RMSpropRule.stateDTypes))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            var result: HyperparameterDictionary = [
                "lr": .number(learningRate), "alpha": .number(alpha), "eps": .number(eps), "weight_decay": .number(weightDecay),
                "momentum": .number(momentum), "centered": .bool(centered), "maximize": .bool(maximize)]
            statePrecision.write(into: &result)
            return result
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.nonNegative(alpha, "alpha", name)
            try Validate.nonNegative(eps, "eps", name)
            try Validate.weightDecay(weightDecay, name)
            try Validate.nonNegative(momentum, "momentum", name)
            if statePrecision.dtype == .int8 && (momentum != 0 || centered) {
                throw .invalidConfiguration("\(name): state_dtype 'int8' keeps square_avg only, as bitsandbytes' RMSprop8bit: it needs momentum 0 and centered false (got momentum \(HyperparameterValue.format(momentum)), centered \(centered)); use float32 state for those")
            }
        }
    }

    /// The scalars of one step of ``RMSprop``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable, TorchGradientOptions {
        @usableFromInline var negativeLearningRate: Float
        @usableFromInline var alpha: Float
        @usableFromInline var oneMinusAlpha: Float
        @usableFromInline var lerpComplement: Float
        @usableFromInline var eps: Float
        public var l2: Float
        @usableFromInline var momentum: Float
        @usableFromInline var centered: Bool
        public var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] {
        ["square_avg"] + (h.momentum > 0 ? ["momentum_buffer"] : []) + (h.centered ? ["grad_avg"] : [])
    }

    public static func keepsMoment(_ h: Hyperparameters) -> Bool { h.momentum > 0 }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let weight = Float(1 - h.alpha)
        return Coefficients(negativeLearningRate: Float(-h.learningRate), alpha: Float(h.alpha), oneMinusAlpha: weight,
                            lerpComplement: 1 - weight, eps: Float(h.eps), l2: Float(h.weightDecay), momentum: Float(h.momentum),
                            centered: h.centered, maximize: h.maximize)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let g = Elementwise.torchGradient(gradient, parameter: before, maximize: c.maximize, l2: c.l2)
        let squareAverage = Elementwise.load(o.state0, i, n) * c.alpha + c.oneMinusAlpha * g * g
        Elementwise.store(squareAverage, o.state0, i, n)
        var average: FloatVector
        if c.centered {
            // grad_avg follows momentum_buffer when both are kept.
            let gradAveragePointer = c.momentum > 0 ? o.state2 : o.state1
            let gradAverage = Elementwise.lerp(Elementwise.load(gradAveragePointer, i, n), g, weight: c.oneMinusAlpha, oneMinusWeight: c.lerpComplement)
            Elementwise.store(gradAverage, gradAveragePointer, i, n)
            average = Elementwise.squareRoot(squareAverage - gradAverage * gradAverage)
        } else {
            average = Elementwise.squareRoot(squareAverage)
        }
        average = average + c.eps
        let after: FloatVector
        var buffer = FloatVector()
        if c.momentum > 0 {
            buffer = Elementwise.load(o.state1, i, n) * c.momentum + g / average
            Elementwise.store(buffer, o.state1, i, n)
            after = before + c.negativeLearningRate * buffer
        } else {
            after = before + c.negativeLearningRate * g / average
        }
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: buffer)
    }
}

extension RMSpropRule {
    /// float32, or bitsandbytes' 8-bit blockwise `square_avg` (`state_dtype` "int8", as its `RMSprop8bit`).
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]

    /// `square_avg` on the signed map: bitsandbytes' one-state optimizers quantize their state
    /// with `qmap1`, the signed map, even where it is an average of squares.
    public static func quantizationMaps(_ h: Hyperparameters) -> [DynamicQuantizationMap] { [.signed] }

    /// The 8-bit update, block by block, in bitsandbytes' order of operations (its CPU
    /// `_optimizer_update_8bit_blockwise_cpu`, "rmsprop"), each value in float32:
    /// `g ← fma(p, λ, g)`, `v ← fma((1 − α)·g, g, v·α)`, `p ← p + (−lr·g)/(√v + ε)`; then
    /// `square_avg` requantized.
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        BlockwiseQuantization.run(QuantizedRMSpropKernel.self, o, range, c, map0: .signed, map1: nil, collectingMetrics: collectingMetrics)
    }
}

/// One vector of the 8-bit RMSprop update (``RMSpropRule/updateQuantized(_:_:_:collectingMetrics:)``).
@usableFromInline
enum QuantizedRMSpropKernel: QuantizedVectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: RMSpropRule.Coefficients,
                             _ v: inout FloatVector, _ unused: inout FloatVector, _ unused2: inout FloatVector) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        var g = c.maximize ? -gradient : gradient
        if c.l2 != 0 { g = Elementwise.fusedMultiplyAdd(before, FloatVector(repeating: c.l2), g) }
        v = Elementwise.fusedMultiplyAdd(c.oneMinusAlpha * g, g, v * c.alpha)
        let after = before + c.negativeLearningRate * g / (Elementwise.squareRoot(v) + c.eps)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: FloatVector())
    }
}

extension RMSpropRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "RMSprop",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.RMSprop",
                         paper: "Hinton, Srivastava & Swersky, 2012, Neural Networks for Machine Learning, lecture 6e; centred: Graves, 2013, arXiv:1308.0850"),
        suggested: ["lr": .number(1e-3)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.005)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "rmsprop", stateBuffers: 1, coefficients: [-1e-2, 0.99, 0.01, 1e-8])))
}
