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
    /// This rank's part of every gradient: its range of the flat index space.
    let shard: UnsafeMutableBufferPointer<Float>
    /// Each bucket's parameters (contiguous) and flat range, in launch order: last first.
    let buckets: [Range<Int>]
    let flatRanges: [Range<Int>]
    /// Each bucket's elements per rank: its overlap with every rank's range.
    var counts: [[Int]]
    let bucketOfParameter: [Int]
    /// The buckets being sent (allocated when packed, freed when complete).
    var sendBuffers: [UnsafeMutableBufferPointer<Float>?]
    var requests: [(any CommunicationRequest)?]
    var completed: [Bool]
    var ready: [Bool]
    var readyCounts: [Int]
    /// Which parameters have a gradient: here (1 or 0), then summed over the ranks.
    var presence: [Float]
    var next = 0
    var active = false
    /// The shard holds this step's reduced gradients (until the step takes them).
    var reduced = false
    var scale: Float = 1
    var averaging = false
    var error: DistributedError?
    var firstStart = 0.0, lastCompletion = 0.0
    var startedDuringBackward = 0
    var polling = false
    lazy var poller = ProgressPoller()

    init(counts parameterCounts: [Int], partition: [Range<Int>], rank: Int, bucketElements: Int) {
        var buckets: [Range<Int>] = [], upper = parameterCounts.count, elements = 0
        for index in stride(from: parameterCounts.count - 1, through: 0, by: -1) {
            elements += parameterCounts[index]
            let limit = buckets.isEmpty ? min(bucketElements, DataParallel.firstBucketBytes / MemoryLayout<Float>.stride) : bucketElements
            if elements >= limit || index == 0 {
                buckets.append(index..<upper)
                upper = index
                elements = 0
            }
        }
        var offsets = [0]
        for count in parameterCounts { offsets.append(offsets.last! + count) }
        flatRanges = buckets.map { offsets[$0.lowerBound]..<offsets[$0.upperBound] }
        counts = flatRanges.map { range in partition.map { range.clamped(to: $0).count } }
        var bucketOfParameter = Array(repeating: 0, count: parameterCounts.count)
        for (bucket, range) in buckets.enumerated() { for index in range { bucketOfParameter[index] = bucket } }
        self.buckets = buckets
        self.bucketOfParameter = bucketOfParameter
        shard = FloatStorage.allocate(partition[rank].count)
        sendBuffers = Array(repeating: nil, count: buckets.count)
        requests = Array(repeating: nil, count: buckets.count)
        completed = Array(repeating: false, count: buckets.count)
        ready = Array(repeating: false, count: parameterCounts.count)
        readyCounts = Array(repeating: 0, count: buckets.count)
        presence = Array(repeating: 0, count: parameterCounts.count)
    }

    deinit {
        if polling { poller.stop() }
        poller.end()
        for buffer in sendBuffers { if let buffer { FloatStorage.deallocate(buffer) } }
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
        for index in state.ready.indices {
            state.ready[index] = false
            state.presence[index] = 0
        }
        for index in state.buckets.indices {
            state.readyCounts[index] = 0
            if let buffer = state.sendBuffers[index] { FloatStorage.deallocate(buffer) }
            state.sendBuffers[index] = nil
            state.requests[index] = nil
            state.completed[index] = false
        }
        state.next = 0
        state.scale = scale
        state.averaging = averaging
        state.error = nil
        state.startedDuringBackward = 0
        state.reduced = false
        state.active = true
    }

    /// ZeRO-2: marks the gradients of `finished` final (a model's `gradientReadyHandler`, its
    /// indices mapped to its parameters), and starts the reduce-scatter of every bucket now
    /// complete, in bucket order; each full gradient is freed once packed. The buckets follow
    /// this optimizer's order of the parameters (its groups', which may not be the model's), so
    /// a bucket starts once all its parameters are reported. Parameters this optimizer does not
    /// hold are ignored; an error is kept and thrown by ``finishGradientReduction()``.
    public func gradientsReady<Parameters: Sequence<Parameter>>(_ finished: Parameters) {
        guard let state = gradientSharding, state.active else { return }
        state.poller.lock.lock()
        defer { state.poller.lock.unlock() }
        guard state.error == nil else { return }
        for parameter in finished {
            guard let index = indexByObject[ObjectIdentifier(parameter)], !state.ready[index] else { continue }
            state.ready[index] = true
            state.readyCounts[state.bucketOfParameter[index]] += 1
        }
        do throws(DistributedError) {
            try launchReadyBuckets(state, duringBackward: true)
            try progressBuckets(state)
        } catch {
            state.error = error
        }
    }

    /// ZeRO-2: sends the buckets backward did not report (one at a time), waits for every
    /// bucket, and leaves this rank's part of the reduced gradients in ``gradientShard`` for the
    /// next step. Collective.
    @discardableResult
    public func finishGradientReduction() throws(DistributedError) -> DataParallel.ReductionTiming {
        guard let state = gradientSharding, state.active else {
            throw .invalidConfiguration("finishGradientReduction() without beginGradientReduction(scale:averaging:) before the backward pass (ZeRO-2)")
        }
        state.active = false
        if state.polling {
            state.poller.stop()
            state.polling = false
        }
        if let error = state.error { throw error }
        for index in state.ready.indices where !state.ready[index] {
            state.ready[index] = true
            state.readyCounts[state.bucketOfParameter[index]] += 1
        }
        let waitStart = Self.now()
        // Buckets in flight first, then the rest one at a time: at most one more bucket's copy.
        for index in 0..<state.next where !state.completed[index] { try complete(state, bucket: index) }
        while state.next < state.buckets.count {
            let index = state.next
            try launchReadyBuckets(state, duringBackward: false, limit: 1)
            try complete(state, bucket: index)
        }
        let exposed = Self.now() - waitStart
        if state.averaging {
            let divisor = Float(communicator.size)
            for index in state.shard.indices { state.shard[index] /= divisor }
        }
        try state.presence.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try communicator.allreduceSum(buffer) }
        state.reduced = true
        return DataParallel.ReductionTiming(communicationSeconds: max(0, state.lastCompletion - state.firstStart), exposedSeconds: exposed,
                                            buckets: state.buckets.count, bucketsStartedDuringBackward: state.startedDuringBackward)
    }

    /// ZeRO-2 without overlap: reduce-scatters the gradients as they are now (after backward),
    /// bucket by bucket. Collective.
    public func reduceGradients(scale: Float = 1, averaging: Bool = false) throws(DistributedError) {
        try beginGradientReduction(scale: scale, averaging: averaging)
        try finishGradientReduction()
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Packs (scaled), frees the full gradients of, and starts, in order, up to `limit` buckets
    /// whose gradients are all ready.
    private func launchReadyBuckets(_ state: GradientSharding, duringBackward: Bool, limit: Int = .max) throws(DistributedError) {
        var launched = 0
        while launched < limit, state.next < state.buckets.count, state.readyCounts[state.next] == state.buckets[state.next].count {
            let bucket = state.next, range = state.buckets[bucket], flat = state.flatRanges[bucket]
            // At most two buckets in flight, so that their copies stay two buckets' worth of memory.
            if bucket >= GradientSharding.bucketsInFlight, !state.completed[bucket - GradientSharding.bucketsInFlight] {
                try complete(state, bucket: bucket - GradientSharding.bucketsInFlight)
            }
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
            if bucket == 0 { state.firstStart = Self.now() }
            state.requests[bucket] = try state.counts[bucket].withUnsafeBufferPointer { counts throws(DistributedError) in
                try communicator.startReduceScatterSum(UnsafeBufferPointer(buffer), counts: counts, into: receive)
            }
            state.next += 1
            launched += 1
            if duringBackward {
                state.startedDuringBackward += 1
                if !state.polling, try !state.requests[bucket]!.test() {
                    state.poller.work = { [unowned self, unowned state] in
                        guard state.error == nil else { return }
                        do throws(DistributedError) { try self.progressBuckets(state) } catch { state.error = error }
                    }
                    state.polling = true
                    state.poller.start()
                }
            }
        }
    }

    /// Tests the buckets in flight, oldest first, freeing each one complete.
    private func progressBuckets(_ state: GradientSharding) throws(DistributedError) {
        for index in 0..<state.next where !state.completed[index] {
            guard try state.requests[index]!.test() else { return }
            finished(state, bucket: index)
        }
    }

    private func complete(_ state: GradientSharding, bucket: Int) throws(DistributedError) {
        try state.requests[bucket]!.wait()
        finished(state, bucket: bucket)
    }

    private func finished(_ state: GradientSharding, bucket: Int) {
        state.completed[bucket] = true
        state.lastCompletion = Self.now()
        if let buffer = state.sendBuffers[bucket] { FloatStorage.deallocate(buffer) }
        state.sendBuffers[bucket] = nil
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
