/// Adagrad (Duchi, Hazan & Singer, 2011): each element's step shrinks with the sum of its
/// squared gradients, matching `torch.optim.Adagrad` step for step.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p
/// clr ← lr / (1 + (t − 1)·lr_decay)
/// s ← s + g²                                   (s starts at initial_accumulator_value)
/// p ← p − clr·g / (√s + ε)
/// ```
/// Defaults: `lr` 1e-2, `lr_decay` 0, `weight_decay` 0, `initial_accumulator_value` 0,
/// `eps` 1e-10. State: `sum` (4 bytes per parameter). Reference: `torch.optim.Adagrad`; paper:
/// "Adaptive Subgradient Methods for Online Learning and Stochastic Optimization", JMLR 2011.
public typealias Adagrad = GradientOptimizer<AdagradRule>

/// The update rule of ``Adagrad``: its hyperparameters, state, per-step coefficients and kernel.
public enum AdagradRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "adagrad"

    /// The hyperparameters of ``Adagrad``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `lr_decay`: the step size is `lr / (1 + (t − 1)·lr_decay)`.
        public var learningRateDecay: Double
        /// L2 penalty, added to the gradient.
        public var weightDecay: Double
        /// `initial_accumulator_value`: the value the sum of squared gradients starts at.
        public var initialAccumulatorValue: Double
        /// `eps`, added to `√s` in the denominator.
        public var eps: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool
        /// The state format (`state_dtype`, `min_8bit_size`): float32, or bitsandbytes' 8-bit
        /// blockwise `sum` (``StateDType/int8``, as its `Adagrad8bit`; `initial_accumulator_value` 0).
        public var statePrecision: StatePrecision

        /// The hyperparameters; those not written keep the defaults listed on ``Adagrad``.
        public init(learningRate: Double = 1e-2, learningRateDecay: Double = 0, weightDecay: Double = 0,
                    initialAccumulatorValue: Double = 0, eps: Double = 1e-10, maximize: Bool = false,
                    statePrecision: StatePrecision = .float32) {
            self.learningRate = learningRate
            self.learningRateDecay = learningRateDecay
            self.weightDecay = weightDecay
            self.initialAccumulatorValue = initialAccumulatorValue
            self.eps = eps
            self.maximize = maximize
            self.statePrecision = statePrecision
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      learningRateDecay: try reader.number("lr_decay", default: d.learningRateDecay),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      initialAccumulatorValue: try reader.number("initial_accumulator_value", default: d.initialAccumulatorValue),
                      eps: try reader.number("eps", default: d.eps),
                      maximize: try reader.bool("maximize", default: d.maximize),
                      statePrecision: try StatePrecision(reading: &reader, supported: AdagradRule.stateDTypes))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            var result: HyperparameterDictionary = [
                "lr": .number(learningRate), "lr_decay": .number(learningRateDecay), "weight_decay": .number(weightDecay),
                "initial_accumulator_value": .number(initialAccumulatorValue), "eps": .number(eps), "maximize": .bool(maximize)]
            statePrecision.write(into: &result)
            return result
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.nonNegative(learningRateDecay, "learningRateDecay (lr_decay)", name)
            try Validate.weightDecay(weightDecay, name)
            try Validate.nonNegative(initialAccumulatorValue, "initialAccumulatorValue (initial_accumulator_value)", name)
            try Validate.nonNegative(eps, "eps", name)
            if statePrecision.dtype == .int8 && initialAccumulatorValue != 0 {
                throw .invalidConfiguration("\(name): state_dtype 'int8' needs initial_accumulator_value 0 (got \(HyperparameterValue.format(initialAccumulatorValue))): 8-bit state starts at zero, as bitsandbytes' Adagrad8bit requires")
            }
        }
    }

    /// The scalars of one step of ``Adagrad``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable, TorchGradientOptions {
        @usableFromInline var negativeLearningRate: Float
        public var l2: Float
        @usableFromInline var eps: Float
        public var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["sum"] }
    public static func initialState(_ h: Hyperparameters) -> [Float] { [Float(h.initialAccumulatorValue)] }
    public static func keepsMoment(_ h: Hyperparameters) -> Bool { false }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let clr = h.learningRate / (1 + Double(step - 1) * h.learningRateDecay)
        return Coefficients(negativeLearningRate: Float(-clr), l2: Float(h.weightDecay), eps: Float(h.eps), maximize: h.maximize)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        let g = Elementwise.torchGradient(gradient, parameter: before, maximize: c.maximize, l2: c.l2)
        let sum = Elementwise.load(o.state0, i, n) + g * g
        Elementwise.store(sum, o.state0, i, n)
        let after = before + c.negativeLearningRate * g / (Elementwise.squareRoot(sum) + c.eps)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: FloatVector())
    }
}

extension AdagradRule {
    /// float32, or bitsandbytes' 8-bit blockwise `sum` (`state_dtype` "int8", as its `Adagrad8bit`).
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]

    /// `sum` on the signed map: bitsandbytes' one-state optimizers quantize their state with
    /// `qmap1`, the signed map, even where it is a sum of squares.
    public static func quantizationMaps(_ h: Hyperparameters) -> [DynamicQuantizationMap] { [.signed] }

    /// The 8-bit update, block by block, in bitsandbytes' order of operations (its CPU
    /// `_optimizer_update_8bit_blockwise_cpu`, "adagrad"), each value in float32:
    /// `g ← fma(p, λ, g)`, `s ← fma(g, g, s)`, `p ← p + (−clr·g)/(√s + ε)`; then `sum` requantized.
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        BlockwiseQuantization.run(QuantizedAdagradKernel.self, o, range, c, map0: .signed, map1: nil, collectingMetrics: collectingMetrics)
    }
}

/// One vector of the 8-bit Adagrad update (``AdagradRule/updateQuantized(_:_:_:collectingMetrics:)``).
@usableFromInline
enum QuantizedAdagradKernel: QuantizedVectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: AdagradRule.Coefficients,
                             _ sum: inout FloatVector, _ unused: inout FloatVector, _ unused2: inout FloatVector) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        var g = c.maximize ? -gradient : gradient
        if c.l2 != 0 { g = Elementwise.fusedMultiplyAdd(before, FloatVector(repeating: c.l2), g) }
        sum = Elementwise.fusedMultiplyAdd(g, g, sum)
        let after = before + c.negativeLearningRate * g / (Elementwise.squareRoot(sum) + c.eps)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: FloatVector())
    }
}

extension AdagradRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Adagrad",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.Adagrad",
                         paper: "Duchi, Hazan & Singer, 2011, \"Adaptive Subgradient Methods for Online Learning and Stochastic Optimization\", JMLR 12"),
        suggested: ["lr": .number(1e-2)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.05)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.5)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.5)])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "adagrad", stateBuffers: 1, coefficients: [-1e-2, 1e-10])))
}
