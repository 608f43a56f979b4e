/// The vector type of every kernel: 16 floats, one AVX-512 register, two AVX or four SSE ones.
public typealias FloatVector = SIMD16<Float>

/// The pointers one fused update reads and writes: the parameter, its gradient and up to three
/// optimizer state buffers, all of the same element count.
public struct KernelOperands: @unchecked Sendable {
    public var parameter: UnsafeMutablePointer<Float>
    public var gradient: UnsafeMutablePointer<Float>
    public var state0: UnsafeMutablePointer<Float>
    public var state1: UnsafeMutablePointer<Float>
    public var state2: UnsafeMutablePointer<Float>
    public var count: Int
}

/// The single-pass loop every optimizer's update is written in: the range is walked in
/// ``FloatVector`` steps, and the last partial vector goes through the very same arithmetic on
/// zero-padded lanes, so every element gets bit-identical treatment wherever it falls.
public enum Elementwise {
    public static let width = FloatVector.scalarCount

    /// Calls `body(index, lanes)` for each vector of `range`; `lanes` < ``width`` only at the end.
    @inline(__always)
    public static func forEachVector(_ range: Range<Int>, _ body: (Int, Int) -> Void) {
        var index = range.lowerBound
        let end = range.upperBound
        while index + width <= end {
            body(index, width)
            index += width
        }
        if index < end { body(index, end - index) }
    }

    @inline(__always)
    public static func load(_ pointer: UnsafePointer<Float>, _ index: Int, _ lanes: Int) -> FloatVector {
        if lanes == width {
            return UnsafeRawPointer(pointer + index).loadUnaligned(as: FloatVector.self)
        }
        var vector = FloatVector()
        for lane in 0..<lanes { vector[lane] = pointer[index + lane] }
        return vector
    }

    @inline(__always)
    public static func load(_ pointer: UnsafeMutablePointer<Float>, _ index: Int, _ lanes: Int) -> FloatVector {
        load(UnsafePointer(pointer), index, lanes)
    }

    @inline(__always)
    public static func store(_ vector: FloatVector, _ pointer: UnsafeMutablePointer<Float>, _ index: Int, _ lanes: Int) {
        if lanes == width {
            UnsafeMutableRawPointer(pointer + index).storeBytes(of: vector, as: FloatVector.self)
            return
        }
        for lane in 0..<lanes { pointer[index + lane] = vector[lane] }
    }

    /// PyTorch's `sign`: 1, -1, or 0 for zero (and for NaN, which has neither sign).
    @inline(__always)
    public static func sign(_ x: FloatVector) -> FloatVector {
        FloatVector.zero.replacing(with: 1, where: x .> 0).replacing(with: -1, where: x .< 0)
    }

    /// PyTorch's `lerp(start, end, weight)` for a scalar weight: `start + w·(end − start)` when
    /// |w| < 0.5, else `end − (end − start)·(1 − w)`, the form that keeps the result exact at the
    /// ends. `oneMinusWeight` is `1 - weight` rounded to Float as PyTorch computes it.
    @inline(__always)
    public static func lerp(_ start: FloatVector, _ end: FloatVector, weight: Float, oneMinusWeight: Float) -> FloatVector {
        if abs(weight) < 0.5 {
            return start + weight * (end - start)
        }
        return end - (end - start) * oneMinusWeight
    }

    /// `max(x, lower)`, propagating NaN like `torch.clamp(min:)`.
    @inline(__always)
    public static func clampBelow(_ x: FloatVector, _ lower: Float) -> FloatVector {
        x.replacing(with: lower, where: x .< lower)
    }

    /// `min(max(x, lower), upper)`, propagating NaN like `torch.clamp`.
    @inline(__always)
    public static func clamp(_ x: FloatVector, _ lower: Float, _ upper: Float) -> FloatVector {
        x.replacing(with: lower, where: x .< lower).replacing(with: upper, where: x .> upper)
    }
}
