/// Whether buffers hold only finite values: a read-only pass, parallel over all of them.
package enum Finiteness {
    /// One flag per buffer: `true` when every element is finite.
    package static func check(_ buffers: [UnsafeBufferPointer<Float>], on pool: ThreadPool) -> [Bool] {
        var plan = ChunkPlan()
        for (index, buffer) in buffers.enumerated() { plan.add(tensor: index, count: buffer.count) }
        var finite = [Bool](repeating: true, count: plan.items.count)
        finite.withUnsafeMutableBufferPointer { finite in
            let items = plan.items, output = finite.baseAddress!
            let body = { (item: Int) in
                let buffer = buffers[items[item].tensor]
                output[item] = allFinite(UnsafeBufferPointer(rebasing: buffer[items[item].range]))
            }
            plan.forEachItem(on: pool, body)
        }
        var result = [Bool](repeating: true, count: buffers.count)
        for (item, ok) in zip(plan.items, finite) where !ok { result[item.tensor] = false }
        return result
    }

    /// True when no element is NaN or ±Inf (exponent bits all ones).
    static func allFinite(_ buffer: UnsafeBufferPointer<Float>) -> Bool {
        let exponent = SIMD16<UInt32>(repeating: 0x7F80_0000)
        var index = 0
        var bad = SIMDMask<SIMD16<Int32>>(repeating: false)
        let base = UnsafeRawPointer(buffer.baseAddress!)
        while index + 16 <= buffer.count {
            let bits = base.loadUnaligned(fromByteOffset: index * 4, as: SIMD16<UInt32>.self)
            bad = bad .| ((bits & exponent) .== exponent)
            index += 16
        }
        if any(bad) { return false }
        while index < buffer.count {
            if !buffer[index].isFinite { return false }
            index += 1
        }
        return true
    }
}
