/// Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay,
/// matching `torch.optim.SGD` step for step.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p
/// b ← g on the first step, else b ← μ·b + (1 − τ)·g          (momentum μ > 0)
/// g ← g + μ·b if nesterov, else g ← b
/// p ← p − lr·g
/// ```
/// Defaults: `lr` 1e-3, `momentum` 0, `dampening` 0, `weight_decay` 0. State: `momentum_buffer`
/// when momentum is on (4 bytes per parameter). Reference: `torch.optim.SGD`; Nesterov momentum
/// as in Sutskever et al., 2013.
public typealias SGD = GradientOptimizer<SGDRule>

/// The update rule of ``SGD``: its hyperparameters, state, per-step coefficients and kernel.
public enum SGDRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "sgd"

    /// The hyperparameters of ``SGD``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// `momentum`, μ: the decay of the momentum buffer; 0 for none.
        public var momentum: Double
        /// `dampening`, τ: the momentum buffer takes `(1 − τ)·g` of each new gradient.
        public var dampening: Double
        /// L2 penalty, added to the gradient.
        public var weightDecay: Double
        /// `nesterov`: step along `g + μ·b` (Nesterov momentum) instead of `b`.
        public var nesterov: Bool
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool
        /// The state format (`state_dtype`, `min_8bit_size`): float32, or bitsandbytes' 8-bit
        /// blockwise `momentum_buffer` (``StateDType/int8``, as its `SGD8bit`; momentum > 0).
        public var statePrecision: StatePrecision

        /// The hyperparameters; those not written keep the defaults listed on ``SGD``.
        public init(learningRate: Double = 1e-3, momentum: Double = 0, dampening: Double = 0, weightDecay: Double = 0,
                    nesterov: Bool = false, maximize: Bool = false, statePrecision: StatePrecision = .float32) {
            self.learningRate = learningRate
            self.momentum = momentum
            self.dampening = dampening
            self.weightDecay = weightDecay
            self.nesterov = nesterov
            self.maximize = maximize
            self.statePrecision = statePrecision
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      momentum: try reader.number("momentum", default: d.momentum),
                      dampening: try reader.number("dampening", default: d.dampening),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      nesterov: try reader.bool("nesterov", default: d.nesterov),
                      maximize: try reader.bool("maximize", default: d.maximize),
                      statePrecision: try StatePrecision(reading: &reader, supported: SGDRule.stateDTypes))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            var result: HyperparameterDictionary = [
                "lr": .number(learningRate), "momentum": .number(momentum), "dampening": .number(dampening),
                "weight_decay": .number(weightDecay), "nesterov": .bool(nesterov), "maximize": .bool(maximize)]
            statePrecision.write(into: &result)
            return result
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            guard momentum.isFinite, momentum >= 0 else { throw Validate.fail(name, "momentum", momentum, "a finite number >= 0") }
            guard dampening.isFinite else { throw Validate.fail(name, "dampening", dampening, "a finite number") }
            try Validate.weightDecay(weightDecay, name)
            if nesterov && (momentum <= 0 || dampening != 0) {
                throw .invalidConfiguration("\(name): nesterov needs momentum > 0 and dampening = 0 (got momentum \(momentum), dampening \(dampening))")
            }
            if statePrecision.dtype != .float32 && momentum == 0 {
                throw .invalidConfiguration("\(name): state_dtype '\(statePrecision.dtype)' needs momentum > 0 (SGD without momentum keeps no state, as bitsandbytes' SGD8bit refuses it)")
            }
        }
    }

    /// The scalars of one step of ``SGD``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var negativeLearningRate: Float
        @usableFromInline var weightDecay: Float
        @usableFromInline var momentum: Float
        @usableFromInline var oneMinusDampening: Float
        @usableFromInline var firstStep: Bool
        @usableFromInline var nesterov: Bool
        @usableFromInline var maximize: Bool
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { h.momentum != 0 ? ["momentum_buffer"] : [] }

    public static func keepsMoment(_ h: Hyperparameters) -> Bool { h.momentum != 0 }

    /// The common case — momentum after the first step, no L2 term, not maximising — compiled
    /// as its own loop without the general kernel's per-vector branches (same arithmetic).
    @usableFromInline
    enum Momentum: VectorKernel {
        @_transparent @usableFromInline
        static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
            let before = Elementwise.load(o.parameter, i, n)
            let g = Elementwise.gradient(o, i, n)
            let buffer = Elementwise.load(o.state0, i, n) * c.momentum + c.oneMinusDampening * g
            Elementwise.store(buffer, o.state0, i, n)
            let direction = c.nesterov ? g + c.momentum * buffer : buffer
            let after = before + c.negativeLearningRate * direction
            Elementwise.store(after, o.parameter, i, n)
            return UpdateLanes(before: before, after: after, gradient: g, moment: buffer)
        }
    }

    @inlinable
    static func usesMomentumKernel(_ c: Coefficients) -> Bool {
        c.momentum != 0 && !c.firstStep && !c.maximize && c.weightDecay == 0
    }

    /// The update over `range`; with momentum past the first step, and neither weight decay nor
    /// maximize, by a dedicated momentum kernel.
    @inlinable @inline(__always)
    public static func update(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients) {
        if usesMomentumKernel(c) {
            Elementwise.run(Momentum.self, o, range, c)
        } else {
            Elementwise.run(Self.self, o, range, c)
        }
    }

    /// `update(_:_:_:)` that also returns the metric sums of the range, in the same pass.
    @inlinable @inline(__always)
    public static func updateCollecting(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients) -> MetricAccumulator {
        usesMomentumKernel(c) ? Elementwise.runCollecting(Momentum.self, o, range, c) : Elementwise.runCollecting(Self.self, o, range, c)
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        Coefficients(negativeLearningRate: Float(-h.learningRate), weightDecay: Float(h.weightDecay),
                     momentum: Float(h.momentum), oneMinusDampening: Float(1 - h.dampening), firstStep: step == 1,
                     nesterov: h.nesterov, maximize: h.maximize)
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        var g = c.maximize ? -gradient : gradient
        if c.weightDecay != 0 { g = g + c.weightDecay * before }
        var buffer = FloatVector()
        if c.momentum != 0 {
            buffer = g
            if !c.firstStep {
                buffer = Elementwise.load(o.state0, i, n) * c.momentum + c.oneMinusDampening * g
            }
            Elementwise.store(buffer, o.state0, i, n)
            g = c.nesterov ? g + c.momentum * buffer : buffer
        }
        let after = before + c.negativeLearningRate * g
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: buffer)
    }
}

extension SGDRule {
    /// float32, or bitsandbytes' 8-bit blockwise `momentum_buffer` (`state_dtype` "int8", as its `SGD8bit`).
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]

    /// `momentum_buffer` on the signed map (bitsandbytes' `qmap1`).
    public static func quantizationMaps(_ h: Hyperparameters) -> [DynamicQuantizationMap] { [.signed] }

    /// The 8-bit update, block by block, in bitsandbytes' order of operations (its CPU
    /// `_optimizer_update_8bit_blockwise_cpu`, "momentum"), each value in float32, torch's
    /// `add_(x, alpha=)` a fused multiply-add: `g ← fma(p, λ, g)`, `b ← g` on the first step, else
    /// `b ← fma(g, 1 − τ, b·μ)`, `p ← fma(b, −lr, p)` (Nesterov: `p ← fma(fma(b, μ, g), −lr, p)`);
    /// then the buffer requantized. bitsandbytes itself has no dampening or Nesterov momentum.
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        BlockwiseQuantization.run(QuantizedSGDKernel.self, o, range, c, map0: .signed, map1: nil, collectingMetrics: collectingMetrics)
    }
}

/// One vector of the 8-bit SGD update (``SGDRule/updateQuantized(_:_:_:collectingMetrics:)``).
@usableFromInline
enum QuantizedSGDKernel: QuantizedVectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: SGDRule.Coefficients,
                             _ b: inout FloatVector, _ unused: inout FloatVector, _ unused2: inout FloatVector) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        var g = c.maximize ? -gradient : gradient
        if c.weightDecay != 0 { g = Elementwise.fusedMultiplyAdd(before, FloatVector(repeating: c.weightDecay), g) }
        b = c.firstStep ? g : Elementwise.fusedMultiplyAdd(g, FloatVector(repeating: c.oneMinusDampening), b * c.momentum)
        let direction = c.nesterov ? Elementwise.fusedMultiplyAdd(b, FloatVector(repeating: c.momentum), g) : b
        let after = Elementwise.fusedMultiplyAdd(direction, FloatVector(repeating: c.negativeLearningRate), before)
        Elementwise.store(after, o.parameter, i, n)
        return UpdateLanes(before: before, after: after, gradient: gradient, moment: b)
    }
}

extension SGDRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "SGD",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.SGD",
                         paper: "Sutskever, Martens, Dahl & Hinton, 2013, \"On the importance of initialization and momentum in deep learning\", ICML"),
        suggested: ["lr": .number(0.05), "momentum": .number(0.9)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01), "momentum": .number(0.9)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05), "momentum": .number(0.9)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(2e-4), "momentum": .number(0.9)])),
        benchmark: .init(configuration: .init(name: name, hyperparameters: ["momentum": .number(0.9)]),
                         reference: .kernel(symbol: "sgd", stateBuffers: 1, coefficients: [-1e-3, 0.9, 1, 0, 0])))
}
