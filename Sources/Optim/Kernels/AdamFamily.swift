import Foundation

/// Scalars of one Adam-family step, shared by ``AdamRule``, ``AdamWRule`` and
/// ``DecoupledAdamWRule``, which differ only in how they decay weights and average moments.
public struct AdamCoefficients: Sendable {
    /// Multiply the parameter by ``decay`` before the update (decoupled weight decay).
    @usableFromInline var applyDecay: Bool
    @usableFromInline var decay: Float
    /// L2 penalty added to the gradient (`g + l2·p`), 0 for none.
    @usableFromInline var l2: Float
    @usableFromInline var maximize: Bool
    /// First moment by `lerp` (torch.optim) or by `m·β1 + (1 − β1)·g` (composer); chooses the
    /// kernel, so each loop is compiled for one form.
    @usableFromInline var lerpFirstMoment: Bool
    @usableFromInline var beta1: Float
    @usableFromInline var oneMinusBeta1: Float
    /// `1 - oneMinusBeta1` in Float, as `lerp` computes it.
    @usableFromInline var lerpComplement: Float
    @usableFromInline var beta2: Float
    @usableFromInline var oneMinusBeta2: Float
    @usableFromInline var amsgrad: Bool
    @usableFromInline var biasCorrection2Sqrt: Float
    @usableFromInline var eps: Float
    @usableFromInline var negativeStepSize: Float
    /// torchao's 4-bit update (`TorchaoAdamKernel`) computes its scalars in float32: `lr`,
    /// `lr·λ` (its decoupled decay), `1 − β1ᵗ` and `√(1 − β2ᵗ)`, each rounded as torch does.
    @usableFromInline var learningRate32: Float
    @usableFromInline var decayProduct32: Float
    @usableFromInline var biasCorrection1Float32: Float
    @usableFromInline var biasCorrection2SqrtFloat32: Float
}

/// The fused Adam update: state0 = `exp_avg`, state1 = `exp_avg_sq`, state2 = `max_exp_avg_sq`.
///
/// Per element, in the references' order of operations:
/// `m ← β1-average(m, g)`, `v ← v·β2 + (1 − β2)·g·g`, `v̂ ← max(v̂, v)` (AMSGrad),
/// `p ← p − step·m / (√v / √(1 − β2ᵗ) + ε)` with `step = lr / (1 − β1ᵗ)`.
/// How a kernel averages the first moment: a compile-time choice, so that no loop branches on it.
@usableFromInline
protocol FirstMomentForm {
    static func average(_ m: FloatVector, _ g: FloatVector, _ c: AdamCoefficients) -> FloatVector
}

/// `lerp(m, g, 1 − β1)`, as torch.optim's Adam and AdamW.
@usableFromInline
enum LerpMoment: FirstMomentForm {
    @inlinable @inline(__always)
    static func average(_ m: FloatVector, _ g: FloatVector, _ c: AdamCoefficients) -> FloatVector {
        Elementwise.lerp(m, g, weight: c.oneMinusBeta1, oneMinusWeight: c.lerpComplement)
    }
}

/// `m·β1 + (1 − β1)·g`, as composer's DecoupledAdamW.
/// `lerp(m, g, w)` for a weight known to be under ½ in magnitude (β1 > ½, every usual
/// setting): ``Elementwise/lerp(_:_:weight:oneMinusWeight:)``'s first branch, the same bits, without
/// the test in the loop.
@usableFromInline
enum SmallWeightLerpMoment: FirstMomentForm {
    @inlinable @inline(__always)
    static func average(_ m: FloatVector, _ g: FloatVector, _ c: AdamCoefficients) -> FloatVector {
        m + c.oneMinusBeta1 * (g - m)
    }
}

@usableFromInline
enum MultiplyAddMoment: FirstMomentForm {
    @inlinable @inline(__always)
    static func average(_ m: FloatVector, _ g: FloatVector, _ c: AdamCoefficients) -> FloatVector {
        m * c.beta1 + c.oneMinusBeta1 * g
    }
}

/// What both Adam kernels (float32 and 8-bit state) start from, in torch's order: the parameter
/// before the step, the gradient as given (after any clipping factor), the parameter after
/// decoupled decay, and the gradient the moments use (negated with `maximize`, plus L2 decay of the
/// decayed parameter).
@_transparent @usableFromInline
func adamInputs(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: AdamCoefficients)
    -> (before: FloatVector, gradient: FloatVector, parameter: FloatVector, g: FloatVector) {
    let before = Elementwise.load(o.parameter, i, n)
    var p = before
    let gradient = Elementwise.gradient(o, i, n)
    var g = c.maximize ? -gradient : gradient
    if c.applyDecay { p = p * c.decay }
    if c.l2 != 0 { g = g + c.l2 * p }
    return (before, gradient, p, g)
}

@usableFromInline
enum AdamKernel<Moment: FirstMomentForm>: VectorKernel {
    // Transparent (always inlined): an out-of-line specialization of a generic kernel is a weak
    // symbol of the same name in every kernel module, and the linker would keep only one.
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: AdamCoefficients) -> UpdateLanes {
        let (before, gradient, decayed, g) = adamInputs(o, i, n, c)
        var p = decayed
        let m = Moment.average(Elementwise.load(o.state0, i, n), g, c)
        var v = Elementwise.load(o.state1, i, n)
        v = v * c.beta2 + c.oneMinusBeta2 * g * g
        Elementwise.store(m, o.state0, i, n)
        Elementwise.store(v, o.state1, i, n)
        var second = v
        if c.amsgrad {
            let previous = Elementwise.load(o.state2, i, n)
            second = previous.replacing(with: v, where: v .> previous)
            Elementwise.store(second, o.state2, i, n)
        }
        let denominator = Elementwise.squareRoot(second) / c.biasCorrection2Sqrt + c.eps
        p = p + c.negativeStepSize * m / denominator
        Elementwise.store(p, o.parameter, i, n)
        return UpdateLanes(before: before, after: p, gradient: gradient, moment: m)
    }
}

/// The defaults and options of one Adam-family optimizer.
public protocol AdamVariant: UpdateRule where Hyperparameters == AdamHyperparameters<Self>, Coefficients == AdamCoefficients {
    /// The reference default betas.
    static var defaultBetas: Betas { get }
    /// The reference default weight decay (L2 for ``Adam``, decoupled for the others).
    static var defaultWeightDecay: Double { get }
    /// Whether the reference offers `maximize` (composer's DecoupledAdamW does not).
    static var supportsMaximize: Bool { get }
}

/// Hyperparameters of the Adam family (``Adam``, ``AdamW``, ``DecoupledAdamW``); the defaults
/// are the variant's reference defaults.
public struct AdamHyperparameters<Variant: AdamVariant>: OptimizerHyperparameters {
    /// `lr`.
    public var learningRate: Double
    /// `betas`: the first and second moments' decays.
    public var betas: Betas
    /// `eps`, added to the denominator.
    public var eps: Double
    /// L2 penalty for ``Adam``; decoupled decay for ``AdamW`` and ``DecoupledAdamW``.
    public var weightDecay: Double
    /// Divide by the running maximum of the second moment (AMSGrad).
    public var amsgrad: Bool
    /// Ascend instead of descend (negates the gradient); not offered by ``DecoupledAdamW``.
    public var maximize: Bool
    /// The state format (`state_dtype`, `min_8bit_size`): float32, or for ``Adam`` and ``AdamW``
    /// bitsandbytes' 8-bit blockwise state (see ``StateDType/int8``; no `amsgrad` then).
    public var statePrecision: StatePrecision

    /// The hyperparameters; those not written keep the variant's reference defaults — the only
    /// place they are written.
    public init(learningRate: Double = 1e-3, betas: Betas = Variant.defaultBetas, eps: Double = 1e-8,
                weightDecay: Double = Variant.defaultWeightDecay, amsgrad: Bool = false, maximize: Bool = false,
                statePrecision: StatePrecision = .float32) {
        self.learningRate = learningRate
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
        self.amsgrad = amsgrad
        self.maximize = maximize
        self.statePrecision = statePrecision
    }

    public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
        var reader = HyperparameterReader(dictionary, optimizer: Variant.name)
        let d = Self()
        self.init(learningRate: try reader.number("lr", default: d.learningRate),
                  betas: try reader.pair("betas", default: d.betas),
                  eps: try reader.number("eps", default: d.eps),
                  weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                  amsgrad: try reader.bool("amsgrad", default: d.amsgrad),
                  maximize: Variant.supportsMaximize ? try reader.bool("maximize", default: d.maximize) : d.maximize,
                  statePrecision: try StatePrecision(reading: &reader, supported: Variant.stateDTypes))
        try reader.finish()
    }

    public var dictionary: HyperparameterDictionary {
        var result: HyperparameterDictionary = [
            "lr": .number(learningRate), "betas": betas.value, "eps": .number(eps),
            "weight_decay": .number(weightDecay), "amsgrad": .bool(amsgrad)]
        if Variant.supportsMaximize { result["maximize"] = .bool(maximize) }
        statePrecision.write(into: &result)
        return result
    }

    public func validate() throws(OptimError) {
        try Validate.learningRate(learningRate, Variant.name)
        try Validate.betas(betas, Variant.name)
        try Validate.epsilon(eps, Variant.name)
        try Validate.weightDecay(weightDecay, Variant.name)
        if maximize && !Variant.supportsMaximize {
            throw .invalidConfiguration("\(Variant.name): maximize is not supported")
        }
        if amsgrad && statePrecision.dtype == .int8 {
            throw .invalidConfiguration("\(Variant.name): amsgrad is not available with state_dtype 'int8' (bitsandbytes' 8-bit Adam keeps no max_exp_avg_sq); use float32, bfloat16 or int4 state, or amsgrad false")
        }
    }

    var stateNames: [String] { amsgrad ? ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"] : ["exp_avg", "exp_avg_sq"] }

    /// The coefficients at `step`, with the references' scalar arithmetic (Double, then Float).
    func coefficients(step: Int, lerpFirstMoment: Bool, decay: Double?, l2: Double) -> AdamCoefficients {
        let (beta1, beta2) = betas.pair
        let biasCorrection1 = 1 - pow(beta1, Double(step))
        let biasCorrection2 = 1 - pow(beta2, Double(step))
        let oneMinusBeta1 = Float(1 - beta1)
        // torchao keeps lr and the step count as float32 tensors: `beta ** step` is a float32 power.
        let learningRate32 = Float(learningRate), step32 = Float(step)
        return AdamCoefficients(
            applyDecay: decay != nil, decay: Float(decay ?? 1), l2: Float(l2), maximize: maximize,
            lerpFirstMoment: lerpFirstMoment, beta1: Float(beta1), oneMinusBeta1: oneMinusBeta1,
            lerpComplement: 1 - oneMinusBeta1, beta2: Float(beta2), oneMinusBeta2: Float(1 - beta2),
            amsgrad: amsgrad, biasCorrection2Sqrt: Float(pow(biasCorrection2, 0.5)), eps: Float(eps),
            negativeStepSize: Float(-(learningRate / biasCorrection1)),
            learningRate32: learningRate32, decayProduct32: learningRate32 * Float(decay != nil ? weightDecay : 0),
            biasCorrection1Float32: 1 - powf(Float(beta1), step32), biasCorrection2SqrtFloat32: (1 - powf(Float(beta2), step32)).squareRoot())
    }
}

extension AdamVariant {
    public static func stateNames(_ h: Hyperparameters) -> [String] { h.stateNames }

    /// `exp_avg` on the signed map, `exp_avg_sq` on the unsigned one (bitsandbytes' `qmap1`, `qmap2`).
    public static func quantizationMaps(_ h: Hyperparameters) -> [DynamicQuantizationMap] { [.signed, .unsigned] }

    /// `exp_avg` on the signed map, `exp_avg_sq` (and with `amsgrad` `max_exp_avg_sq`) on the
    /// unsigned one (torchao's `_new_buffer(p, True)`, `(p, False)`).
    public static func fourBitMaps(_ h: Hyperparameters) -> [FourBitMap] { h.amsgrad ? [.signed, .unsigned, .unsigned] : [.signed, .unsigned] }

    /// The 8-bit update, block by block, in bitsandbytes' order of operations (its CPU
    /// `_optimizer_update_8bit_blockwise_cpu`, "adam"), each value in float32:
    /// `m ← fma(g, 1 − β1, m·β1)`, `v ← fma((1 − β2)·g, g, v·β2)` (torch's `add_(alpha)` and
    /// `addcmul_` are fused multiply-adds on CPU), `p ← p·(1 − lr·λ)` when decoupled decay is on,
    /// `p ← p + (−lr/(1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + ε)`; then both moments requantized.
    ///
    /// With 4-bit state (``KernelOperands/packedCodes``) the update is torchao's
    /// (`TorchaoAdamKernel`), block by block with ``FourBitQuantization/run(_:_:_:_:map0:map1:map2:collectingMetrics:)``.
    @_transparent
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: AdamCoefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        if o.packedCodes {
            // amsgrad's max_exp_avg_sq on the unsigned map too (torchao's `_new_buffer(p, False)`).
            return c.amsgrad
                ? FourBitQuantization.run(TorchaoAdamKernel.self, o, range, c, map0: .signed, map1: .unsigned, map2: .unsigned,
                                          collectingMetrics: collectingMetrics)
                : FourBitQuantization.run(TorchaoAdamKernel.self, o, range, c, map0: .signed, map1: .unsigned, map2: nil,
                                          collectingMetrics: collectingMetrics)
        }
        return BlockwiseQuantization.run(QuantizedAdamKernel.self, o, range, c, map0: .signed, map1: .unsigned, collectingMetrics: collectingMetrics)
    }

    /// The fused Adam update over `range`, its first moment by `lerp` or by multiply-add as the
    /// variant's reference computes it.
    /// The usual case (β1 > ½, no `amsgrad`, `maximize` or L2 term) runs a copy of the loop in
    /// which those options are constants, so their tests leave the loop; the same bits.
    @inlinable @inline(__always)
    public static func update(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: AdamCoefficients) {
        if coefficients.lerpFirstMoment && abs(coefficients.oneMinusBeta1) < 0.5 && !coefficients.amsgrad && !coefficients.maximize
            && coefficients.l2 == 0 {
            var usual = coefficients
            (usual.amsgrad, usual.maximize, usual.l2) = (false, false, 0)
            Elementwise.run(AdamKernel<SmallWeightLerpMoment>.self, operands, range, usual)
        } else if coefficients.lerpFirstMoment {
            Elementwise.run(AdamKernel<LerpMoment>.self, operands, range, coefficients)
        } else {
            Elementwise.run(AdamKernel<MultiplyAddMoment>.self, operands, range, coefficients)
        }
    }

    /// The fused Adam update over `range` that also returns the metric sums, in the same pass.
    @inlinable @inline(__always)
    public static func updateCollecting(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: AdamCoefficients) -> MetricAccumulator {
        coefficients.lerpFirstMoment
            ? Elementwise.runCollecting(AdamKernel<LerpMoment>.self, operands, range, coefficients)
            : Elementwise.runCollecting(AdamKernel<MultiplyAddMoment>.self, operands, range, coefficients)
    }
}

/// One vector of the 8-bit Adam update (``AdamVariant/updateQuantized(_:_:_:collectingMetrics:)``),
/// in bitsandbytes' order of operations.
@usableFromInline
enum QuantizedAdamKernel: QuantizedVectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: AdamCoefficients,
                             _ m: inout FloatVector, _ v: inout FloatVector, _ unused: inout FloatVector) -> UpdateLanes {
        let (before, gradient, decayed, g) = adamInputs(o, i, n, c)
        var p = decayed
        m = Elementwise.fusedMultiplyAdd(g, FloatVector(repeating: c.oneMinusBeta1), m * c.beta1)
        v = Elementwise.fusedMultiplyAdd(c.oneMinusBeta2 * g, g, v * c.beta2)
        let denominator = Elementwise.squareRoot(v) / c.biasCorrection2Sqrt + c.eps
        p = p + c.negativeStepSize * m / denominator
        Elementwise.store(p, o.parameter, i, n)
        return UpdateLanes(before: before, after: p, gradient: gradient, moment: m)
    }
}

/// One vector of the 4-bit Adam update, in torchao's order of operations (its `single_param_adam`,
/// torchao 0.18, which `torch.compile` runs without contracting multiply-adds), each value in
/// float32: `p ← p − (lr·λ)·p` (AdamW) or `g ← g + λ·p` (Adam), `m ← lerp(m, g, 1 − β1)`,
/// `v ← lerp(v, g², 1 − β2)`, with `amsgrad` `v̂ ← maximum(v̂, v)` (NaN if either is) in place of
/// `v` below, `p ← p − lr·(m / (1 − β1ᵗ)) / (√v / √(1 − β2ᵗ) + ε)`; then the moments
/// requantized. `maximize` negates the gradient (torchao has no such option).
@usableFromInline
enum TorchaoAdamKernel: QuantizedVectorKernel {
    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: AdamCoefficients,
                             _ m: inout FloatVector, _ v: inout FloatVector, _ largest: inout FloatVector) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let gradient = Elementwise.gradient(o, i, n)
        var g = c.maximize ? -gradient : gradient
        var p = before
        if c.applyDecay { p = p - c.decayProduct32 * p }
        if c.l2 != 0 { g = g + c.l2 * p }
        m = Elementwise.lerp(m, g, weight: c.oneMinusBeta1, oneMinusWeight: c.lerpComplement)
        v = Elementwise.lerp(v, g * g, weight: c.oneMinusBeta2, oneMinusWeight: 1 - c.oneMinusBeta2)
        var second = v
        if c.amsgrad {
            // torch.maximum: the larger, NaN when either is NaN.
            largest = largest.replacing(with: v, where: (v .> largest) .| (v .!= v))
            second = largest
        }
        let denominator = Elementwise.squareRoot(second) / c.biasCorrection2SqrtFloat32 + c.eps
        p = p - c.learningRate32 * (m / c.biasCorrection1Float32) / denominator
        Elementwise.store(p, o.parameter, i, n)
        return UpdateLanes(before: before, after: p, gradient: gradient, moment: m)
    }
}
