/// What the sharded optimizer needs from the optimizer it runs on a shard, beyond ``Optimizer``:
/// the size of its state and a way to record a step skipped for a non-finite gradient that only
/// the full gradient shows.
package protocol ShardableOptimizer: Optimizer {
    /// Bytes held in optimizer state buffers (moments, momentum, slow weights, …): 4 per float32
    /// element, 2 per bfloat16 element, and for 8-bit state 1 per code plus 4 per block's absmax;
    /// padding not counted.
    var stateByteCount: Int { get }
    /// Does what a step under ``NonFinitePolicy/skipStep`` does on a non-finite gradient: counts
    /// a skipped step and drops the pending gradient factors, touching nothing else.
    func recordSkippedStep()
    /// Whether everything it wraps is shardable too.
    var isShardable: Bool { get }
}

extension GradientOptimizer: ShardableOptimizer {
    /// ZeRO-1 here cuts the flat parameter space at arbitrary elements, so only elementwise rules
    /// shard; a rule over whole tensors (Adafactor's factored statistics, Muon's Newton–Schulz)
    /// would see pieces of a matrix.
    package var isShardable: Bool { !Rule.updatesWholeTensors }

    package var stateByteCount: Int {
        slots.reduce(0) { total, slot in
            slot.halves.reduce(slot.codes.reduce(slot.state.reduce(total) { $0 + $1.count * MemoryLayout<Float>.stride }) { $0 + $1.count }) { $0 + $1.count * 2 }
        }
    }

    package func recordSkippedStep() {
        skippedSteps += 1
        for index in slots.indices { slots[index].gradientScale = 1 }
    }
}

extension Lookahead: ShardableOptimizer {
    package var isShardable: Bool { (base as? any ShardableOptimizer)?.isShardable ?? false }

    package var stateByteCount: Int {
        slowWeights.reduce(0) { $0 + $1.count * MemoryLayout<Float>.stride } + ((base as? any ShardableOptimizer)?.stateByteCount ?? 0)
    }

    package func recordSkippedStep() { (base as? any ShardableOptimizer)?.recordSkippedStep() }
}

extension Optimizer {
    /// Bytes of optimizer state this optimizer holds on this rank: its moments, momentum buffers,
    /// slow weights, … (4 bytes per float32 element, 2 per bfloat16 element; 8-bit state (``StateDType/int8``) 1 byte per
    /// element and 4 per block of 256; alignment padding not counted); `nil` for an
    /// optimizer type the library does not know. A `ShardedOptimizer` reports its shard's.
    ///
    /// For Adam on `N` parameters this is `8N` bytes (two moments); sharded over `W` ranks,
    /// about `8N / W` on each.
    public var optimizerStateBytes: Int? {
        (self as? any ShardableOptimizer).map(\.stateByteCount)
    }
}
