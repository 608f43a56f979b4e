import COptimSIMD

/// The vector type of every kernel: 16 floats, one AVX-512 register, two AVX or four SSE ones.
public typealias FloatVector = SIMD16<Float>

/// The pointers one fused update reads and writes: the parameter, its gradient and up to three
/// optimizer state buffers, all of the same element count.
public struct KernelOperands: @unchecked Sendable {
    /// The parameter's values, updated in place.
    public var parameter: UnsafeMutablePointer<Float>
    /// The parameter's gradient.
    public var gradient: UnsafeMutablePointer<Float>
    /// State buffer 0 (the rule's first state name, such as `exp_avg`).
    public var state0: UnsafeMutablePointer<Float>
    /// State buffer 1 (the rule's second state name, such as `exp_avg_sq`).
    public var state1: UnsafeMutablePointer<Float>
    /// State buffer 2, for a rule that keeps a third.
    public var state2: UnsafeMutablePointer<Float>
    /// State buffer 3, for a rule that keeps a fourth.
    public var state3: UnsafeMutablePointer<Float>
    /// The element count of every operand.
    public var count: Int
    /// A factor on the gradient, folded into the pass (gradient clipping by norm); 1 for none.
    public var gradientScale: Float = 1
    /// Whether the gradient is row-sparse and the pass covers only its rows, where every element
    /// is present (``Parameter/setSparseGradient(rows:values:)``); a rule that accepts sparse
    /// gradients otherwise takes a zero gradient element as absent, as torch's `to_sparse()`.
    public var rowSparse = false
    /// For 8-bit state (``StateDType/int8``): the codes of state buffers 0 and 1, whose `state0`
    /// and `state1` then hold one absmax per block of ``BlockwiseQuantization/blockSize``
    /// elements (``UpdateRule/updateQuantized(_:_:_:collectingMetrics:)``); nil for float32 state.
    public var codes0: UnsafeMutablePointer<UInt8>? = nil
    /// The codes of state buffer 1 for 8-bit state (see ``codes0``).
    public var codes1: UnsafeMutablePointer<UInt8>? = nil
    /// The codes of state buffer 2 for 8-bit state (AdEMAMix's `nu`; see ``codes0``).
    public var codes2: UnsafeMutablePointer<UInt8>? = nil
    /// For 4-bit state (``StateDType/int4``): `codes0`/`codes1` hold two codes a byte and
    /// `state0`/`state1` one scale per block of ``FourBitQuantization/blockSize`` elements.
    public var packedCodes = false
    /// For bfloat16 state (``StateDType/bfloat16``): the state buffers as bfloat16 bits, which
    /// ``BFloat16State/run(_:_:_:kernels:conversions:stochasticKeys:collectingMetrics:)`` widens into `state0`… for the rule's
    /// kernel; nil for float32 and 8-bit state.
    public var bfloat16State: BFloat16StateBuffers? = nil
    /// Scratch for the kernels of low-precision state (a block's new state, a chunk's widened
    /// state): at least ``KernelOperands/scratchCount`` floats that only the calling thread uses,
    /// so that a step allocates nothing (``GradientOptimizer`` keeps one per thread). nil: those
    /// kernels allocate their own for each call.
    public var scratch: UnsafeMutablePointer<Float>? = nil

    /// The floats ``scratch`` must hold: four chunks of ``BFloat16State/chunk``, more than the
    /// 8-bit and 4-bit kernels' blocks need.
    public static let scratchCount = 4 * BFloat16State.chunk
}

/// The bfloat16 state buffers of one tensor (``KernelOperands/bfloat16State``): up to four, in
/// ``UpdateRule/stateNames(_:)`` order, `count` of them in use.
public struct BFloat16StateBuffers: @unchecked Sendable {
    /// The buffers' bits; those past ``count`` are never read.
    public var buffer0, buffer1, buffer2, buffer3: UnsafeMutablePointer<UInt16>
    /// How many buffers the rule keeps (0…4).
    public var count: Int

    /// Buffers from up to four pointers; the missing ones stand in as `placeholder`.
    public init(_ buffers: [UnsafeMutableBufferPointer<UInt16>], placeholder: UnsafeMutablePointer<UInt16>) {
        precondition(buffers.count <= 4, "at most four state buffers")
        buffer0 = buffers.count > 0 ? buffers[0].baseAddress! : placeholder
        buffer1 = buffers.count > 1 ? buffers[1].baseAddress! : placeholder
        buffer2 = buffers.count > 2 ? buffers[2].baseAddress! : placeholder
        buffer3 = buffers.count > 3 ? buffers[3].baseAddress! : placeholder
        count = buffers.count
    }
}

/// One vector's worth of a fused update: reads the operands at `index` (`lanes` elements, fewer
/// than ``Elementwise/width`` only at the end), computes, and writes back. Implementations are
/// `@inline(__always)` so ``Elementwise/run(_:_:_:_:)`` compiles into one tight loop per kernel.
public protocol VectorKernel {
    /// The per-step scalars the kernel reads (the rule's ``UpdateRule/Coefficients``).
    associatedtype Coefficients
    /// Updates one vector and returns what the optimizer metrics need of it; when no metrics are
    /// collected the returned lanes are dead code and compile away.
    static func apply(_ operands: KernelOperands, _ index: Int, _ lanes: Int, _ coefficients: Coefficients) -> UpdateLanes
}

/// One vector of an update, for the metrics: the parameter before and after, the gradient the
/// update used (after any clipping factor), and the first moment after the update (zero for an
/// optimizer that keeps none).
public struct UpdateLanes {
    /// The parameter before the update.
    public var before: FloatVector
    /// The parameter after the update.
    public var after: FloatVector
    /// The gradient the update used, after any clipping factor.
    public var gradient: FloatVector
    /// The first moment after the update; zero for a rule that keeps none.
    public var moment: FloatVector

    /// The lanes of one vector: the parameter before and after, the gradient and the first moment.
    @inlinable @inline(__always)
    public init(before: FloatVector, after: FloatVector, gradient: FloatVector, moment: FloatVector) {
        self.before = before
        self.after = after
        self.gradient = gradient
        self.moment = moment
    }
}

/// The six metric sums of a block of vectors, lane by lane (kept in registers by the loop).
@usableFromInline
struct VectorSums {
    @usableFromInline var mm = FloatVector(), pp = FloatVector(), uu = FloatVector(), gg = FloatVector(), ug = FloatVector(), mg = FloatVector()

    @inlinable init() {}

    @inlinable @inline(__always)
    mutating func add(_ lanes: UpdateLanes) {
        let update = lanes.before - lanes.after
        mm += lanes.moment * lanes.moment
        pp += lanes.after * lanes.after
        uu += update * update
        gg += lanes.gradient * lanes.gradient
        ug += update * lanes.gradient
        mg += lanes.moment * lanes.gradient
    }

    /// Adds another block lane by lane (no horizontal sums in the loop: they are slow here).
    @inlinable @inline(__always)
    mutating func add(_ other: VectorSums) {
        mm += other.mm
        pp += other.pp
        uu += other.uu
        gg += other.gg
        ug += other.ug
        mg += other.mg
    }

    /// The totals, in Double.
    @usableFromInline var accumulator: MetricAccumulator {
        var total = MetricAccumulator()
        total.momentSquared = Double(mm.sum())
        total.parameterSquared = Double(pp.sum())
        total.updateSquared = Double(uu.sum())
        total.gradientSquared = Double(gg.sum())
        total.updateDotGradient = Double(ug.sum())
        total.momentDotGradient = Double(mg.sum())
        return total
    }
}

/// The six sums of the optimizer metrics over a range of elements.
public struct MetricAccumulator: Sendable {
    /// Σ m², the first moment squared.
    public var momentSquared = 0.0
    /// Σ p², the parameter after the update squared.
    public var parameterSquared = 0.0
    /// Σ (p_before − p_after)², the update squared.
    public var updateSquared = 0.0
    /// Σ g², the gradient squared.
    public var gradientSquared = 0.0
    /// Σ (p_before − p_after)·g, the update dotted with the gradient.
    public var updateDotGradient = 0.0
    /// Σ m·g, the first moment dotted with the gradient.
    public var momentDotGradient = 0.0

    /// All six sums zero.
    public init() {}

    /// Adds one element's terms, in Double (the rules that loop over scalars: Adafactor, Muon).
    public mutating func add(before: Float, after: Float, gradient: Float, moment: Float = 0) {
        let change = Double(before) - Double(after), g = Double(gradient), m = Double(moment)
        momentSquared += m * m
        momentDotGradient += m * g
        parameterSquared += Double(after) * Double(after)
        updateSquared += change * change
        gradientSquared += g * g
        updateDotGradient += change * g
    }

    /// The sums of `a` and `b`, term by term.
    public static func + (a: Self, b: Self) -> Self {
        var sum = a
        sum.momentSquared += b.momentSquared
        sum.parameterSquared += b.parameterSquared
        sum.updateSquared += b.updateSquared
        sum.gradientSquared += b.gradientSquared
        sum.updateDotGradient += b.updateDotGradient
        sum.momentDotGradient += b.momentDotGradient
        return sum
    }
}

/// The single-pass loop every optimizer's update is written in: the range is walked in
/// ``FloatVector`` steps, and the last partial vector goes through the very same arithmetic on
/// zero-padded lanes, so every element gets bit-identical treatment wherever it falls.
public enum Elementwise {
    /// The lanes of a ``FloatVector``: 16.
    @inlinable public static var width: Int { FloatVector.scalarCount }

    /// Applies `Kernel` to each vector of `range`: full vectors in the loop, then the last partial
    /// vector through the same arithmetic on zero-padded lanes.
    ///
    /// The kernel is a static function forced inline, not a closure: a closure this size stays
    /// an out-of-line function called once per vector, which reloads and re-broadcasts every
    /// coefficient each time and runs several times slower.
    ///
    /// A gradient without a clipping scale (the usual case) gets its own copy of the loop, with
    /// the scale a constant 1, so that ``gradient(_:_:_:)``'s test leaves the loop: every
    /// loop-invariant branch is micro-operations that keep fewer loads in flight, which a
    /// single-threaded, memory-bound step pays for (measured: AdamW 0.89 of the C loop on one
    /// thread with the tests in the loop).
    @_transparent
    public static func run<Kernel: VectorKernel>(_ kernel: Kernel.Type, _ operands: KernelOperands, _ range: Range<Int>,
                                                 _ coefficients: Kernel.Coefficients) {
        if operands.gradientScale == 1 {
            var unscaled = operands
            unscaled.gradientScale = 1
            loop(kernel, unscaled, range, coefficients)
        } else {
            loop(kernel, operands, range, coefficients)
        }
    }

    @_transparent
    @usableFromInline
    static func loop<Kernel: VectorKernel>(_ kernel: Kernel.Type, _ operands: KernelOperands, _ range: Range<Int>,
                                           _ coefficients: Kernel.Coefficients) {
        var index = range.lowerBound
        let end = range.upperBound
        while index + width <= end {
            _ = Kernel.apply(operands, index, width, coefficients)
            index += width
        }
        if index < end { _ = Kernel.apply(operands, index, end - index, coefficients) }
    }

    /// ``run(_:_:_:_:)`` that also accumulates the metric sums, in the same pass: lane-wise Float
    /// sums over blocks of 16 vectors, blocks summed lane-wise over the range (a chunk of at most
    /// 32K elements), then the lanes in Double. The two levels keep the rounding near 1e-6
    /// relative; horizontal sums inside the loop measured several times slower.
    @_transparent
    public static func runCollecting<Kernel: VectorKernel>(_ kernel: Kernel.Type, _ operands: KernelOperands, _ range: Range<Int>,
                                                           _ coefficients: Kernel.Coefficients) -> MetricAccumulator {
        var total = VectorSums()
        var block = VectorSums()
        var index = range.lowerBound
        let end = range.upperBound
        var vectors = 0
        while index + width <= end {
            block.add(Kernel.apply(operands, index, width, coefficients))
            index += width
            vectors += 1
            if vectors == 16 {
                total.add(block)
                block = VectorSums()
                vectors = 0
            }
        }
        if index < end {
            let lanes = end - index
            var result = Kernel.apply(operands, index, lanes, coefficients)
            // Padding lanes hold whatever the arithmetic made of zeros: leave them out.
            let padding = FloatVector(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) .>= FloatVector(repeating: Float(lanes))
            result.before.replace(with: 0, where: padding)
            result.after.replace(with: 0, where: padding)
            result.gradient.replace(with: 0, where: padding)
            result.moment.replace(with: 0, where: padding)
            block.add(result)
        }
        total.add(block)
        return total.accumulator
    }

    /// Loads `lanes` floats from `pointer` at `index`; the lanes past them are zero.
    @inlinable @inline(__always)
    public static func load(_ pointer: UnsafePointer<Float>, _ index: Int, _ lanes: Int) -> FloatVector {
        if lanes == width {
            return UnsafeRawPointer(pointer + index).loadUnaligned(as: FloatVector.self)
        }
        var vector = FloatVector()
        for lane in 0..<lanes { vector[lane] = pointer[index + lane] }
        return vector
    }

    /// Loads `lanes` floats from `pointer` at `index`; the lanes past them are zero.
    @inlinable @inline(__always)
    public static func load(_ pointer: UnsafeMutablePointer<Float>, _ index: Int, _ lanes: Int) -> FloatVector {
        load(UnsafePointer(pointer), index, lanes)
    }

    /// The gradient at `index`, times the operands' ``KernelOperands/gradientScale``.
    @inlinable @inline(__always)
    public static func gradient(_ operands: KernelOperands, _ index: Int, _ lanes: Int) -> FloatVector {
        let g = load(operands.gradient, index, lanes)
        return operands.gradientScale == 1 ? g : g * operands.gradientScale
    }

    /// Stores the first `lanes` lanes of `vector` to `pointer` at `index`.
    @inlinable @inline(__always)
    public static func store(_ vector: FloatVector, _ pointer: UnsafeMutablePointer<Float>, _ index: Int, _ lanes: Int) {
        if lanes == width {
            UnsafeMutableRawPointer(pointer + index).storeBytes(of: vector, as: FloatVector.self)
            return
        }
        for lane in 0..<lanes { pointer[index + lane] = vector[lane] }
    }

    /// PyTorch's `sign`: 1, -1, or 0 for zero (and for NaN, which has neither sign).
    @inlinable @inline(__always)
    public static func sign(_ x: FloatVector) -> FloatVector {
        FloatVector.zero.replacing(with: 1, where: x .> 0).replacing(with: -1, where: x .< 0)
    }

    /// PyTorch's `lerp(start, end, weight)` for a scalar weight: `start + w·(end − start)` when
    /// |w| < 0.5, else `end − (end − start)·(1 − w)`, the form that keeps the result exact at the
    /// ends. `oneMinusWeight` is `1 - weight` rounded to Float as PyTorch computes it.
    @inlinable @inline(__always)
    public static func lerp(_ start: FloatVector, _ end: FloatVector, weight: Float, oneMinusWeight: Float) -> FloatVector {
        if abs(weight) < 0.5 {
            return start + weight * (end - start)
        }
        return end - (end - start) * oneMinusWeight
    }

    /// ``lerp(_:_:weight:oneMinusWeight:)`` of one element, for the rules that loop over scalars.
    @inlinable @inline(__always)
    public static func lerp(_ start: Float, _ end: Float, weight: Float, oneMinusWeight: Float) -> Float {
        abs(weight) < 0.5 ? start + weight * (end - start) : end - (end - start) * oneMinusWeight
    }

    /// `a·b + c` rounded once, lane by lane (IEEE fused multiply-add: one instruction on FMA
    /// targets, libm's exact `fmaf` per lane elsewhere — the same bits on every path). For the
    /// 8-bit kernels, whose reference fuses (torch's CPU `add_(other, alpha)` and `addcmul_`).
    @inlinable @inline(__always)
    public static func fusedMultiplyAdd(_ a: FloatVector, _ b: FloatVector, _ c: FloatVector) -> FloatVector { optim_fma16(a, b, c) }

    /// The element-wise square root as one vector instruction (`SIMD.squareRoot()` is scalarised
    /// by the standard library, with a libm call per lane).
    @inlinable @inline(__always)
    public static func squareRoot(_ x: FloatVector) -> FloatVector { optim_sqrt16(x) }

    /// `max(x, lower)`, propagating NaN like `torch.clamp(min:)`.
    @inlinable @inline(__always)
    public static func clampBelow(_ x: FloatVector, _ lower: Float) -> FloatVector {
        x.replacing(with: lower, where: x .< lower)
    }

    /// `min(max(x, lower), upper)`, propagating NaN like `torch.clamp`.
    @inlinable @inline(__always)
    public static func clamp(_ x: FloatVector, _ lower: Float, _ upper: Float) -> FloatVector {
        x.replacing(with: lower, where: x .< lower).replacing(with: upper, where: x .> upper)
    }
}

extension Elementwise {
    /// `torch.maximum`: the larger of each pair, NaN where either is NaN.
    @inlinable @inline(__always)
    public static func maximum(_ a: FloatVector, _ b: FloatVector) -> FloatVector {
        a.replacing(with: b, where: b .> a).replacing(with: b, where: b .!= b)
    }

    /// The gradient as the torch.optim optimizers first transform it: negated when maximising,
    /// plus the L2 term `λ·p` (`grad.add(param, alpha=weight_decay)`) when `l2` is not zero.
    @inlinable @inline(__always)
    public static func torchGradient(_ gradient: FloatVector, parameter: FloatVector, maximize: Bool, l2: Float) -> FloatVector {
        let g = maximize ? -gradient : gradient
        return l2 != 0 ? g + l2 * parameter : g
    }
}

extension Elementwise {
    /// `condition ? whenTrue : whenFalse` for a condition that is the same for every lane, as a
    /// lane select rather than a branch (both sides are computed). A branch on a scalar around
    /// vector arithmetic can lead LLVM to split the vectors into lanes and partial vectors
    /// (measured: LAMB's, LARS's and MARS's passes ran at about half speed on AVX-512).
    @inlinable @inline(__always)
    public static func select(_ condition: Bool, _ whenTrue: FloatVector, _ whenFalse: FloatVector) -> FloatVector {
        whenFalse.replacing(with: whenTrue, where: SIMDMask<SIMD16<Int32>>(repeating: condition))
    }

    /// `|x|` lane by lane (NaN stays NaN).
    @inlinable @inline(__always)
    public static func absolute(_ x: FloatVector) -> FloatVector {
        x.replacing(with: -x, where: x .< 0)
    }
}
