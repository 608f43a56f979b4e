/// L2 norms of many buffers at once: a read-only pass split into the same chunks as a step, with
/// partial sums added in chunk order, so the result does not depend on the thread count.
public enum GradientNorms {
    /// `Σ x²` of each buffer, accumulated in Double.
    public static func sumsOfSquares(_ buffers: [UnsafeBufferPointer<Float>], threadPool: ThreadPool = .shared) -> [Double] {
        var plan = ChunkPlan()
        for (index, buffer) in buffers.enumerated() { plan.add(tensor: index, count: buffer.count) }
        var partial = [Double](repeating: 0, count: plan.items.count)
        let items = plan.items
        partial.withUnsafeMutableBufferPointer { partial in
            let output = partial.baseAddress!
            let body = { (item: Int) in
                output[item] = sumOfSquares(UnsafeBufferPointer(rebasing: buffers[items[item].tensor][items[item].range]))
            }
            plan.forEachItem(on: threadPool, body)
        }
        var sums = [Double](repeating: 0, count: buffers.count)
        for (item, sum) in zip(items, partial) { sums[item.tensor] += sum }
        return sums
    }

    /// `Σ x²` of one buffer: Float vectors over blocks of 256 elements, Double across blocks.
    public static func sumOfSquares(_ buffer: UnsafeBufferPointer<Float>) -> Double {
        guard let base = buffer.baseAddress else { return 0 }
        var total = 0.0
        var index = 0
        while index + 256 <= buffer.count {
            var block = FloatVector()
            for offset in stride(from: index, to: index + 256, by: Elementwise.width) {
                let x = Elementwise.load(base, offset, Elementwise.width)
                block += x * x
            }
            total += Double(block.sum())
            index += 256
        }
        while index < buffer.count {
            total += Double(buffer[index]) * Double(buffer[index])
            index += 1
        }
        return total
    }
}
