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
    /// Below this many elements, a loop runs on the calling thread alone.
    static let parallelThreshold = 1 << 16

    private(set) var items: [Item] = []
    private(set) var totalCount = 0

    mutating func reset() {
        items.removeAll(keepingCapacity: true)
        totalCount = 0
    }

    /// Adds tensor number `tensor`, of `count` elements.
    mutating func add(tensor: Int, count: Int) {
        var start = 0
        while start < count {
            let end = min(start + Self.chunkSize, count)
            items.append(Item(tensor: tensor, range: start..<end))
            start = end
        }
        totalCount += count
    }

    /// Runs `body(tensor, range)` for every chunk, in parallel on `pool` when the plan is large.
    func run(on pool: ThreadPool, _ body: (Int, Range<Int>) -> Void) {
        items.withUnsafeBufferPointer { items in
            if totalCount < Self.parallelThreshold {
                for item in items { body(item.tensor, item.range) }
            } else {
                pool.parallelFor(items.count) { index in body(items[index].tensor, items[index].range) }
            }
        }
    }
}
