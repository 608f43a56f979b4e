import COptimSIMD

/// Single-precision matrix multiplication over contiguous row-major buffers: the one GEMM of the
/// library, used by matrix optimizers (Muon's Newton–Schulz iterations) and by the example
/// models' layers.
///
/// ``gemm(m:n:k:_:transposeA:_:transposeB:_:accumulate:symmetric:bfloat16Operands:workspace:pool:)`` computes
///
///     C ← op(A) · op(B)          or, with `accumulate`,     C ← C + op(A) · op(B)
///
/// where op(A) is m × k and op(B) is k × n, each either the matrix as stored or its transpose.
/// With PyTorch's `nn.Linear` layout (weight W of shape [out, in]) the three products of a
/// layer are Y = X·Wᵀ (`transposeB`), dW = dYᵀ·X (`transposeA`) and dX = dY·W (neither).
///
/// The method is the one of GotoBLAS / BLIS (Goto & van de Geijn, "Anatomy of
/// High-Performance Matrix Multiplication", ACM TOMS 34(3), 2008): blocks of op(A) and op(B) are
/// packed into contiguous panels, and a 6 × 16 micro-kernel keeps a tile of C in six
/// `SIMD16<Float>` registers while it streams the panels.
///
/// Every element of C is the sum over k taken in order, starting from 0 (or from C's value when
/// accumulating), one multiply then one add per term — the arithmetic of the naive loop
/// `for p in 0..<k { c += a[i][p] * b[p][j] }`. No element is ever split between threads, so the
/// result is the same, bit for bit, whatever the thread count and whatever the blocking. (One
/// exception, asked for by `bfloat16Operands` on a CPU with AVX512-BF16: the terms are added two
/// at a time, in an order documented there, again whatever the threads and the blocking.)
/// Products of fewer than ``parallelThreshold`` multiply-adds run on the calling thread.
public enum MatMul {
    /// Rows of the micro-kernel's tile of C.
    @inlinable static var tileRows: Int { 6 }
    /// Columns of the micro-kernel's tile of C: one `SIMD16<Float>`.
    @inlinable static var tileColumns: Int { 16 }
    /// Depth (k) of a packed block: a 256 × 16 panel of op(B) is 16 KB, in L1.
    @inlinable static var blockDepth: Int { 256 }
    /// Rows of a packed block of op(A) (a multiple of ``tileRows``): 72 × 256 floats, 72 KB, in L2.
    static let blockRows = 72
    /// Columns of a packed block of op(B) (a multiple of ``tileColumns``).
    static let blockColumns = 256

    /// The loops around the micro-kernel for one part of a product (`multiplyBlock`), as
    /// compiled for one instruction set (``KernelDispatch``): the problem, the rows and the
    /// columns of C to compute, and the part's scratch memory.
    public typealias BlockKernel = @Sendable (Problem, Range<Int>, Range<Int>, UnsafeMutablePointer<Float>) -> Void

    @usableFromInline typealias Vector = SIMD16<Float>

    /// The block loop as compiled into `Optim` itself.
    static let baselineBlock: BlockKernel = { multiplyBlock($0, rows: $1, columns: $2, scratch: $3) }

    /// The block loop, inlined into the caller and compiled with the caller's instruction set:
    /// kernel modules wrap it in a closure of their own and register that
    /// (``KernelTable/setMatrixMultiply(_:)``).
    @_transparent
    public static func block(_ p: Problem, rows: Range<Int>, columns: Range<Int>, scratch: UnsafeMutablePointer<Float>) {
        multiplyBlock(p, rows: rows, columns: columns, scratch: scratch)
    }

    /// Below this many multiply-adds (m · n · k) a product runs on the calling thread alone:
    /// 2²⁰ take about 50–100 µs on one core, where waking the pool and waiting for the slowest
    /// part (a worker the OS has descheduled, on a shared machine) costs more than it saves.
    public static let parallelThreshold = 1 << 20

    /// Reusable scratch memory for the packed panels, and the job handed to the thread pool.
    ///
    /// Give the same workspace to every call of a hot loop and the calls allocate nothing once it
    /// has grown to the largest product. A workspace serves one call at a time.
    public final class Workspace: @unchecked Sendable {
        fileprivate var storage: UnsafeMutablePointer<Float>?
        fileprivate var capacity = 0
        fileprivate var problem: Problem?
        /// Made once, so that handing it to the pool allocates nothing.
        fileprivate lazy var job: (Int) -> Void = { [unowned self] part in self.runPart(part) }

        /// An empty workspace; it grows on first use.
        public init() {}

        deinit { storage.map { UnsafeMutableRawPointer($0).deallocate() } }

        fileprivate func reserve(_ count: Int) -> UnsafeMutablePointer<Float> {
            if let storage, capacity >= count { return storage }
            storage.map { UnsafeMutableRawPointer($0).deallocate() }
            let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
            let pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
            storage = pointer
            capacity = count
            return pointer
        }

        fileprivate func runPart(_ part: Int) {
            let p = problem!
            var first = part * p.partSize
            var last = min(first + p.partSize, p.splitRows ? p.m : p.n)
            if p.upperOnly {
                // Row runs of equal work: rows [0, r) of the upper triangle hold m·r − r²/2 of its
                // m²/2 elements, a fraction f at r = m·(1 − √(1 − f)); whole tiles.
                func boundary(_ part: Int) -> Int {
                    guard part < p.partCount else { return p.m }
                    let f = Double(part) / Double(p.partCount)
                    let r = Int(Double(p.m) * (1 - (1 - f).squareRoot()))
                    return min(p.m, r / tileRows * tileRows)
                }
                first = boundary(part)
                last = boundary(part + 1)
            }
            let rows = p.splitRows ? first..<last : 0..<p.m
            let columns = p.splitRows ? 0..<p.n : first..<last
            p.block(p, rows, columns, storage! + part * p.scratchPerPart)
        }
    }

    /// One call's operands, read by the parts running on the pool.
    public struct Problem {
        @usableFromInline var m: Int, n: Int, k: Int
        @usableFromInline var a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>
        @usableFromInline var transposeA: Bool, transposeB: Bool, accumulate: Bool
        /// Whether only the tiles of C's upper triangle are computed (``gemm(m:n:k:_:transposeA:_:transposeB:_:accumulate:symmetric:bfloat16Operands:workspace:pool:)``).
        @usableFromInline var upperOnly = false
        /// Whether the parts are runs of rows of C (else runs of columns), each `partSize` long.
        var splitRows = true
        var partSize = 0, partCount = 1
        /// Floats of scratch per part, and the sizes of its packed blocks.
        var scratchPerPart = 0
        @usableFromInline var packedARows = 0, packedBColumns = 0, depth = 0
        /// The block loop of the instruction set chosen for this call.
        var block: BlockKernel = MatMul.baselineBlock
    }

    /// C ← op(A)·op(B), or C ← C + op(A)·op(B) when `accumulate`; all row-major and contiguous.
    ///
    /// - Parameters:
    ///   - m: rows of op(A) and of C.
    ///   - n: columns of op(B) and of C.
    ///   - k: columns of op(A), rows of op(B).
    ///   - a: A, stored m × k, or k × m when `transposeA` (op(A) = Aᵀ).
    ///   - transposeA: whether op(A) is Aᵀ.
    ///   - b: B, stored k × n, or n × k when `transposeB` (op(B) = Bᵀ).
    ///   - transposeB: whether op(B) is Bᵀ.
    ///   - c: C, m × n; must not overlap A or B.
    ///   - accumulate: add to C instead of overwriting it (BLAS's β = 1 rather than 0).
    ///   - symmetric: the caller's promise that op(B) is op(A)ᵀ (`X·Xᵀ`, or `S·S` with S
    ///     symmetric), so that C is symmetric (with `accumulate`, C must be symmetric before too).
    ///     Only the tiles that reach C's upper triangle are computed and the rest is copied across
    ///     the diagonal: the same bits as computing it, since C[j][i] sums the same products as
    ///     C[i][j] in the same order — about half the work for a square product.
    ///   - bfloat16Operands: op(A) and op(B) hold bfloat16 values (as in a bfloat16 Newton–Schulz
    ///     iteration): on a CPU with AVX512-BF16, on the `avx512` path, the product then runs on
    ///     its dot-product instruction (VDPBF16PS, as oneDNN runs PyTorch's bfloat16 matrix
    ///     products), with each operand rounded to bfloat16 (ties to even) as it is packed and the
    ///     sum over k taken a pair of terms at a time — k + 1 before k, for each even k, every
    ///     addition rounded to float32, denormals flushed to zero — whatever the threads and the
    ///     blocking. Elsewhere the float32 path (the in-order sum) runs, which for bfloat16
    ///     operands differs only in the order of the additions.
    ///   - workspace: scratch to reuse across calls; `nil` allocates a temporary one.
    ///   - pool: the threads for products of at least ``parallelThreshold`` multiply-adds.
    ///
    /// The buffers must hold at least m·k, k·n and m·n elements: a shorter buffer is a programming
    /// error and traps, as an out-of-range array index does.
    public static func gemm(
        m: Int, n: Int, k: Int,
        _ a: UnsafeBufferPointer<Float>, transposeA: Bool,
        _ b: UnsafeBufferPointer<Float>, transposeB: Bool,
        _ c: UnsafeMutableBufferPointer<Float>, accumulate: Bool = false, symmetric: Bool = false,
        bfloat16Operands: Bool = false, workspace: Workspace? = nil, pool: ThreadPool = .shared
    ) {
        precondition(!symmetric || m == n, "MatMul.gemm: a symmetric product must be square")
        precondition(m >= 0 && n >= 0 && k >= 0, "MatMul.gemm: negative dimension")
        let (mk, o1) = m.multipliedReportingOverflow(by: k)
        let (kn, o2) = k.multipliedReportingOverflow(by: n)
        let (mn, o3) = m.multipliedReportingOverflow(by: n)
        precondition(!o1 && !o2 && !o3 && a.count >= mk && b.count >= kn && c.count >= mn,
                     "MatMul.gemm: buffers smaller than the \(m)×\(k) · \(k)×\(n) product")
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            if !accumulate { c.baseAddress!.update(repeating: 0, count: mn) }
            return
        }
        let workspace = workspace ?? Workspace()
        if bfloat16Operands && hasBFloat16DotProduct && KernelDispatch.current == .avx512 {
            gemmBFloat16(m: m, n: n, k: k, a.baseAddress!, transposeA: transposeA, b.baseAddress!, transposeB: transposeB,
                         c.baseAddress!, accumulate: accumulate, symmetric: symmetric, workspace: workspace, pool: pool)
            return
        }
        var p = Problem(m: m, n: n, k: k, a: a.baseAddress!, b: b.baseAddress!, c: c.baseAddress!,
                        transposeA: transposeA, transposeB: transposeB, accumulate: accumulate)
        p.block = KernelDispatch.gemmBlock(KernelDispatch.current).0

        // Split the longer side of C into equal runs of whole tiles, one per thread.
        let (work, overflow) = mn.multipliedReportingOverflow(by: k)
        p.upperOnly = symmetric
        p.splitRows = m >= n || symmetric
        let unit = p.splitRows ? tileRows : tileColumns
        let units = ((p.splitRows ? m : n) + unit - 1) / unit
        let parts = (overflow || work >= parallelThreshold) ? min(pool.threadCount, units) : 1
        p.partSize = (units + parts - 1) / parts * unit
        let partCount = ((p.splitRows ? m : n) + p.partSize - 1) / p.partSize
        p.partCount = partCount

        // Scratch of one part: a block of op(A), a block of op(B), one edge tile.
        p.depth = min(k, blockDepth)
        p.packedARows = min(blockRows, roundUp(p.splitRows ? p.partSize : m, tileRows))
        p.packedBColumns = min(blockColumns, roundUp(p.splitRows ? n : p.partSize, tileColumns))
        p.scratchPerPart = roundUp(p.depth * (p.packedARows + p.packedBColumns) + tileRows * tileColumns, 16)
        _ = workspace.reserve(p.scratchPerPart * partCount)
        workspace.problem = p

        if partCount == 1 {
            workspace.runPart(0)
        } else {
            pool.run(partCount, workspace.job)
        }
        workspace.problem = nil
        if symmetric { mirrorUpperTriangle(c.baseAddress!, n, pool: pool) }
    }

    /// Whether this CPU has AVX512-BF16's dot product (and the `avx512` path).
    public static let hasBFloat16DotProduct = optim_cpu_has_avx512bf16() != 0

    /// Tile of the bfloat16 path's micro-kernel: 6 rows × 32 columns (twelve zmm accumulators).
    static let bfloat16TileColumns = 32
    /// Pairs of k in a depth block of the bfloat16 path: a 32-column panel of it is 32 KB.
    static let bfloat16BlockPairs = 256
    /// Column panels in a column block of the bfloat16 path: 16 × 32 KB = 512 KB, in L2.
    static let bfloat16BlockPanels = 16

    /// The bfloat16-operand product on AVX512-BF16 (see `bfloat16Operands`): both operands are
    /// packed once, in parallel, into panels of bfloat16 pairs, then each thread computes a run of
    /// rows (or of columns) of C, depth block by depth block.
    static func gemmBFloat16(m: Int, n: Int, k: Int, _ a: UnsafePointer<Float>, transposeA: Bool, _ b: UnsafePointer<Float>,
                             transposeB: Bool, _ c: UnsafeMutablePointer<Float>, accumulate: Bool, symmetric: Bool,
                             workspace: Workspace, pool: ThreadPool) {
        let columns = bfloat16TileColumns
        let pairs = (k + 1) / 2
        let rowPanels = (m + tileRows - 1) / tileRows, columnPanels = (n + columns - 1) / columns
        let aWords = rowPanels * pairs * tileRows, bWords = columnPanels * pairs * columns
        let (work, overflow) = (m * n).multipliedReportingOverflow(by: k)
        let splitRows = m >= n || symmetric
        let units = splitRows ? rowPanels : columnPanels
        let parts = (overflow || work >= parallelThreshold) ? min(pool.threadCount, units) : 1
        let edgeFloats = tileRows * columns
        let storage = workspace.reserve(aWords + bWords + parts * edgeFloats + 32)
        let raw = UnsafeMutableRawPointer(storage)
        let packedA = raw.bindMemory(to: UInt32.self, capacity: aWords + bWords)
        let packedB = packedA + aWords
        let edgeTiles = storage + aWords + bWords

        @inline(__always) func word(_ even: Float, _ odd: Float) -> UInt32 {
            (BFloat16.round(odd).bitPattern & 0xFFFF_0000) | (BFloat16.round(even).bitPattern >> 16)
        }
        // Packing, split by panels: op(A)'s 6-row panels, then op(B)'s 32-column panels.
        pool.run(parts) { part in
            let aFirst = part * rowPanels / parts, aLast = (part + 1) * rowPanels / parts
            for panel in aFirst..<aLast {
                let out = packedA + panel * pairs * tileRows
                for r in 0..<tileRows {
                    let row = panel * tileRows + r
                    if row >= m {
                        for q in 0..<pairs { out[q * tileRows + r] = 0 }
                    } else if transposeA {
                        for q in 0..<pairs {
                            let even = a[2 * q * m + row], odd: Float = 2 * q + 1 < k ? a[(2 * q + 1) * m + row] : 0
                            out[q * tileRows + r] = word(even, odd)
                        }
                    } else {
                        let source = a + row * k
                        for q in 0..<k / 2 { out[q * tileRows + r] = word(source[2 * q], source[2 * q + 1]) }
                        if k % 2 == 1 { out[(pairs - 1) * tileRows + r] = word(source[k - 1], 0) }
                    }
                }
            }
            let bFirst = part * columnPanels / parts, bLast = (part + 1) * columnPanels / parts
            for panel in bFirst..<bLast {
                let out = packedB + panel * pairs * columns
                if transposeB {
                    for j in 0..<columns {
                        let column = panel * columns + j
                        if column >= n {
                            for q in 0..<pairs { out[q * columns + j] = 0 }
                            continue
                        }
                        let source = b + column * k
                        for q in 0..<k / 2 { out[q * columns + j] = word(source[2 * q], source[2 * q + 1]) }
                        if k % 2 == 1 { out[(pairs - 1) * columns + j] = word(source[k - 1], 0) }
                    }
                } else {
                    let width = min(columns, n - panel * columns)
                    for q in 0..<pairs {
                        let even = b + 2 * q * n + panel * columns
                        let target = out + q * columns
                        if 2 * q + 1 < k {
                            let odd = even + n
                            for j in 0..<width { target[j] = word(even[j], odd[j]) }
                        } else {
                            for j in 0..<width { target[j] = word(even[j], 0) }
                        }
                        for j in width..<columns { target[j] = 0 }
                    }
                }
            }
        }

        // The product: runs of whole row panels (of equal triangle area when symmetric), or of
        // column panels.
        pool.run(parts) { part in
            var panels: Range<Int>
            if symmetric {
                func boundary(_ part: Int) -> Int {
                    guard part < parts else { return rowPanels }
                    let f = Double(part) / Double(parts)
                    return min(rowPanels, Int(Double(rowPanels) * (1 - (1 - f).squareRoot())))
                }
                panels = boundary(part)..<boundary(part + 1)
            } else {
                panels = (part * units / parts)..<((part + 1) * units / parts)
            }
            let rowPanelRange = splitRows ? panels : 0..<rowPanels
            let columnPanelRange = splitRows ? 0..<columnPanels : panels
            let edge = edgeTiles + part * edgeFloats
            var depthStart = 0
            while depthStart < pairs {
                let depth = min(bfloat16BlockPairs, pairs - depthStart)
                let load: Int32 = accumulate || depthStart > 0 ? 1 : 0
                var blockStart = columnPanelRange.lowerBound
                while blockStart < columnPanelRange.upperBound {
                    let blockEnd = min(blockStart + bfloat16BlockPanels, columnPanelRange.upperBound)
                    for rowPanel in rowPanelRange {
                        let row = rowPanel * tileRows, height = min(tileRows, m - row)
                        let aPanel = UnsafePointer(packedA + (rowPanel * pairs + depthStart) * tileRows)
                        for columnPanel in blockStart..<blockEnd {
                            let column = columnPanel * columns
                            // Symmetric: tiles wholly below the diagonal are mirrored afterwards.
                            if symmetric && column + columns <= row { continue }
                            let bPanel = UnsafePointer(packedB + (columnPanel * pairs + depthStart) * columns)
                            let width = min(columns, n - column)
                            let cTile = c + row * n + column
                            if height == tileRows && width == columns {
                                optim_bf16_tile_6x32(depth, aPanel, bPanel, cTile, n, load)
                            } else {
                                edge.update(repeating: 0, count: edgeFloats)
                                if load != 0 {
                                    for r in 0..<height { (edge + r * columns).update(from: cTile + r * n, count: width) }
                                }
                                optim_bf16_tile_6x32(depth, aPanel, bPanel, edge, columns, 1)
                                for r in 0..<height { (cTile + r * n).update(from: edge + r * columns, count: width) }
                            }
                        }
                    }
                    blockStart = blockEnd
                }
                depthStart += depth
            }
        }
        if symmetric { mirrorUpperTriangle(c, n, pool: pool) }
    }

    /// Copies the upper triangle of the n × n matrix `c` onto its lower triangle, in 64 × 64
    /// blocks (a transposed copy), block rows shared out between the pool's threads.
    static func mirrorUpperTriangle(_ c: UnsafeMutablePointer<Float>, _ n: Int, pool: ThreadPool) {
        let block = 64, blockRows = (n + block - 1) / block
        let parts = n * n >= parallelThreshold / 16 ? min(pool.threadCount, blockRows) : 1
        pool.run(parts) { part in
            var blockRow = part
            while blockRow < blockRows {
                let i0 = blockRow * block
                var j0 = 0
                while j0 <= i0 {
                    for i in i0..<min(i0 + block, n) {
                        let row = c + i * n
                        for j in j0..<min(j0 + block, i) { row[j] = c[j * n + i] }
                    }
                    j0 += block
                }
                blockRow += parts
            }
        }
    }

    @inlinable @inline(__always)
    static func roundUp(_ value: Int, _ multiple: Int) -> Int { (value + multiple - 1) / multiple * multiple }

    /// Computes the block `rows × columns` of C: the loops around the micro-kernel.
    @inlinable @inline(__always)
    static func multiplyBlock(_ p: Problem, rows: Range<Int>, columns: Range<Int>, scratch: UnsafeMutablePointer<Float>) {
        let packedA = scratch
        let packedB = scratch + p.depth * p.packedARows
        let edgeTile = packedB + p.depth * p.packedBColumns
        var depthStart = 0
        while depthStart < p.k {
            let depth = min(blockDepth, p.k - depthStart)
            let load = p.accumulate || depthStart > 0
            var columnStart = columns.lowerBound
            while columnStart < columns.upperBound {
                let columnCount = min(p.packedBColumns, columns.upperBound - columnStart)
                // Upper triangle only: columns left of every row of this part are skipped.
                if p.upperOnly && columnStart + columnCount <= rows.lowerBound {
                    columnStart += columnCount
                    continue
                }
                packB(p, depthStart: depthStart, depth: depth, columnStart: columnStart, columnCount: columnCount, into: packedB)
                var rowStart = rows.lowerBound
                while rowStart < rows.upperBound {
                    let rowCount = min(p.packedARows, rows.upperBound - rowStart)
                    if p.upperOnly && columnStart + columnCount <= rowStart { break }
                    packA(p, rowStart: rowStart, rowCount: rowCount, depthStart: depthStart, depth: depth, into: packedA)
                    var j = 0
                    while j < columnCount {
                        let tileWidth = min(tileColumns, columnCount - j)
                        let bPanel = UnsafePointer(packedB + j * depth)
                        var i = 0
                        while i < rowCount {
                            let tileHeight = min(tileRows, rowCount - i)
                            if p.upperOnly && columnStart + j + tileWidth <= rowStart + i { break }
                            let aPanel = UnsafePointer(packedA + i * depth)
                            let cTile = p.c + (rowStart + i) * p.n + columnStart + j
                            if tileHeight == tileRows && tileWidth == tileColumns {
                                kernel(depth, aPanel, bPanel, cTile, p.n, load: load)
                            } else {
                                edge(depth, aPanel, bPanel, cTile, p.n, load: load, height: tileHeight, width: tileWidth, tile: edgeTile)
                            }
                            i += tileRows
                        }
                        j += tileColumns
                    }
                    rowStart += rowCount
                }
                columnStart += columnCount
            }
            depthStart += depth
        }
    }

    /// Packs op(A)[rowStart..., depthStart...] into panels of ``tileRows`` rows: for each k, the
    /// panel's rows side by side; rows past the end are zero.
    @inlinable @inline(__always)
    static func packA(_ p: Problem, rowStart: Int, rowCount: Int, depthStart: Int, depth: Int, into packed: UnsafeMutablePointer<Float>) {
        var panel = 0
        while panel < rowCount {
            let out = packed + panel * depth
            let height = min(tileRows, rowCount - panel)
            let firstRow = rowStart + panel
            if p.transposeA {
                // A is k × m: op(A)[i][q] = A[q][i], the panel's rows are contiguous in A.
                for q in 0..<depth {
                    let source = p.a + (depthStart + q) * p.m + firstRow
                    let target = out + q * tileRows
                    for r in 0..<height { target[r] = source[r] }
                    for r in height..<tileRows { target[r] = 0 }
                }
            } else if height == tileRows {
                // A full panel: six rows of A read side by side, the panel written in order.
                let s0 = p.a + firstRow * p.k + depthStart, s1 = s0 + p.k, s2 = s1 + p.k
                let s3 = s2 + p.k, s4 = s3 + p.k, s5 = s4 + p.k
                var target = out
                for q in 0..<depth {
                    target[0] = s0[q]; target[1] = s1[q]; target[2] = s2[q]
                    target[3] = s3[q]; target[4] = s4[q]; target[5] = s5[q]
                    target += tileRows
                }
            } else {
                for r in 0..<tileRows {
                    if r < height {
                        let source = p.a + (firstRow + r) * p.k + depthStart
                        for q in 0..<depth { out[q &* tileRows &+ r] = source[q] }
                    } else {
                        for q in 0..<depth { out[q &* tileRows &+ r] = 0 }
                    }
                }
            }
            panel += tileRows
        }
    }

    /// Packs op(B)[depthStart..., columnStart...] into panels of ``tileColumns`` columns: for each
    /// k, the panel's 16 values contiguous; columns past the end are zero.
    @inlinable @inline(__always)
    static func packB(_ p: Problem, depthStart: Int, depth: Int, columnStart: Int, columnCount: Int, into packed: UnsafeMutablePointer<Float>) {
        var panel = 0
        while panel < columnCount {
            let out = packed + panel * depth
            let width = min(tileColumns, columnCount - panel)
            let firstColumn = columnStart + panel
            if p.transposeB {
                // B is n × k: op(B)[q][j] = B[j][q], each column of the panel is a row of B.
                for j in 0..<tileColumns {
                    if j < width {
                        let source = p.b + (firstColumn + j) * p.k + depthStart
                        for q in 0..<depth { out[q * tileColumns + j] = source[q] }
                    } else {
                        for q in 0..<depth { out[q * tileColumns + j] = 0 }
                    }
                }
            } else if width == tileColumns {
                for q in 0..<depth {
                    let source = UnsafeRawPointer(p.b + (depthStart + q) * p.n + firstColumn)
                    UnsafeMutableRawPointer(out + q * tileColumns).storeBytes(of: source.loadUnaligned(as: Vector.self), as: Vector.self)
                }
            } else {
                for q in 0..<depth {
                    let source = p.b + (depthStart + q) * p.n + firstColumn
                    let target = out + q * tileColumns
                    for j in 0..<width { target[j] = source[j] }
                    for j in width..<tileColumns { target[j] = 0 }
                }
            }
            panel += tileColumns
        }
    }

    /// A partial tile at the bottom or right edge of C: computed in a full scratch tile, of which
    /// only the valid part is read from and written back to C.
    @inlinable @inline(__always)
    static func edge(_ depth: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                     load: Bool, height: Int, width: Int, tile: UnsafeMutablePointer<Float>) {
        tile.update(repeating: 0, count: tileRows * tileColumns)
        if load {
            for r in 0..<height { (tile + r * tileColumns).update(from: c + r * ldc, count: width) }
        }
        kernel(depth, a, b, tile, tileColumns, load: load)
        for r in 0..<height { (c + r * ldc).update(from: tile + r * tileColumns, count: width) }
    }

    /// The micro-kernel: a 6 × 16 tile of C, in registers, plus the product of a packed 6 × depth
    /// panel of op(A) and a packed depth × 16 panel of op(B).
    @inlinable @inline(__always)
    static func kernel(_ depth: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int, load: Bool) {
        var c0 = Vector(), c1 = Vector(), c2 = Vector(), c3 = Vector(), c4 = Vector(), c5 = Vector()
        if load {
            c0 = loadVector(c); c1 = loadVector(c + ldc); c2 = loadVector(c + 2 * ldc)
            c3 = loadVector(c + 3 * ldc); c4 = loadVector(c + 4 * ldc); c5 = loadVector(c + 5 * ldc)
        }
        var a = a, b = b
        for _ in 0..<depth {
            let row = loadVector(b)
            c0 += Vector(repeating: a[0]) * row
            c1 += Vector(repeating: a[1]) * row
            c2 += Vector(repeating: a[2]) * row
            c3 += Vector(repeating: a[3]) * row
            c4 += Vector(repeating: a[4]) * row
            c5 += Vector(repeating: a[5]) * row
            a += tileRows
            b += tileColumns
        }
        storeVector(c0, c); storeVector(c1, c + ldc); storeVector(c2, c + 2 * ldc)
        storeVector(c3, c + 3 * ldc); storeVector(c4, c + 4 * ldc); storeVector(c5, c + 5 * ldc)
    }

    @inlinable @inline(__always)
    static func loadVector(_ pointer: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    @inlinable @inline(__always)
    static func loadVector(_ pointer: UnsafeMutablePointer<Float>) -> Vector {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    @inlinable @inline(__always)
    static func storeVector(_ vector: Vector, _ pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: vector, as: Vector.self)
    }
}
