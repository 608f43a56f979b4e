/// bfloat16 rounding for code that emulates bfloat16 arithmetic in Float: values are kept as
/// Float, rounded to the 8 significant bits of bfloat16 where the emulated operation would store
/// a bfloat16 result.
public enum BFloat16 {
    /// `x` rounded to the nearest bfloat16, ties to even (PyTorch's `float → bfloat16`); NaN stays
    /// NaN.
    @inline(__always)
    public static func round(_ x: Float) -> Float {
        guard !x.isNaN else { return x }
        return BFloat16State.value(BFloat16State.bits(x))
    }

    /// Rounds every element of `values` in place.
    public static func round(_ values: UnsafeMutableBufferPointer<Float>) {
        for index in values.indices { values[index] = round(values[index]) }
    }
}
