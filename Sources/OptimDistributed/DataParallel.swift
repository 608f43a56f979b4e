import Optim

/// Data-parallel training: every rank holds the whole model, computes gradients on its share of
/// each global batch, and the gradients are averaged across ranks before the optimizer steps —
/// PyTorch's `DistributedDataParallel` (Li et al., 2020, "PyTorch Distributed: Experiences on
/// Accelerating Data Parallel Training", arXiv:2006.15704), without the overlap with the
/// backward pass.
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
