import Foundation

/// ADOPT (Taniguchi et al., 2024): Adam with the current gradient removed from the second-moment
/// estimate and the gradient normalised *before* momentum, which converges for any β2.
/// Matches the official code (`torch-adopt`) step for step.
///
/// ```
/// g ← −g if maximize;  g ← g + λ·p unless decouple
/// step 0:   v ← v + g²                      (initialises v; no parameter update)
/// step t≥1: p ← p − lr·λ·p if decouple
///           ĝ ← clamp(g / max(√v, ε), −t^c, t^c)       (c = clipExponent; no clamp if nil)
///           m ← lerp(m, ĝ, 1 − β1);  p ← p − lr·m;  v ← β2·v + (1 − β2)·g²
/// ```
/// Defaults: `lr` 1e-3, `betas` (0.9, 0.9999), `eps` 1e-6, `weight_decay` 0, `decouple` false,
/// clipping at `step^0.25`. Paper: arXiv:2411.02853; reference: github.com/iShohei220/adopt.
public typealias ADOPT = GradientOptimizer<ADOPTRule>

/// The update rule of ``ADOPT``: its hyperparameters, state, per-step coefficients and kernel.
public enum ADOPTRule: UpdateRule, VectorKernel {
    /// The registry name.
    public static let name = "adopt"
    /// float32, or bfloat16 state (`state_dtype` "bfloat16").
    public static let stateDTypes: [StateDType] = [.float32, .bfloat16, .int8]

    /// The hyperparameters of ``ADOPT``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`.
        public var learningRate: Double
        /// `betas`: the momentum's and the second moment's decays.
        public var betas: Betas
        /// `eps`, the floor of the normalising `√v`.
        public var eps: Double
        /// `weight_decay`: L2, or decoupled with ``decouple``.
        public var weightDecay: Double
        /// Decoupled (AdamW-style, `p ← p − lr·λ·p`) instead of L2 weight decay.
        public var decouple: Bool
        /// Normalised gradients are clipped to `±step^clipExponent` (step counted from 0);
        /// `nil` switches clipping off.
        public var clipExponent: Double?
        /// Ascend instead of descend (negates the gradient).
        public var maximize: Bool
        /// The state format (`state_dtype`): float32, or bfloat16 (``StateDType/bfloat16``).
        public var statePrecision: StatePrecision

        /// The hyperparameters; those not written keep the official defaults — the only place
        /// they are written.
        public init(learningRate: Double = 1e-3, betas: Betas = .init(0.9, 0.9999), eps: Double = 1e-6,
                    weightDecay: Double = 0, decouple: Bool = false, clipExponent: Double? = 0.25, maximize: Bool = false,
                    statePrecision: StatePrecision = .float32) {
            self.learningRate = learningRate
            self.betas = betas
            self.eps = eps
            self.weightDecay = weightDecay
            self.decouple = decouple
            self.clipExponent = clipExponent
            self.maximize = maximize
            self.statePrecision = statePrecision
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: try reader.pair("betas", default: d.betas),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      decouple: try reader.bool("decouple", default: d.decouple),
                      clipExponent: try reader.optionalNumber("clip_exponent", default: d.clipExponent),
                      maximize: try reader.bool("maximize", default: d.maximize),
                      statePrecision: try StatePrecision(reading: &reader, supported: ADOPTRule.stateDTypes))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            var result: HyperparameterDictionary = [
                "lr": .number(learningRate), "betas": betas.value, "eps": .number(eps),
                "weight_decay": .number(weightDecay), "decouple": .bool(decouple),
                "clip_exponent": clipExponent.map { .number($0) } ?? .null, "maximize": .bool(maximize)]
            statePrecision.write(into: &result)
            return result
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.betas(betas, name)
            try Validate.epsilon(eps, name)
            try Validate.weightDecay(weightDecay, name)
            if let clipExponent, !(clipExponent.isFinite && clipExponent >= 0) {
                throw Validate.fail(name, "clipExponent (clip_exponent)", clipExponent, "a finite number >= 0, or null for no clipping")
            }
        }
    }

    /// The scalars of one step of ``ADOPT``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var maximize: Bool
        @usableFromInline var l2: Float
        @usableFromInline var initialise: Bool
        @usableFromInline var decoupledDecay: Float
        @usableFromInline var eps: Float
        @usableFromInline var clip: Bool
        @usableFromInline var clipValue: Float
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var lerpComplement: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var negativeLearningRate: Float
    }

    public static func stateNames(_ h: Hyperparameters) -> [String] { ["exp_avg", "exp_avg_sq"] }

    /// `exp_avg` on the signed map, `exp_avg_sq` on the unsigned one, as bitsandbytes pairs Adam's.
    public static func quantizationMaps(_ h: Hyperparameters) -> [DynamicQuantizationMap] { [.signed, .unsigned] }

    /// 8-bit state (`state_dtype` "int8"): bitsandbytes has no 8-bit form of this optimizer, so
    /// its own float32 kernel runs on the state dequantized block by block and the new state is
    /// quantized with bitsandbytes' blockwise quantizer
    /// (``BlockwiseQuantization/runFloatKernel(_:_:_:_:map0:map1:collectingMetrics:)``).
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        c.initialise
            ? BlockwiseQuantization.runFloatKernel(Initialise.self, o, range, c, map0: .signed, map1: .unsigned, collectingMetrics: collectingMetrics)
            : BlockwiseQuantization.runFloatKernel(Self.self, o, range, c, map0: .signed, map1: .unsigned, collectingMetrics: collectingMetrics)
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        let previousSteps = step - 1  // the reference counts from 0 and increments after the update
        let weight1 = Float(1 - h.betas.first)
        return Coefficients(
            maximize: h.maximize, l2: h.decouple ? 0 : Float(h.weightDecay), initialise: previousSteps == 0,
            decoupledDecay: h.decouple ? Float(-h.learningRate * h.weightDecay) : 0, eps: Float(h.eps),
            clip: h.clipExponent != nil, clipValue: Float(pow(Double(previousSteps), h.clipExponent ?? 0)),
            oneMinusBeta1: weight1, lerpComplement: 1 - weight1, beta2: Float(h.betas.second), oneMinusBeta2: Float(1 - h.betas.second),
            negativeLearningRate: Float(-h.learningRate))
    }

    /// The update over `range`: on a parameter's first step only the second moment is initialised.
    @inlinable @inline(__always)
    public static func update(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients) {
        if c.initialise {
            Elementwise.run(Initialise.self, o, range, c)
        } else {
            Elementwise.run(Self.self, o, range, c)
        }
    }

    /// `update(_:_:_:)` that also returns the metric sums of the range, in the same pass.
    @inlinable @inline(__always)
    public static func updateCollecting(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients) -> MetricAccumulator {
        c.initialise ? Elementwise.runCollecting(Initialise.self, o, range, c) : Elementwise.runCollecting(Self.self, o, range, c)
    }

    /// Steps after the first: normalise, clip, average, update.
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        var p = before
        let gradient = Elementwise.gradient(o, i, n)
        var g = c.maximize ? -gradient : gradient
        if c.l2 != 0 { g = g + c.l2 * p }
        let v = Elementwise.load(o.state1, i, n)
        if c.decoupledDecay != 0 { p = p + c.decoupledDecay * p }
        var normalised = g / Elementwise.clampBelow(Elementwise.squareRoot(v), c.eps)
        if c.clip { normalised = Elementwise.clamp(normalised, -c.clipValue, c.clipValue) }
        let m = Elementwise.lerp(Elementwise.load(o.state0, i, n), normalised, weight: c.oneMinusBeta1, oneMinusWeight: c.lerpComplement)
        p = p + c.negativeLearningRate * m
        Elementwise.store(m, o.state0, i, n)
        Elementwise.store(p, o.parameter, i, n)
        Elementwise.store(v * c.beta2 + c.oneMinusBeta2 * g * g, o.state1, i, n)
        return UpdateLanes(before: before, after: p, gradient: gradient, moment: m)
    }

    /// A parameter's first step: `v ← v + g²` only.
    @usableFromInline
    enum Initialise: VectorKernel {
        @_transparent @usableFromInline
        static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
            let p = Elementwise.load(o.parameter, i, n)
            let gradient = Elementwise.gradient(o, i, n)
            var g = c.maximize ? -gradient : gradient
            if c.l2 != 0 { g = g + c.l2 * p }
            Elementwise.store(Elementwise.load(o.state1, i, n) + g * g, o.state1, i, n)
            return UpdateLanes(before: p, after: p, gradient: gradient, moment: Elementwise.load(o.state0, i, n))
        }
    }
}

extension ADOPTRule: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "ADOPT",
        reference: .init(library: "torch-adopt", version: "0.1.0", symbol: "adopt.ADOPT (the authors' code)",
                         paper: "Taniguchi et al., 2024, \"ADOPT: Modified Adam Can Converge with Any β2 with the Optimal Rate\", arXiv:2411.02853"),
        suggested: ["lr": .number(2e-3)],
        // β2 = 0.9999 keeps Rosenbrock's huge first gradient in v for most of the run.
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05), "betas": .numbers([0.9, 0.999])]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.02), "betas": .numbers([0.9, 0.999])]),
                       warmupSteps: 1),
        benchmark: .init(configuration: .init(name: name),
                         reference: .kernel(symbol: "adopt", stateBuffers: 2, coefficients: [1e-6, 2, 0.1, 0.9999, 1e-4, -1e-3])))
}
