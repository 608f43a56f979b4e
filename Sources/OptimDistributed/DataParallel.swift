#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Optim

/// Data-parallel training: every rank holds the whole model, computes gradients on its share of
/// each global batch, and the gradients are averaged across ranks before the optimizer steps —
/// PyTorch's `DistributedDataParallel` (Li et al., 2020, "PyTorch Distributed: Experiences on
/// Accelerating Data Parallel Training", arXiv:2006.15704).
///
/// Building it is collective: it checks that every rank passes the same parameters (names,
/// shapes, order) and the same bucket size, throwing `DistributedError.parameterMismatch(_:)`
/// on every rank otherwise, then broadcasts the parameters' values from rank 0 so that all ranks
/// start alike. Build the optimizer *after* it (Lookahead copies the parameters when built).
///
/// ``averageGradients()`` replaces each gradient by the mean over ranks, `ḡ = (g₀ + … + g_{W−1}) / W`,
/// packing gradients into buckets of ``bucketBytes`` (25 MiB by default, DDP's `bucket_cap_mb`),
/// one in-place allreduce per bucket, and unpacking them scaled — few large messages instead of
/// one per tensor, and no allocation per step. After it every rank holds the same averaged
/// gradients, so global-norm clipping (`Optimizer.clipGradientNorm(maxNorm:threadPool:)`),
/// the step and its metrics are computed on global values everywhere, identically.
///
/// **Overlap with the backward pass**, as DDP does: call ``beginGradientReduction(scale:averaging:)``
/// before backward, ``gradientsReady(_:)`` each time backward has finished some parameters'
/// gradients (a model's `gradientReadyHandler`), and ``finishGradientReduction()`` after it.
/// The parameters are cut into buckets of whole tensors from the last one back (backward
/// finishes the last layers first), each closed once it reaches ``bucketBytes`` (the first at
/// ``firstBucketBytes``); a bucket's allreduce starts, nonblocking
/// (`Communicator.startAllreduceSum(_:)`), as soon as all its gradients are ready, so the sum
/// travels while backward computes the earlier layers. The result is the same as
/// ``sumGradients()`` (``averageGradients()`` with `scale: 1 / W`): the same element sums, and
/// bit for bit the same on the in-process group. It holds one copy of every gradient (the
/// buckets in flight), allocated on first use.
///
/// A parameter without a gradient on some ranks counts as a zero gradient there (as in a single
/// process over the global batch, where it gets a gradient if any sample touches it); one
/// without a gradient on every rank keeps none, and the optimizer skips it.
///
/// ```swift
/// let dataParallel = try DataParallel(model, communicator: communicator)    // check + broadcast
/// let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: model)
/// for batch in myShareOfEachGlobalBatch {
///     backward(batch)                                     // local gradients
///     try dataParallel.averageGradients()
///     try optimizer.clipGradientNorm(maxNorm: 1)
///     try optimizer.step()
/// }
/// ```
public final class DataParallel {
    /// PyTorch DDP's default bucket: 25 MiB.
    public static let defaultBucketBytes = 25 << 20
    /// The first bucket of an overlapped reduction, the last parameters', holds at most this
    /// much (or ``bucketBytes`` if smaller), as DDP's first bucket (1 MiB): backward's first
    /// layers start communicating without waiting for 25 MiB of gradients.
    public static let firstBucketBytes = 1 << 20

    /// The ranks the gradients are averaged over.
    public let communicator: any Communicator
    /// The parameters, in the order every rank passes them.
    public let parameters: [Parameter]
    /// The bucket size in bytes, as given.
    public let bucketBytes: Int

    private let layout: FlatLayout
    private let bucket: UnsafeMutableBufferPointer<Float>
    /// Whether each parameter had a gradient on this rank when averaging began.
    private var localPresence: [Bool]
    /// How many ranks had a gradient for each parameter.
    private var globalPresence: [Float]

    /// Checks that every rank passes the same parameters and bucket size, and broadcasts the
    /// parameters' values from rank `root` (none when `nil`). Collective.
    ///
    /// - Parameters:
    ///   - parameters: the model's parameters, in the same order on every rank.
    ///   - communicator: this rank's side of the group.
    ///   - bucketBytes: the most bytes one allreduce carries; at least 4.
    ///   - root: the rank whose values every rank starts from, or `nil` to broadcast nothing.
    public init(_ parameters: [Parameter], communicator: any Communicator, bucketBytes: Int = DataParallel.defaultBucketBytes,
                broadcastFrom root: Int? = 0) throws(DistributedError) {
        let elements = try Self.bucketElements(bucketBytes)
        try communicator.verifySameParameters([parameters], settings: "data parallel, bucket \(bucketBytes) bytes")
        var seen = Set<ObjectIdentifier>()
        for parameter in parameters where !seen.insert(ObjectIdentifier(parameter)).inserted {
            throw .invalidConfiguration("parameter '\(parameter.name)' is given twice")
        }
        self.communicator = communicator
        self.parameters = parameters
        self.bucketBytes = bucketBytes
        self.layout = FlatLayout(counts: parameters.map(\.count))
        self.bucket = FloatStorage.allocate(max(1, min(elements, parameters.count + layout.total)))
        self.localPresence = Array(repeating: false, count: parameters.count)
        self.globalPresence = Array(repeating: 0, count: parameters.count)
        if let root { try broadcastParameters(from: root) }
    }

    deinit { FloatStorage.deallocate(bucket) }

    /// Floats per bucket, after checking the size.
    static func bucketElements(_ bytes: Int) throws(DistributedError) -> Int {
        guard bytes >= MemoryLayout<Float>.stride, bytes / MemoryLayout<Float>.stride <= Int(Int32.max) else {
            throw .invalidConfiguration("bucket size \(bytes) bytes; expected 4 ... \(Int(Int32.max) * 4) bytes")
        }
        return bytes / MemoryLayout<Float>.stride
    }

    /// Copies rank `root`'s parameter values to every rank, bucket by bucket. Collective.
    public func broadcastParameters(from root: Int = 0) throws(DistributedError) {
        try communicator.checkRoot(root)
        guard communicator.size > 1 else { return }
        let isRoot = communicator.rank == root
        var start = 0
        while start < layout.total {
            let end = min(start + bucket.count, layout.total)
            if isRoot { copy(flat: start..<end, into: bucket) { parameters[$0].values } }
            try communicator.broadcast(UnsafeMutableBufferPointer(rebasing: bucket[0..<(end - start)]), from: root)
            if !isRoot { copy(bucket, toFlat: start..<end) { parameters[$0].values } }
            start = end
        }
    }

    /// Replaces every gradient by its mean over the ranks, `(g₀ + … + g_{W−1}) / W`, in place (into
    /// the parameter's gradient storage, borrowed or not; a parameter without a gradient here but
    /// with one elsewhere gets library-owned gradient storage). Collective; allocates nothing
    /// per step.
    ///
    /// This is the global-batch gradient when every rank's gradient is the mean over an equal
    /// share of the global batch. When shares differ, use ``sumGradients()`` instead.
    public func averageGradients() throws(DistributedError) {
        try reduceGradients(dividing: true)
    }

    /// Replaces every gradient by its sum over the ranks, in place, as ``averageGradients()``
    /// does otherwise. For global batches that don't split evenly: when each rank's gradient is
    /// the sum over its own samples divided by the *global* batch size, the sum over ranks is the
    /// global-batch mean, whatever each rank's share.
    public func sumGradients() throws(DistributedError) {
        try reduceGradients(dividing: false)
    }

    /// The stream reduced is, per bucket: first one presence count per parameter, then every
    /// gradient end to end (zeros for a missing one); with `dividing`, each summed element is
    /// divided by the world size `W`.
    private func reduceGradients(dividing: Bool) throws(DistributedError) {
        let ranks = communicator.size
        guard ranks > 1 else { return }
        let count = parameters.count, length = count + layout.total
        for index in 0..<count { localPresence[index] = parameters[index].gradient != nil }
        let divisor = Float(ranks)
        var start = 0
        while start < length {
            let end = min(start + bucket.count, length)
            // Pack: presence flags, then gradients (zeros where this rank has none).
            for position in start..<max(start, min(end, count)) { bucket[position - start] = localPresence[position] ? 1 : 0 }
            if end > count {
                layout.forEachSegment(in: (max(start, count) - count)..<(end - count)) { tensor, elements, flat in
                    let destination = bucket.baseAddress! + (flat + count - start)
                    if localPresence[tensor], let gradient = parameters[tensor].gradient {
                        destination.update(from: gradient.baseAddress! + elements.lowerBound, count: elements.count)
                    } else {
                        destination.update(repeating: 0, count: elements.count)
                    }
                }
            }
            try communicator.allreduceSum(UnsafeMutableBufferPointer(rebasing: bucket[0..<(end - start)]))
            // Unpack: presence counts, then the mean (or sum) of each gradient some rank has.
            for position in start..<max(start, min(end, count)) { globalPresence[position] = bucket[position - start] }
            if end > count {
                layout.forEachSegment(in: (max(start, count) - count)..<(end - count)) { tensor, elements, flat in
                    guard globalPresence[tensor] > 0 else { return }
                    let parameter = parameters[tensor]
                    let gradient = parameter.gradient ?? parameter.gradientStorage(zeroed: false)
                    let source = bucket.baseAddress! + (flat + count - start), destination = gradient.baseAddress! + elements.lowerBound
                    if dividing {
                        for index in 0..<elements.count { destination[index] = source[index] / divisor }
                    } else {
                        destination.update(from: source, count: elements.count)
                    }
                }
            }
            start = end
        }
        // Tensors of no elements have no segment: give them their (empty) gradient here.
        for index in 0..<count where globalPresence[index] > 0 && parameters[index].count == 0 && parameters[index].gradient == nil {
            parameters[index].gradientStorage(zeroed: false)
        }
    }

    // MARK: Overlap with the backward pass

    /// What one overlapped reduction cost, as observed on this rank.
    public struct ReductionTiming: Sendable, Equatable {
        /// Seconds from the first bucket's start to the last bucket's completion (as seen by
        /// the tests during backward and the waits after it): the communication's span.
        public var communicationSeconds: Double
        /// Seconds ``finishGradientReduction()`` waited for the buckets still in flight after
        /// backward: the communication not hidden behind computation.
        public var exposedSeconds: Double
        /// Buckets reduced.
        public var buckets: Int
        /// Buckets whose allreduce started before backward ended.
        public var bucketsStartedDuringBackward: Int

        /// The share of the communication's span hidden behind backward, `1 − exposed / span`
        /// (1 for no communication).
        public var hiddenFraction: Double {
            communicationSeconds > 0 ? max(0, 1 - exposedSeconds / communicationSeconds) : 1
        }
    }

    /// The overlapped reduction: its buckets and bookkeeping, and the copies of the gradients
    /// being reduced (per bucket: one presence count per parameter, then the gradients end to
    /// end); built on first use.
    private final class Overlap {
        let reduction: OverlappedReduction
        let offsets: [Int]
        let buffer: UnsafeMutableBufferPointer<Float>
        var scale: Float = 1
        var averaging = false

        init(counts: [Int], bucketElements: Int) {
            reduction = OverlappedReduction(counts: counts, bucketElements: bucketElements, overheadPerTensor: 1)
            var offsets: [Int] = [], offset = 0
            for range in reduction.buckets {
                offsets.append(offset)
                offset += range.count + range.reduce(0) { $0 + counts[$1] }
            }
            self.offsets = offsets
            buffer = FloatStorage.allocate(max(1, offset))
        }

        deinit { FloatStorage.deallocate(buffer) }
    }

    private var overlap: Overlap?

    /// Prepares the overlapped reduction of the coming backward pass: every gradient reduced
    /// will be multiplied by `scale` first (this rank's share of the global batch, when ranks'
    /// shares differ; 1 for a sum, as ``sumGradients()``), and each sum divided by the number of
    /// ranks when `averaging` (as ``averageGradients()``). Not collective.
    public func beginGradientReduction(scale: Float = 1, averaging: Bool = false) {
        guard communicator.size > 1, !parameters.isEmpty else { return }
        let state: Overlap
        if let overlap {
            state = overlap
        } else {
            state = Overlap(counts: parameters.map(\.count), bucketElements: bucket.count)
            state.reduction.start = { [unowned self, unowned state] bucket throws(DistributedError) in try start(state, bucket: bucket) }
            overlap = state
        }
        state.scale = scale
        state.averaging = averaging
        state.reduction.begin()
    }

    /// Marks the gradients of `parameters[indices]` final for this backward pass (a model calls
    /// it through its `gradientReadyHandler`), starts the allreduce of every bucket now complete,
    /// in bucket order, and lets the buckets in flight progress (a thread tests them every
    /// 100 µs while backward computes: Open MPI's TCP transport moves data only inside MPI
    /// calls). Does nothing outside ``beginGradientReduction(scale:averaging:)`` …
    /// ``finishGradientReduction()``; an error is kept and thrown by ``finishGradientReduction()``.
    public func gradientsReady(_ indices: Range<Int>) {
        overlap?.reduction.markReady(indices)
    }

    /// Waits for every bucket (starting those backward did not report), and replaces each
    /// gradient by the sum (or mean) over the ranks of the scaled gradients, as
    /// ``sumGradients()`` (``averageGradients()``) does. Collective. Returns what the
    /// communication cost (zeros on one rank).
    @discardableResult
    public func finishGradientReduction() throws(DistributedError) -> ReductionTiming {
        guard communicator.size > 1, !parameters.isEmpty else {
            return ReductionTiming(communicationSeconds: 0, exposedSeconds: 0, buckets: 0, bucketsStartedDuringBackward: 0)
        }
        guard let state = overlap else {
            throw .invalidConfiguration("finishGradientReduction() without beginGradientReduction(scale:averaging:) before the backward pass")
        }
        let timing = try state.reduction.finish()
        for (bucketIndex, range) in state.reduction.buckets.enumerated() { unpack(state, bucket: bucketIndex, range: range) }
        return timing
    }

    /// Packs bucket `bucketIndex` (presence flags, then the scaled gradients, zeros where this
    /// rank has none) and starts its allreduce.
    private func start(_ state: Overlap, bucket bucketIndex: Int) throws(DistributedError) -> any CommunicationRequest {
        let range = state.reduction.buckets[bucketIndex]
        var position = state.offsets[bucketIndex]
        let base = state.buffer.baseAddress!
        for index in range {
            base[position] = parameters[index].gradient != nil ? 1 : 0
            position += 1
        }
        for index in range {
            let count = parameters[index].count
            if let gradient = parameters[index].gradient, count > 0 {
                let source = gradient.baseAddress!, destination = base + position, scale = state.scale
                if scale == 1 {
                    destination.update(from: source, count: count)
                } else {
                    for element in 0..<count { destination[element] = source[element] * scale }
                }
            } else if count > 0 {
                (base + position).update(repeating: 0, count: count)
            }
            position += count
        }
        let start = state.offsets[bucketIndex]
        return try communicator.startAllreduceSum(UnsafeMutableBufferPointer(start: base + start, count: position - start))
    }

    /// Copies a reduced bucket back into the gradients of the parameters some rank has one for.
    private func unpack(_ state: Overlap, bucket bucketIndex: Int, range: Range<Int>) {
        let base = state.buffer.baseAddress!
        var position = state.offsets[bucketIndex] + range.count
        for (flag, index) in range.enumerated() {
            let count = parameters[index].count
            defer { position += count }
            guard base[state.offsets[bucketIndex] + flag] > 0 else { continue }
            let parameter = parameters[index]
            let gradient = parameter.gradient ?? parameter.gradientStorage(zeroed: false)
            guard count > 0 else { continue }
            if state.averaging {
                let divisor = Float(communicator.size), source = base + position, destination = gradient.baseAddress!
                for element in 0..<count { destination[element] = source[element] / divisor }
            } else {
                gradient.baseAddress!.update(from: base + position, count: count)
            }
        }
    }

    /// Copies flat range `range` of the tensors `storage` gives into the start of `buffer`.
    private func copy(flat range: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>,
                      _ storage: (Int) -> UnsafeMutableBufferPointer<Float>) {
        layout.forEachSegment(in: range) { tensor, elements, flat in
            (buffer.baseAddress! + (flat - range.lowerBound)).update(from: storage(tensor).baseAddress! + elements.lowerBound, count: elements.count)
        }
    }

    /// Copies the start of `buffer` into flat range `range` of the tensors `storage` gives.
    private func copy(_ buffer: UnsafeMutableBufferPointer<Float>, toFlat range: Range<Int>,
                      _ storage: (Int) -> UnsafeMutableBufferPointer<Float>) {
        layout.forEachSegment(in: range) { tensor, elements, flat in
            (storage(tensor).baseAddress! + elements.lowerBound).update(from: buffer.baseAddress! + (flat - range.lowerBound), count: elements.count)
        }
    }
}
