import COptimSIMD

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

/// One vector's worth of a fused update: reads the operands at `index` (`lanes` elements, fewer
/// than ``Elementwise/width`` only at the end), computes, and writes back. Implementations are
/// `@inline(__always)` so ``Elementwise/run(_:_:_:_:)`` compiles into one tight loop per kernel.
public protocol VectorKernel {
    associatedtype Coefficients
    static func apply(_ operands: KernelOperands, _ index: Int, _ lanes: Int, _ coefficients: Coefficients)
}

/// The single-pass loop every optimizer's update is written in: the range is walked in
/// ``FloatVector`` steps, and the last partial vector goes through the very same arithmetic on
/// zero-padded lanes, so every element gets bit-identical treatment wherever it falls.
public enum Elementwise {
    public static let width = FloatVector.scalarCount

    /// Applies `Kernel` to each vector of `range`: full vectors in the loop, then the last partial
    /// vector through the same arithmetic on zero-padded lanes.
    ///
    /// The kernel is a static function forced inline, not a closure: a closure this size stays
    /// an out-of-line function called once per vector, which reloads and re-broadcasts every
    /// coefficient each time and runs several times slower.
    @inline(__always)
    public static func run<Kernel: VectorKernel>(_ kernel: Kernel.Type, _ operands: KernelOperands, _ range: Range<Int>,
                                                 _ coefficients: Kernel.Coefficients) {
        var index = range.lowerBound
        let end = range.upperBound
        while index + width <= end {
            Kernel.apply(operands, index, width, coefficients)
            index += width
        }
        if index < end { Kernel.apply(operands, index, end - index, coefficients) }
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

    /// The element-wise square root as one vector instruction (`SIMD.squareRoot()` is scalarised
    /// by the standard library, with a libm call per lane).
    @inline(__always)
    public static func squareRoot(_ x: FloatVector) -> FloatVector { optim_sqrt16(x) }

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
