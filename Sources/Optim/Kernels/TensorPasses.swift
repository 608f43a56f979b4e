/// Passes over one whole tensor for the rules that need reductions inside a step (LAMB's and
/// LARS's trust ratio): the elements are cut into chunks of a fixed size, spread over a
/// ``ThreadPool``, and the per-chunk results come back in chunk order. Since the chunks do not
/// depend on the number of threads, neither do the sums made from them: a step gives the same
/// bits on any pool.
enum TensorPasses {
    /// Elements per chunk (a multiple of ``Elementwise/width``): 128 KiB of each operand.
    static let chunk = 1 << 15

    /// `body` over the chunks of `0..<count`, on `pool` when there is more than one; the results
    /// in chunk order.
    static func map<Result>(count: Int, pool: ThreadPool, _ body: (Range<Int>) -> Result) -> [Result] {
        let chunks = (count + chunk - 1) / chunk
        if chunks <= 1 { return [body(0..<count)] }
        let results = UnsafeMutableBufferPointer<Result>.allocate(capacity: chunks)
        defer { results.deallocate() }
        let base = results.baseAddress!
        pool.parallelFor(chunks) { index in
            (base + index).initialize(to: body((index * chunk)..<min(count, (index + 1) * chunk)))
        }
        let values = Array(results)
        _ = results.deinitialize()
        return values
    }

    /// A lane mask of the padding of a partial vector of `lanes` elements.
    @inline(__always)
    static func padding(_ lanes: Int) -> SIMDMask<SIMD16<Int32>> {
        FloatVector(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) .>= FloatVector(repeating: Float(lanes))
    }
}

/// The two sums of squares a trust ratio needs (‖p‖², ‖u‖²) over a chunk: float32 lanes over
/// blocks of 16 vectors, each block added in Double, in a fixed order.
struct SquareSums {
    private var blockP = FloatVector(), blockU = FloatVector()
    private var vectors = 0
    private(set) var parameter = 0.0, update = 0.0

    /// Adds one vector (`lanes` elements; the padding of a partial one is left out).
    @inline(__always)
    mutating func add(parameter p: FloatVector, update u: FloatVector, lanes: Int) {
        var p = p, u = u
        if lanes < Elementwise.width {
            let padding = TensorPasses.padding(lanes)
            p.replace(with: 0, where: padding)
            u.replace(with: 0, where: padding)
        }
        blockP += p * p
        blockU += u * u
        vectors += 1
        if vectors == 16 { flush() }
    }

    @inline(__always)
    private mutating func flush() {
        parameter += Double(blockP.sum())
        update += Double(blockU.sum())
        blockP = FloatVector()
        blockU = FloatVector()
        vectors = 0
    }

    /// The sums, the last block included.
    mutating func finish() -> (parameter: Double, update: Double) {
        flush()
        return (parameter, update)
    }
}

/// The optimizer metrics of a chunk, accumulated vector by vector as ``Elementwise``'s
/// collecting loop does.
struct ChunkMetrics {
    private var total = VectorSums(), block = VectorSums()
    private var vectors = 0

    @inline(__always)
    mutating func add(_ lanes: UpdateLanes, count: Int) {
        var result = lanes
        if count < Elementwise.width {
            let padding = TensorPasses.padding(count)
            result.before.replace(with: 0, where: padding)
            result.after.replace(with: 0, where: padding)
            result.gradient.replace(with: 0, where: padding)
            result.moment.replace(with: 0, where: padding)
        }
        block.add(result)
        vectors += 1
        if vectors == 16 {
            total.add(block)
            block = VectorSums()
            vectors = 0
        }
    }

    mutating func finish() -> MetricAccumulator {
        total.add(block)
        return total.accumulator
    }
}

/// The trust ratio of LAMB and LARS as optax computes it in float32:
/// `tc·‖p‖ / (‖u‖ + eps)`, and 1 when either norm is zero. The norms are the square roots of
/// the Double sums, rounded once.
@inline(__always)
func trustRatio(parameterSquares: Double, updateSquares: Double, trustCoefficient: Float, eps: Float) -> Float {
    let parameterNorm = Float(parameterSquares.squareRoot()), updateNorm = Float(updateSquares.squareRoot())
    if parameterNorm == 0 || updateNorm == 0 { return 1 }
    return trustCoefficient * parameterNorm / (updateNorm + eps)
}
