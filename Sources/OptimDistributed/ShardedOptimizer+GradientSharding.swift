#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Optim

/// How much of the training state ``ShardedOptimizer`` splits across ranks (Rajbhandari et al.,
/// 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
/// arXiv:1910.02054).
public enum ZeROStage: Int, Sendable, CaseIterable {
    /// The optimizer state: each rank keeps its `1/W`; every rank holds the full gradients
    /// (averaged by ``DataParallel``).
    case one = 1
    /// The optimizer state and the gradients: gradients are reduce-scattered bucket by bucket
    /// (``ShardedOptimizer/beginGradientReduction(scale:averaging:)``), each rank keeping only the sum of
    /// its `1/W`, and each full gradient is freed once its bucket has been sent.
    case two = 2
}

/// ZeRO-2's gradient reduction: buckets of whole tensors from the last one back, each
/// reduce-scattered into this rank's shard of the gradient as soon as backward has finished it.
final class GradientSharding {
    /// The most buckets sent at once: a bucket waits for the one this many before it.
    static let bucketsInFlight = 2
    let reduction: OverlappedReduction
    /// This rank's part of every gradient: its range of the flat index space.
    let shard: UnsafeMutableBufferPointer<Float>
    /// Each bucket's flat range, and its elements per rank (its overlap with every rank's range).
    let flatRanges: [Range<Int>]
    let counts: [[Int]]
    /// The buckets being sent (allocated when packed, freed when complete).
    var sendBuffers: [UnsafeMutableBufferPointer<Float>?]
    /// Which parameters have a gradient: here (1 or 0), then summed over the ranks.
    var presence: [Float]
    /// The shard holds this step's reduced gradients (until the step takes them).
    var reduced = false
    var scale: Float = 1
    var averaging = false

    init(counts parameterCounts: [Int], partition: [Range<Int>], rank: Int, bucketElements: Int) {
        reduction = OverlappedReduction(counts: parameterCounts, bucketElements: bucketElements, overheadPerTensor: 0,
                                        maximumInFlight: Self.bucketsInFlight)
        var offsets = [0]
        for count in parameterCounts { offsets.append(offsets.last! + count) }
        flatRanges = reduction.buckets.map { offsets[$0.lowerBound]..<offsets[$0.upperBound] }
        counts = flatRanges.map { range in partition.map { range.clamped(to: $0).count } }
        shard = FloatStorage.allocate(partition[rank].count)
        sendBuffers = Array(repeating: nil, count: reduction.buckets.count)
        presence = Array(repeating: 0, count: parameterCounts.count)
    }

    /// Frees the copy of a bucket that has been sent.
    func release(_ bucket: Int) {
        if let buffer = sendBuffers[bucket] { FloatStorage.deallocate(buffer) }
        sendBuffers[bucket] = nil
    }

    deinit {
        for bucket in sendBuffers.indices { release(bucket) }
        FloatStorage.deallocate(shard)
    }
}

extension ShardedOptimizer {
    /// This rank's shard of the reduced gradients under ZeRO-2, in the flat index space of
    /// ``shard``; `nil` under ZeRO-1.
    public var gradientShard: UnsafeBufferPointer<Float>? { gradientSharding.map { UnsafeBufferPointer($0.shard) } }

    /// ZeRO-2: prepares the reduction of the coming backward pass. Every gradient is multiplied
    /// by `scale` (this rank's share of the global batch; 1 for a sum) and reduce-scattered, bucket
    /// by bucket as ``gradientsReady(_:)`` reports them, so that each rank ends with the sum over
    /// the ranks of its own range of every gradient — divided by the number of ranks when
    /// `averaging` (as `DataParallel.averageGradients()`). Not collective.
    public func beginGradientReduction(scale: Float = 1, averaging: Bool = false) throws(DistributedError) {
        guard let state = gradientSharding else {
            throw .invalidConfiguration("beginGradientReduction is ZeRO-2's (stage: .two); under ZeRO-1, DataParallel reduces the gradients")
        }
        for index in state.presence.indices { state.presence[index] = 0 }
        for bucket in state.sendBuffers.indices { state.release(bucket) }
        state.scale = scale
        state.averaging = averaging
        state.reduced = false
        state.reduction.start = { [unowned self, unowned state] bucket throws(DistributedError) in try startBucket(state, bucket: bucket) }
        state.reduction.completed = { [unowned state] bucket in state.release(bucket) }
        state.reduction.begin()
    }

    /// ZeRO-2: marks the gradients of `finished` final (a model's `gradientReadyHandler`, its
    /// indices mapped to its parameters), and starts the reduce-scatter of every bucket now
    /// complete, in bucket order; each full gradient is freed once packed. The buckets follow
    /// this optimizer's order of the parameters (its groups', which may not be the model's), so
    /// a bucket starts once all its parameters are reported. Parameters this optimizer does not
    /// hold are ignored; an error is kept and thrown by ``finishGradientReduction()``.
    public func gradientsReady<Parameters: Sequence<Parameter>>(_ finished: Parameters) {
        guard let state = gradientSharding, state.reduction.active else { return }
        state.reduction.markReady(finished.lazy.compactMap { self.indexByObject[ObjectIdentifier($0)] })
    }

    /// ZeRO-2: sends the buckets backward did not report (one at a time), waits for every
    /// bucket, and leaves this rank's part of the reduced gradients in ``gradientShard`` for the
    /// next step. Collective.
    @discardableResult
    public func finishGradientReduction() throws(DistributedError) -> DataParallel.ReductionTiming {
        guard let state = gradientSharding, state.reduction.active else {
            throw .invalidConfiguration("finishGradientReduction() without beginGradientReduction(scale:averaging:) before the backward pass (ZeRO-2)")
        }
        let timing = try state.reduction.finish()
        if state.averaging {
            let divisor = Float(communicator.size)
            for index in state.shard.indices { state.shard[index] /= divisor }
        }
        try state.presence.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try communicator.allreduceSum(buffer) }
        state.reduced = true
        return timing
    }

    /// ZeRO-2 without overlap: reduce-scatters the gradients as they are now (after backward),
    /// bucket by bucket. Collective.
    public func reduceGradients(scale: Float = 1, averaging: Bool = false) throws(DistributedError) {
        try beginGradientReduction(scale: scale, averaging: averaging)
        try finishGradientReduction()
    }

    /// Packs bucket `bucket` (scaled; zeros for a parameter without a gradient), frees the full
    /// gradients in it, and starts its reduce-scatter into this rank's part of the shard.
    private func startBucket(_ state: GradientSharding, bucket: Int) throws(DistributedError) -> any CommunicationRequest {
        let range = state.reduction.buckets[bucket], flat = state.flatRanges[bucket]
        let buffer = FloatStorage.allocate(flat.count)
        state.sendBuffers[bucket] = buffer
        var position = 0
        for index in range {
            let parameter = parameters[index], count = parameter.count
            if let gradient = parameter.gradient {
                state.presence[index] = 1
                if count > 0 {
                    let source = gradient.baseAddress!, destination = buffer.baseAddress! + position, scale = state.scale
                    if scale == 1 {
                        destination.update(from: source, count: count)
                    } else {
                        for element in 0..<count { destination[element] = source[element] * scale }
                    }
                }
            }
            parameter.releaseGradientStorage()
            position += count
        }
        let own = flat.clamped(to: shard)
        let receive = UnsafeMutableBufferPointer(rebasing: state.shard[(own.lowerBound - shard.lowerBound)..<(own.upperBound - shard.lowerBound)])
        return try state.counts[bucket].withUnsafeBufferPointer { counts throws(DistributedError) in
            try communicator.startReduceScatterSum(UnsafeBufferPointer(buffer), counts: counts, into: receive)
        }
    }

    /// ZeRO-2: points every part's gradient at its range of the reduced shard (no gradient where
    /// no rank had one). Throws unless a reduction finished since the last step.
    func takeShardGradients(_ state: GradientSharding) throws(DistributedError) {
        guard state.reduced else {
            throw .invalidConfiguration("ZeRO-2: step() needs the gradients reduced first (finishGradientReduction() or reduceGradients(scale:))")
        }
        state.reduced = false
        for index in parameters.indices {
            let range = sliceRanges[index]
            if state.presence[index] > 0 {
                let start = layout.offsets[index] + range.lowerBound - shard.lowerBound
                try? slices[index].setGradient(borrowing: range.isEmpty ? Self.emptyStorage : UnsafeMutableBufferPointer(rebasing: state.shard[start..<(start + range.count)]))
            } else {
                slices[index].zeroGradient()
            }
        }
    }

    /// ZeRO-2: the first parameter whose gradient is not finite on some rank (the same answer on
    /// every rank). Collective.
    func firstNonFiniteShardGradient() throws(DistributedError) -> Parameter? {
        var flags = slices.map { slice -> Float in
            guard let gradient = slice.gradient else { return 0 }
            return gradient.allSatisfy(\.isFinite) ? 0 : 1
        }
        try flags.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try communicator.allreduceSum(buffer) }
        return flags.firstIndex { $0 > 0 }.map { parameters[$0] }
    }
}

extension ShardedOptimizer: ShardedGradientNorms {
    /// Under ZeRO-2: every parameter's sum of squares over the ranks' shards (one allreduce);
    /// under ZeRO-1, nil (every rank holds the full gradients).
    package func gradientSumsOfSquares(threadPool: ThreadPool) throws(OptimError) -> [Double?]? {
        guard let state = gradientSharding else { return nil }
        guard state.reduced else {
            throw .invalidConfiguration("ZeRO-2: gradient clipping needs the gradients reduced first (finishGradientReduction() or reduceGradients(scale:))")
        }
        var sums = [Double](repeating: 0, count: parameters.count)
        for index in parameters.indices where state.presence[index] > 0 {
            let range = sliceRanges[index], start = layout.offsets[index] + range.lowerBound - shard.lowerBound
            var sum = 0.0
            for element in start..<(start + range.count) { sum += Double(state.shard[element]) * Double(state.shard[element]) }
            sums[index] = sum
        }
        do {
            try sums.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try communicator.allreduceSum(buffer) }
        } catch {
            throw .invalidConfiguration("ZeRO-2 gradient norm across ranks: \(error)")
        }
        return parameters.indices.map { state.presence[$0] > 0 ? sums[$0] : nil }
    }
}
