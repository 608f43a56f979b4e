import COptimSIMD

/// How an optimizer rounds the new value of a bfloat16 parameter (``ParameterDType/bfloat16``)
/// after each step: the hyperparameters `bf16_stochastic_round` and `bf16_rounding_seed`,
/// `kahan_sum` and `master_weights` (at most one of the three true).
///
/// torchao's optimizers (`AdamW8bit(..., bf16_stochastic_round=True)`, torchao 0.18) compute the
/// step in float32 and store the result in the bfloat16 parameter either rounded to nearest even
/// (torch's `p.copy_(p_f32)`, the default) or stochastically (`_fp32_to_bf16_sr`): an update
/// smaller than half a bfloat16 step is then kept on average instead of lost, which is what lets
/// a run train with bfloat16 weights and no float32 master copy (Zamirai et al., 2020, "Revisiting
/// BFloat16 Training", arXiv:2010.06192).
public enum BFloat16Rounding: Sendable, Hashable, CustomStringConvertible {
    /// Round to nearest, ties to even (torch's `float → bfloat16`).
    case nearestEven
    /// torchao's stochastic rounding, with random bits that depend only on `seed`, the parameter's
    /// position in the optimizer, its step count and the element (``BFloat16Parameters``):
    /// deterministic, and the same after a resume.
    case stochastic(seed: UInt64)
    /// Kahan-compensated updates (hyperparameter `kahan_sum`, optimi's name): each parameter keeps
    /// a bfloat16 compensation `kahan_comp` of what rounding lost; the step's float32 result plus
    /// the compensation is rounded to nearest even, and the new compensation is what that lost
    /// (Kahan, 1965; Zamirai et al., 2020). 2 bytes a parameter; updates far below half a
    /// bfloat16 step accumulate instead of vanishing.
    case kahanSum
    /// A float32 master copy of each parameter (hyperparameter `master_weights`, apex's name),
    /// held exactly in 2 bytes a parameter: the parameter is the master rounded to the nearest
    /// bfloat16 (ties away from zero), and `master_weight_remainder` the 16 bits that, added to the
    /// parameter's float32 bits, give the master's. Each step joins them, runs the float32 update
    /// on the master and splits the result, so the master takes exactly the float32 optimizer's
    /// steps while the model sees bfloat16 weights.
    case masterWeights

    /// The largest seed: 2⁵³, the largest whole number a hyperparameter (a Double) holds exactly.
    public static let largestSeed: UInt64 = 1 << 53
    /// The seeds' range, as error messages name it.
    static let seedRange = "a whole number in [0, 2^53]"
    /// The hyperparameters that choose a rounding other than nearest even, at most one of them
    /// true: `bf16_stochastic_round`, `kahan_sum` and `master_weights`.
    public static let flagNames = ["bf16_stochastic_round", "kahan_sum", "master_weights"]

    /// The name of the buffer each parameter keeps beside it: `kahan_comp` (bfloat16 bits) or
    /// `master_weight_remainder` (signed 16-bit integers); nil for the roundings without one.
    public var parameterBufferName: String? {
        switch self {
        case .nearestEven, .stochastic: nil
        case .kahanSum: "kahan_comp"
        case .masterWeights: "master_weight_remainder"
        }
    }

    /// `nearest even`, `stochastic (seed N)`, or the compensated and master-weight forms.
    public var description: String {
        switch self {
        case .nearestEven: "nearest even"
        case let .stochastic(seed): "stochastic (seed \(seed))"
        case .kahanSum: "nearest even with Kahan compensation"
        case .masterWeights: "from float32 master weights"
        }
    }
}

/// The rounding of bfloat16 parameters after a step (``BFloat16Rounding``), in place on their
/// float32 values.
///
/// Stochastic rounding is torchao's `_fp32_to_bf16_sr` (torchao 0.18, `torchao/optim/quant_utils.py`):
/// for a float32 `x`, keep its top 16 bits and add one to them — away from zero — when a uniform
/// 16-bit random number `r` is below the 16 bits dropped, then let torch's `.bfloat16()` turn NaN
/// into `0xFFFF` (what torch's vectorised CPU conversion gives for every NaN of a tensor; its scalar
/// `c10::BFloat16` gives `0x7FC0`). Nearest even is torch's `.bfloat16()` likewise. torchao draws `r` from torch's generator; here `r` is counter-based, so a step
/// is deterministic whatever the chunking and threads:
///
///     r(i) = fmix32(fmix32(i mod 2³² ⊕ k₀) ⊕ k₁) >> 16
///     (k₀, k₁) = the two halves of splitmix64(seed ⊕ splitmix64(tensor · 2³² + step mod 2³²))
///
/// with `fmix32` MurmurHash3's 32-bit finaliser, `tensor` the parameter's position in the
/// optimizer (groups in order) and `step` its step count. `tools/reference/make_bf16_parameter_fixtures.py`
/// feeds torchao's own function these bits and the tests replay its output bit for bit.
public enum BFloat16Parameters {
    /// The two 32-bit keys of the random bits of tensor `tensor` at step `step`.
    @inlinable
    public static func key(seed: UInt64, tensor: Int, step: Int) -> (UInt32, UInt32) {
        let counter = (UInt64(truncatingIfNeeded: tensor) << 32) | UInt64(truncatingIfNeeded: step & 0xFFFF_FFFF)
        let key = splitmix64(seed ^ splitmix64(counter))
        return (UInt32(truncatingIfNeeded: key), UInt32(truncatingIfNeeded: key >> 32))
    }

    /// SplitMix64's output function of `x` (Steele, Lea & Flood, 2014).
    @inlinable
    public static func splitmix64(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The 16-bit random number of element `index` under `key` (the formula above).
    @inlinable
    public static func random(index: Int, key: (UInt32, UInt32)) -> UInt32 {
        optim_bf16_sr_random(UInt32(truncatingIfNeeded: index), key.0, key.1)
    }

    /// `x` rounded stochastically to bfloat16 with the 16-bit random number `random` (torchao's
    /// rule, NaN → `0xFFFF`), as a float32 value.
    @inlinable
    public static func roundStochastically(_ x: Float, random: UInt32) -> Float {
        Float(bitPattern: optim_bf16_sr_bits(x.bitPattern, random))
    }

    /// `x` rounded to the nearest bfloat16, ties to even, NaN → `0xFFFF` (torch's `.bfloat16()` of a tensor).
    @inlinable
    public static func roundNearest(_ x: Float) -> Float {
        x.isNaN ? Float(bitPattern: 0xFFFF_0000) : Float(bitPattern: UInt32(BFloat16State.bits(x)) << 16)
    }

    /// Rounds `count` values at `values` to nearest even, in place (vector code for the calling
    /// kernel module's CPU).
    @_transparent
    public static func roundNearest(_ values: UnsafeMutablePointer<Float>, count: Int) {
        optim_bf16_round_values_nearest(values, count)
    }

    /// Rounds `count` values at `values`, elements `first ..< first + count` of their tensor,
    /// stochastically under `key`, in place.
    @_transparent
    public static func roundStochastically(_ values: UnsafeMutablePointer<Float>, count: Int, first: Int, key0: UInt32, key1: UInt32) {
        optim_bf16_round_values_stochastic(values, count, first, key0, key1)
    }

    /// Joins `count` bfloat16 parameter values with their remainders (``BFloat16Rounding/masterWeights``)
    /// into the float32 master values, in place: `bits(master) = bits(value) + remainder`, exactly.
    @_transparent
    public static func joinMaster(_ values: UnsafeMutablePointer<Float>, remainders: UnsafeMutablePointer<Int16>, count: Int) {
        optim_bf16_master_join(values, remainders, count)
    }

    /// Splits `count` float32 master values, in place, into the bfloat16 nearest each (ties away
    /// from zero; NaN → `0xFFFF`) and the remainder `bits(master) − bits(bfloat16)`, a 16-bit integer.
    @_transparent
    public static func splitMaster(_ values: UnsafeMutablePointer<Float>, remainders: UnsafeMutablePointer<Int16>, count: Int) {
        optim_bf16_master_split(values, remainders, count)
    }

    /// The float32 master value of a bfloat16 parameter value and its remainder.
    @inlinable
    public static func master(value: Float, remainder: Int16) -> Float {
        Float(bitPattern: value.bitPattern &+ UInt32(bitPattern: Int32(remainder)))
    }

    /// A float32 master value split into its bfloat16 parameter value and remainder (the scalar
    /// ``splitMaster(_:remainders:count:)``).
    @inlinable
    public static func split(master: Float) -> (value: Float, remainder: Int16) {
        if master.isNaN { return (Float(bitPattern: 0xFFFF_0000), 0) }
        let high = (master.bitPattern &+ 0x8000) & 0xFFFF_0000
        return (Float(bitPattern: high), Int16(truncatingIfNeeded: Int32(bitPattern: master.bitPattern &- high)))
    }

    /// Rounds `count` float32 step results to bfloat16 in place with Kahan compensation
    /// (``BFloat16Rounding/kahanSum``): `s = value + c`, the value becomes `s` rounded to nearest
    /// even and `c` the bfloat16 nearest `s − value` (0 where that is not finite). `compensation`
    /// holds the bfloat16 bits of `c`.
    @_transparent
    public static func roundCompensated(_ values: UnsafeMutablePointer<Float>, compensation: UnsafeMutablePointer<UInt16>, count: Int) {
        optim_bf16_round_compensated(values, compensation, count)
    }

    /// Whether every value is a bfloat16 (its low 16 bits zero), NaN only as `0xFFFF`.
    public static func holdsBFloat16(_ values: UnsafeBufferPointer<Float>) -> Bool {
        values.allSatisfy { $0.bitPattern & 0xFFFF == 0 && (!$0.isNaN || $0.bitPattern == 0xFFFF_0000) }
    }
}
