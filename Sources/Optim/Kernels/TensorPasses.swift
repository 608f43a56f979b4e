/// Passes over one whole tensor for the rules that need reductions inside a step (LAMB's and
/// LARS's trust ratio, MARS's norm of the corrected gradient): the elements are cut into chunks
/// of a fixed size, spread over a ``ThreadPool``, and the per-chunk results come back in chunk
/// order. Since the chunks do not depend on the number of threads, neither do the sums made from
/// them: a step gives the same bits on any pool.
///
/// A rule written as a ``TensorPassRule`` gives one vector of each pass
/// (``TensorPassRule/passVector(_:_:_:_:_:_:_:_:)``); ``chunk(_:_:_:_:_:)`` is the loop over a chunk,
/// compiled for each instruction set by the kernel modules as the elementwise rules' loops are, so
/// the passes run with the path chosen at run time (``KernelDispatch``).
public enum TensorPasses {
    /// Elements per chunk (a multiple of ``Elementwise/width``): 128 KiB of each operand.
    public static let chunkSize = 1 << 15

    /// `body` over the chunks of `0..<count`, on `pool` when there is more than one; the results
    /// in chunk order.
    static func map<Result>(count: Int, pool: ThreadPool, _ body: (Range<Int>) -> Result) -> [Result] {
        let chunks = (count + chunkSize - 1) / chunkSize
        if chunks <= 1 { return [body(0..<count)] }
        let results = UnsafeMutableBufferPointer<Result>.allocate(capacity: chunks)
        defer { results.deallocate() }
        let base = results.baseAddress!
        pool.parallelFor(chunks) { index in
            (base + index).initialize(to: body((index * chunkSize)..<min(count, (index + 1) * chunkSize)))
        }
        let values = Array(results)
        _ = results.deinitialize()
        return values
    }

    /// `body` over the chunks of `0..<count`, folded into `initial` with `combine` in chunk order:
    /// ``map(count:pool:_:)`` without the array. `descending` hands the chunks to the threads from
    /// the last one back (the fold is still in chunk order, so the result is the same bits): a
    /// pass that follows an ascending pass over the same tensor starts where the last one ended,
    /// on the lines still in cache. A tensor of one chunk allocates nothing; more
    /// chunks, one buffer for their results and the pool's closure context (O(1) a call).
    static func mapReduce<Result>(count: Int, pool: ThreadPool, descending: Bool = false, _ initial: Result,
                                  _ body: (Range<Int>) -> Result, _ combine: (Result, Result) -> Result) -> Result {
        let chunks = (count + chunkSize - 1) / chunkSize
        if chunks <= 1 { return combine(initial, body(0..<count)) }
        let results = UnsafeMutableBufferPointer<Result>.allocate(capacity: chunks)
        defer { results.deallocate() }
        let base = results.baseAddress!
        pool.parallelFor(chunks) { order in
            let index = descending ? chunks - 1 - order : order
            (base + index).initialize(to: body((index * chunkSize)..<min(count, (index + 1) * chunkSize)))
        }
        var total = initial
        for index in 0..<chunks { total = combine(total, (base + index).move()) }
        return total
    }

    /// Pass `pass` of a rule over a whole tensor with the rule's compiled chunk loop (`kernels`),
    /// the chunks' results added in chunk order. Odd passes run from the tensor's end back, so that
    /// each pass begins on the data its predecessor read last (still in L2/L3).
    static func run<Coefficients>(_ kernels: RuleKernels<Coefficients>, _ operands: KernelOperands, _ coefficients: Coefficients,
                                  _ pass: TensorPass, pool: ThreadPool) -> PassResult {
        mapReduce(count: operands.count, pool: pool, descending: pass.index % 2 == 1, PassResult(),
                  { kernels.pass(operands, $0, coefficients, pass) }, +)
    }

    /// The loop of one pass over `range`: whole vectors, then the last partial one through the same
    /// arithmetic on zero-padded lanes. The pass number and the metrics switch are taken out of
    /// the loop, so each loop is compiled with them constant.
    @_transparent
    public static func chunk<Rule: TensorPassRule>(_ rule: Rule.Type, _ operands: KernelOperands, _ range: Range<Int>,
                                                   _ coefficients: Rule.Coefficients, _ pass: TensorPass) -> PassResult {
        var sums = PassSums()
        switch (pass.index, pass.collectingMetrics) {
        case (0, false): loop(rule, 0, false, operands, range, coefficients, pass, &sums)
        case (0, true): loop(rule, 0, true, operands, range, coefficients, pass, &sums)
        case (1, false): loop(rule, 1, false, operands, range, coefficients, pass, &sums)
        case (1, true): loop(rule, 1, true, operands, range, coefficients, pass, &sums)
        case (2, false): loop(rule, 2, false, operands, range, coefficients, pass, &sums)
        case (2, true): loop(rule, 2, true, operands, range, coefficients, pass, &sums)
        case (3, false): loop(rule, 3, false, operands, range, coefficients, pass, &sums)
        default: loop(rule, 3, true, operands, range, coefficients, pass, &sums)
        }
        return sums.finish()
    }

    @_transparent
    @usableFromInline
    static func loop<Rule: TensorPassRule>(_ rule: Rule.Type, _ index: Int, _ collecting: Bool, _ operands: KernelOperands,
                                           _ range: Range<Int>, _ coefficients: Rule.Coefficients, _ pass: TensorPass,
                                           _ sums: inout PassSums) {
        let width = Elementwise.width
        var i = range.lowerBound
        let end = range.upperBound
        while i + width <= end {
            Rule.passVector(index, collecting, operands, i, width, coefficients, pass, &sums)
            i += width
        }
        if i < end { Rule.passVector(index, collecting, operands, i, end - i, coefficients, pass, &sums) }
    }

    /// A lane mask of the padding of a partial vector of `lanes` elements.
    @inlinable @inline(__always)
    static func padding(_ lanes: Int) -> SIMDMask<SIMD16<Int32>> {
        FloatVector(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) .>= FloatVector(repeating: Float(lanes))
    }
}

/// What a pass of a ``TensorPassRule`` is told beyond the coefficients: which pass, the tensor's
/// rank, a value the passes before it produced (a trust ratio, a norm, a scale), and whether it
/// collects the optimizer metrics.
public struct TensorPass: Sendable {
    /// The pass: 0 ... 3 (a rule may give a common case a pass of its own, compiled without the
    /// branches of the general one: MARS's pass 3).
    public var index: Int
    /// The tensor's number of dimensions.
    public var rank: Int
    /// A value from the earlier passes; its meaning is the rule's.
    public var scalar: Float
    /// Whether this pass sums the optimizer metrics (the one that writes the parameter).
    public var collectingMetrics: Bool

    /// Pass number `index` over a tensor of `rank` dimensions, with the earlier passes' `scalar`.
    public init(index: Int, rank: Int, scalar: Float = 0, collectingMetrics: Bool = false) {
        self.index = index
        self.rank = rank
        self.scalar = scalar
        self.collectingMetrics = collectingMetrics
    }
}

/// What a pass returns over a chunk (and, added in chunk order, over the tensor): two sums of
/// squares, a count, and the optimizer metrics.
public struct PassResult: Sendable {
    /// The first sum of squares (‖p‖² of a trust ratio).
    public var first = 0.0
    /// The second sum of squares (‖u‖² of a trust ratio, ‖c‖² of MARS).
    public var second = 0.0
    /// A count (elements where MARS's cautious mask is set).
    public var count = 0
    /// The metric sums, from the pass that writes the parameter.
    public var metrics = MetricAccumulator()

    /// All sums and the count zero.
    public init() {}

    /// The sums, counts and metric sums of `a` and `b` added.
    public static func + (a: Self, b: Self) -> Self {
        var sum = a
        sum.first += b.first
        sum.second += b.second
        sum.count += b.count
        sum.metrics = sum.metrics + b.metrics
        return sum
    }
}

/// What a pass accumulates vector by vector over a chunk: two sums of squares and the metrics,
/// each as float32 lanes over blocks of 16 vectors, each block added in Double, in a fixed
/// order; and a count.
public struct PassSums {
    @usableFromInline var blockFirst = FloatVector(), blockSecond = FloatVector()
    @usableFromInline var squareVectors = 0
    @usableFromInline var first = 0.0, second = 0.0
    @usableFromInline var metricTotal = VectorSums(), metricBlock = VectorSums()
    @usableFromInline var metricVectors = 0
    /// A count the pass keeps (MARS: the elements its cautious mask keeps).
    public var count = 0

    @_transparent @usableFromInline init() {}

    /// Adds the squares of one vector of each of two quantities (`lanes` elements; the padding of
    /// a partial vector is left out).
    @inlinable @inline(__always)
    public mutating func addSquares(_ a: FloatVector, _ b: FloatVector, lanes: Int) {
        var a = a, b = b
        if lanes < Elementwise.width {
            let padding = TensorPasses.padding(lanes)
            a.replace(with: 0, where: padding)
            b.replace(with: 0, where: padding)
        }
        blockFirst += a * a
        blockSecond += b * b
        squareVectors += 1
        if squareVectors == 16 { flushSquares() }
    }

    /// Adds the squares of one vector to the second sum only.
    @inlinable @inline(__always)
    public mutating func addSquares(second b: FloatVector, lanes: Int) {
        var b = b
        if lanes < Elementwise.width { b.replace(with: 0, where: TensorPasses.padding(lanes)) }
        blockSecond += b * b
        squareVectors += 1
        if squareVectors == 16 { flushSquares() }
    }

    /// Adds the blocks to the Double sums, out of line on purpose: the lane extractions of a
    /// horizontal sum inlined into the loop lead LLVM to split the vector arithmetic that feeds
    /// the blocks into lanes (measured on AVX-512: LAMB's first pass at half speed). Called once
    /// every 16 vectors; the same scalar additions on every path.
    @usableFromInline @inline(never)
    mutating func flushSquares() {
        first += Double(blockFirst.sum())
        second += Double(blockSecond.sum())
        blockFirst = FloatVector()
        blockSecond = FloatVector()
        squareVectors = 0
    }

    /// Adds one vector of an update to the metrics, as ``Elementwise``'s collecting loop does.
    @inlinable @inline(__always)
    public mutating func addMetrics(_ lanes: UpdateLanes, count: Int) {
        var result = lanes
        if count < Elementwise.width {
            let padding = TensorPasses.padding(count)
            result.before.replace(with: 0, where: padding)
            result.after.replace(with: 0, where: padding)
            result.gradient.replace(with: 0, where: padding)
            result.moment.replace(with: 0, where: padding)
        }
        metricBlock.add(result)
        metricVectors += 1
        if metricVectors == 16 {
            metricTotal.add(metricBlock)
            metricBlock = VectorSums()
            metricVectors = 0
        }
    }

    @inlinable @inline(__always)
    mutating func finish() -> PassResult {
        flushSquares()
        metricTotal.add(metricBlock)
        var result = PassResult()
        result.first = first
        result.second = second
        result.count = count
        result.metrics = metricTotal.accumulator
        return result
    }
}

/// A whole-tensor rule whose step is up to four kinds of pass over the tensor's elements with
/// reductions between them (LAMB, LARS, MARS). It writes one vector of each pass; its
/// `updateTensor` runs the passes with ``TensorPasses`` through the kernels it is given, which
/// the kernel modules compile for each instruction set (one `table.add` line, as for an
/// elementwise rule).
public protocol TensorPassRule: WholeTensorRule {
    /// One vector of pass `index` at `i` (`lanes` elements, fewer than ``Elementwise/width`` only
    /// at the end of a chunk), accumulating into `sums`; `collecting` says whether the metrics are
    /// summed. `@_transparent`, so each pass compiles into a tight loop.
    static func passVector(_ index: Int, _ collecting: Bool, _ operands: KernelOperands, _ i: Int, _ lanes: Int,
                           _ coefficients: Coefficients, _ pass: TensorPass, _ sums: inout PassSums)
}

extension UpdateRule where Self: TensorPassRule {
    /// Runs ``TensorPassRule/passVector(_:_:_:_:_:_:_:_:)`` over `range` for one pass and returns its sums.
    @_transparent
    public static func pass(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients, _ pass: TensorPass) -> PassResult {
        TensorPasses.chunk(Self.self, operands, range, coefficients, pass)
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
