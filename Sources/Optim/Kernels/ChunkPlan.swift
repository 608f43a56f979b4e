#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Multi-tensor apply: the elements of many tensors cut into equal chunks, so one parallel loop
/// balances a step over all parameters whatever their sizes — 20,000 small tensors step as fast
/// as one large tensor of the same total size.
///
/// The plan's storage is kept between steps: rebuilding it allocates nothing once it has grown.
struct ChunkPlan {
    struct Item {
        var tensor: Int
        var range: Range<Int>
    }

    /// Elements per chunk: large enough to amortise scheduling, small enough to balance threads.
    static let chunkSize = 1 << 15
    /// Cache lines of each stream of the next tensor that the multi-tensor loop asks for while it
    /// updates the current one (`GradientOptimizer`'s prefetch): 8 unless the environment variable
    /// `OPTIM_PREFETCH_LINES` (0 to 64) sets another count, for measuring.
    static let prefetchLines: Int = {
        guard let text = getenv("OPTIM_PREFETCH_LINES"), let value = Int(String(cString: text)), (0...64).contains(value) else { return 8 }
        return value
    }()

    /// Below this many elements, a loop runs on the calling thread alone.
    static let parallelThreshold = 1 << 16

    private(set) var items: [Item] = []
    /// `offsets[i]`: elements in items before item `i`.
    private var offsets: [Int] = []
    private(set) var totalCount = 0

    mutating func reset() {
        items.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        totalCount = 0
    }

    /// Adds tensor number `tensor`, of `count` elements.
    mutating func add(tensor: Int, count: Int) {
        add(tensor: tensor, range: 0..<count)
    }

    /// Adds tensor number `tensor` as one item, not cut into chunks (for whole-tensor updates).
    mutating func addWhole(tensor: Int, count: Int) {
        items.append(Item(tensor: tensor, range: 0..<count))
        offsets.append(totalCount)
        totalCount += count
    }

    /// Adds the elements `range` of tensor number `tensor` (a run of rows of a sparse gradient).
    mutating func add(tensor: Int, range: Range<Int>) {
        var start = range.lowerBound
        while start < range.upperBound {
            let end = min(start + Self.chunkSize, range.upperBound)
            items.append(Item(tensor: tensor, range: start..<end))
            offsets.append(totalCount + start - range.lowerBound)
            start = end
        }
        totalCount += range.count
    }

    /// Whether the plan is large enough to spread over `pool`'s threads.
    func isParallel(on pool: ThreadPool) -> Bool {
        pool.threadCount > 1 && totalCount >= Self.parallelThreshold
    }

    /// The items of part `part` of `parts`: one contiguous run of chunks holding an equal share
    /// of the elements, as OpenMP's static schedule does — long sequential streams per thread
    /// are what the hardware prefetchers reward (interleaving small chunks measured ~10% slower).
    func items(part: Int, of parts: Int) -> Range<Int> {
        offsets.withUnsafeBufferPointer { offsets in
            Self.firstItem(offsets, atOrAfter: totalCount * part / parts)..<Self.firstItem(offsets, atOrAfter: totalCount * (part + 1) / parts)
        }
    }

    /// Calls `body(index)` for every item, in parallel on `pool` when the plan is large. It
    /// allocates a little per call (see ``ThreadPool/parallelFor(_:_:)``): per-step loops use
    /// ``items(part:of:)`` with a job made once instead.
    func forEachItem(on pool: ThreadPool, _ body: (Int) -> Void) {
        if isParallel(on: pool) {
            pool.parallelFor(items.count, body)
        } else {
            for index in items.indices { body(index) }
        }
    }

    /// The index of the first item starting at or after element `position`.
    private static func firstItem(_ offsets: UnsafeBufferPointer<Int>, atOrAfter position: Int) -> Int {
        var (low, high) = (0, offsets.count)
        while low < high {
            let middle = (low + high) / 2
            if offsets[middle] < position { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
