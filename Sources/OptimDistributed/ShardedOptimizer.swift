import Optim

/// Optimizer state sharded across ranks — ZeRO stage 1, and with ``ZeROStage/two`` the gradients too (Rajbhandari et al., 2020, "ZeRO: Memory
/// Optimizations Toward Training Trillion Parameter Models", arXiv:1910.02054): each rank keeps
/// the optimizer state of only its `1/W` of the parameters, updates that part, and an allgather
/// rebuilds the full parameters on every rank.
///
/// The parameters, in order, are laid end to end in one flat index space of `N` elements, cut
/// into `W` contiguous ranges of `⌊N/W⌋` or `⌈N/W⌉` elements (``partition``); a tensor may be
/// split between ranks. On its rank, each parameter's part of the range becomes a parameter of
/// the same name that *borrows* the full parameter's values and gradient (no copies), and an
/// optimizer built from the same `OptimizerConfiguration` and groups updates those parts
/// (``shardOptimizer``). Its state — moments, momentum, Lookahead's slow weights — is allocated
/// only for them: `Optimizer.optimizerStateBytes` is about `1/W` of an unsharded optimizer's.
///
/// A step, on every rank (collective):
/// 1. under `NonFinitePolicy.skipStep` or `NonFinitePolicy.throw`, the *full* gradients are
///    checked, so that every rank makes the same decision;
/// 2. the shard optimizer steps its parts — with any factor from
///    `Optimizer.clipGradientNorm(maxNorm:threadPool:)`, which, called on this optimizer, measures
///    the full averaged gradient every rank holds, so the norm is global and the same everywhere;
/// 3. the updated ranges are allgathered into the full parameters, in rounds of at most the
///    bucket size (``DataParallel/defaultBucketBytes``);
/// 4. with metrics, each rank's per-parameter sums for its parts — the pre-reduced form of
///    `OptimizerMetrics` — are added across ranks by one allreduce, so the returned metrics are
///    those of the whole parameters, as a single process computes them.
///
/// Every element's arithmetic is the one an unsharded optimizer does, so parameters and (gathered)
/// state match an unsharded run over the same averaged gradients bit for bit; metrics match
/// within float rounding (their sums are added in another order). `Prodigy`, whose step size
/// comes from sums over the whole model, is told where its parts lie and all-reduces its exact
/// sums each step, so it matches bit for bit too; other optimizers over whole tensors are refused.
///
/// Use it with ``DataParallel`` for the gradient average (ZeRO-1 keeps full gradients):
/// ```swift
/// let dataParallel = try DataParallel(model, communicator: communicator)
/// let optimizer = try ShardedOptimizer(configuration, groups: groups, communicator: communicator)
/// // each step: backward; averageGradients(); optionally clipGradientNorm; step(collectingMetrics:)
/// ```
///
/// **ZeRO-2** (`stage: .two`): the gradients are sharded too. Instead of ``DataParallel``, this
/// optimizer reduces them: ``beginGradientReduction(scale:averaging:)`` before backward,
/// ``gradientsReady(_:)`` as parameters' gradients are final, ``finishGradientReduction()`` after
/// (or ``reduceGradients(scale:averaging:)`` after backward). Each bucket of whole tensors is
/// reduce-scattered, so a rank keeps only the sum of its own range (``gradientShard``), and the
/// full gradients are freed as their buckets are sent; the step uses the shard. Parameters, state
/// and metrics are those of ZeRO-1 bit for bit; with global-norm clipping the norm is added from
/// every rank's shards, in another order (float rounding).
///
/// Checkpoints: ``gatherSnapshot()`` (collective) builds the ordinary, full snapshot an unsharded
/// optimizer would give, and ``saveCheckpoint(to:scheduler:metadata:writer:)`` writes it as a
/// usual checkpoint; ``restore(_:)`` takes a full snapshot and keeps this rank's part, so
/// `Checkpoint.load(from:into:)` works on every rank. Files move freely between sharded and
/// unsharded runs and between world sizes.
public final class ShardedOptimizer: Optimizer {
    /// The ranks that share the optimizer state, each stepping its own shard.
    public let communicator: any Communicator
    /// The configuration every rank's shard optimizer is built from (built from typed groups:
    /// the optimizer's name and the first group's hyperparameters).
    public let configuration: OptimizerConfiguration
    /// The optimizer over this rank's parts of the parameters.
    public let shardOptimizer: any Optimizer
    /// The full parameters, group by group.
    public let parameters: [Parameter]
    /// Each rank's range of the flat index space.
    public let partition: [Range<Int>]
    /// What is sharded: the optimizer state (ZeRO-1), or the gradients too (ZeRO-2).
    public let stage: ZeROStage
    /// ZeRO-2's gradient reduction and shard; nil under ZeRO-1.
    let gradientSharding: GradientSharding?

    private let groupParameters: [[Parameter]]
    /// Per parameter: the part this rank holds (possibly empty), and the parameter over it.
    let sliceRanges: [Range<Int>]
    let slices: [Parameter]
    let indexByObject: [ObjectIdentifier: Int]
    let indexByName: [String: Int]
    let layout: FlatLayout
    private let shardable: any ShardableOptimizer

    /// The shard optimizer's.
    public var instructionSet: InstructionSet { shardOptimizer.instructionSet }
    private let threadPool: ThreadPool
    /// Stands in for the storage of an empty part (the kernels want a non-nil pointer, and never
    /// read or write through it); kept for the life of the process.
    nonisolated(unsafe) static let emptyStorage = UnsafeMutableBufferPointer<Float>(start: .allocate(capacity: 1), count: 0)
    /// The allgather rounds: elements per rank and round, the longest range, the round's counts,
    /// and the buffer.
    private let gatherChunk: Int
    private let longestShard: Int
    private var gatherCounts: [Int]
    private let gatherBuffer: UnsafeMutableBufferPointer<Float>
    /// The metric sums of every parameter, six per parameter, reduced in one allreduce.
    private let metricBuffer: UnsafeMutableBufferPointer<Double>

    /// What a step does with a non-finite gradient; decided on the full gradients, on every rank.
    public var nonFinitePolicy: NonFinitePolicy = .propagate

    /// Builds the shard optimizer of this rank. Collective: checks first that every rank passes
    /// the same parameters, groups, configuration and bucket size
    /// (`DistributedError.parameterMismatch(_:)` on every rank otherwise).
    ///
    /// - Parameters:
    ///   - configuration: the optimizer, as for `OptimizerRegistry.makeOptimizer(_:groups:threadPool:)`.
    ///   - groups: the parameter groups and their overrides, as for an unsharded optimizer.
    ///   - communicator: this rank's side of the group.
    ///   - bucketBytes: the most bytes one allgather round carries.
    ///   - threadPool: the threads the shard optimizer's steps run on.
    ///   - stage: ``ZeROStage/one`` (the state) or ``ZeROStage/two`` (the gradients too).
    /// - Throws: `DistributedError`, or `OptimError` for an invalid configuration (the same on
    ///   every rank).
    public convenience init(_ configuration: OptimizerConfiguration, groups: [ParameterGroupConfiguration], communicator: any Communicator,
                            bucketBytes: Int = DataParallel.defaultBucketBytes, threadPool: ThreadPool = .shared, stage: ZeROStage = .one) throws {
        let settings = "sharded \(Self.describe(configuration)); group overrides "
            + groups.map { "[" + Self.describe($0.overrides) + "]" }.joined(separator: " ") + "; bucket \(bucketBytes) bytes; ZeRO-\(stage.rawValue)"
        try self.init(configuration, groupParameters: groups.map(\.parameters), groupSettings: groups.map(\.overrides), settings: settings,
                      communicator: communicator, bucketBytes: bucketBytes, threadPool: threadPool, stage: stage) { sliceGroups throws(OptimError) in
            try OptimizerRegistry.makeOptimizer(
                configuration, groups: zip(sliceGroups, groups).map { ParameterGroupConfiguration($0, overrides: $1.overrides) }, threadPool: threadPool)
        }
    }

    /// Builds the shard optimizer of this rank from typed groups — the same as the
    /// configuration form, for an optimizer written as a Swift type:
    /// `ShardedOptimizer(AdamW.self, groups: [ParameterGroup(weights, .init(weightDecay: 0.1))], communicator: communicator)`.
    /// Collective, as ``init(_:groups:communicator:bucketBytes:threadPool:stage:)-(OptimizerConfiguration,_,_,_,_,_)``;
    /// ``configuration`` is the optimizer's name and the first group's hyperparameters.
    ///
    /// - Parameters:
    ///   - optimizer: the optimizer type (`Adam`, `SGD`, `Prodigy`, …).
    ///   - groups: the parameter groups and their hyperparameters, as for an unsharded optimizer.
    ///   - communicator: this rank's side of the group.
    ///   - bucketBytes: the most bytes one allgather round carries.
    ///   - threadPool: the threads the shard optimizer's steps run on.
    ///   - stage: ``ZeROStage/one`` (the state) or ``ZeROStage/two`` (the gradients too).
    /// - Throws: `DistributedError`, or `OptimError` for invalid hyperparameters (the same on
    ///   every rank).
    public convenience init<O: TypedOptimizer>(_ optimizer: O.Type, groups: [ParameterGroup<O.Hyperparameters>], communicator: any Communicator,
                                               bucketBytes: Int = DataParallel.defaultBucketBytes, threadPool: ThreadPool = .shared,
                                               stage: ZeROStage = .one) throws {
        let configuration = OptimizerConfiguration(name: O.name, hyperparameters: groups.first?.hyperparameters.dictionary ?? [:])
        let settings = "sharded \(O.name); groups " + groups.map { "[" + Self.describe($0.hyperparameters.dictionary) + "]" }.joined(separator: " ")
            + "; bucket \(bucketBytes) bytes; ZeRO-\(stage.rawValue)"
        try self.init(configuration, groupParameters: groups.map(\.parameters), groupSettings: groups.map(\.hyperparameters.dictionary),
                      settings: settings, communicator: communicator, bucketBytes: bucketBytes, threadPool: threadPool, stage: stage) { sliceGroups throws(OptimError) in
            try O(groups: zip(sliceGroups, groups).map { ParameterGroup($0, $1.hyperparameters) }, threadPool: threadPool)
        }
    }

    /// The one construction behind both forms: `makeShard` builds the optimizer over this rank's
    /// parts, group by group; `settings` describe the optimizer for the ranks' comparison.
    private init(_ configuration: OptimizerConfiguration, groupParameters groups: [[Parameter]], groupSettings: [HyperparameterDictionary],
                 settings: String, communicator: any Communicator,
                 bucketBytes: Int, threadPool: ThreadPool, stage: ZeROStage, makeShard: ([[Parameter]]) throws(OptimError) -> any Optimizer) throws {
        let bucketElements = try DataParallel.bucketElements(bucketBytes)
        try communicator.verifySameParameters(groups, settings: settings)
        try validateParameterLists(groups, optimizer: configuration.name)

        let updated = configuration.base ?? configuration
        // Prodigy reads whole tensors only through two sums, which its shards all-reduce (below).
        // (An optimizer the registry doesn't know, a typed one of the caller's, is checked below.)
        if updated.name != Prodigy.name, (try? OptimizerRegistry.info(named: updated.name))?.updatesWholeTensors == true {
            throw DistributedError.unsupported("optimizer '\(updated.name)' cannot be sharded: it updates whole tensors, and ZeRO-1 here splits tensors between ranks")
        }
        // 8-bit state is quantized in blocks of a whole tensor; a shard holds pieces of tensors,
        // whose blocks would start elsewhere (and its checkpoint gathers float32 state, which
        // bfloat16 state is not either).
        for overrides in [updated.hyperparameters] + groupSettings {
            if let dtype = overrides["state_dtype"], dtype != .string(StateDType.float32.rawValue) {
                throw DistributedError.unsupported("optimizer '\(updated.name)' with state_dtype \(dtype) cannot be sharded: ZeRO-1 here keeps float32 state (blockwise 8-bit state needs whole tensors); use float32 state with ZeRO-1")
            }
        }
        let parameters = groups.flatMap { $0 }
        let layout = FlatLayout(counts: parameters.map(\.count))
        let ranks = communicator.size, total = layout.total
        let partition = (0..<ranks).map { rank in Self.start(of: rank, total: total, ranks: ranks)..<Self.start(of: rank + 1, total: total, ranks: ranks) }
        let mine = partition[communicator.rank]
        var sliceRanges: [Range<Int>] = [], slices: [Parameter] = []
        for (index, parameter) in parameters.enumerated() {
            let range = layout.overlap(tensor: index, with: mine)
            let storage = range.isEmpty ? Self.emptyStorage : UnsafeMutableBufferPointer(rebasing: parameter.values[range])
            sliceRanges.append(range)
            slices.append(try Parameter(name: parameter.name, shape: [range.count], borrowing: storage))
        }
        var sliceGroups: [[Parameter]] = [], offset = 0
        for group in groups {
            sliceGroups.append(Array(slices[offset..<(offset + group.count)]))
            offset += group.count
        }
        let local = try makeShard(sliceGroups)
        guard let shardable = local as? any ShardableOptimizer, shardable.isShardable else {
            throw DistributedError.unsupported("optimizer '\(configuration.name)' cannot be sharded: it updates whole tensors, and ZeRO-1 here splits tensors between ranks")
        }
        local.nonFinitePolicy = .propagate  // decided here, on the full gradients
        if let prodigy = Self.prodigy(in: local) {
            // Its step size comes from sums over every parameter: each rank's parts add theirs
            // exactly, and one allreduce per step makes them the unsharded sums.
            prodigy.attach(communicator: communicator, offsets: sliceRanges.map(\.lowerBound))
        }

        self.communicator = communicator
        self.configuration = configuration
        self.shardOptimizer = local
        self.shardable = shardable
        self.parameters = parameters
        self.partition = partition
        self.stage = stage
        self.gradientSharding = stage == .two
            ? GradientSharding(counts: parameters.map(\.count), partition: partition, rank: communicator.rank, bucketElements: bucketElements)
            : nil
        self.groupParameters = groups
        self.sliceRanges = sliceRanges
        self.slices = slices
        self.indexByObject = Dictionary(uniqueKeysWithValues: parameters.enumerated().map { (ObjectIdentifier($1), $0) })
        self.indexByName = Dictionary(uniqueKeysWithValues: parameters.enumerated().map { ($1.name, $0) })
        self.layout = layout
        self.threadPool = threadPool
        self.longestShard = partition.map(\.count).max() ?? 0
        self.gatherChunk = max(1, min(bucketElements / ranks, longestShard))
        self.gatherCounts = Array(repeating: 0, count: ranks)
        self.gatherBuffer = FloatStorage.allocate(gatherChunk * ranks)
        self.metricBuffer = .allocate(capacity: max(1, 6 * parameters.count))
    }

    /// Builds the shard optimizer over one group holding `parameters`, as
    /// ``init(_:groups:communicator:bucketBytes:threadPool:stage:)-(OptimizerConfiguration,_,_,_,_,_)``.
    /// Collective.
    public convenience init(_ configuration: OptimizerConfiguration, parameters: [Parameter], communicator: any Communicator,
                            bucketBytes: Int = DataParallel.defaultBucketBytes, threadPool: ThreadPool = .shared, stage: ZeROStage = .one) throws {
        try self.init(configuration, groups: [ParameterGroupConfiguration(parameters)], communicator: communicator,
                      bucketBytes: bucketBytes, threadPool: threadPool, stage: stage)
    }

    deinit {
        FloatStorage.deallocate(gatherBuffer)
        metricBuffer.deallocate()
    }

    /// The Prodigy that steps this rank's parts, wrapped or not.
    static func prodigy(in optimizer: any Optimizer) -> Prodigy? {
        (optimizer as? Prodigy) ?? ((optimizer as? Lookahead)?.base as? Prodigy)
    }

    /// The part of buffer `name` of parameter `index` that rank `rank` holds, and the full
    /// buffer's length: the rank's range of the parameter, except for Prodigy's `s` and `p0`,
    /// which hold every `slice_p`-th element.
    func bufferRange(_ name: String, parameter index: Int, rank: Int) -> (part: Range<Int>, length: Int) {
        let range = rank == communicator.rank ? sliceRanges[index] : layout.overlap(tensor: index, with: partition[rank])
        guard let prodigy = Self.prodigy(in: shardOptimizer) else { return (range, parameters[index].count) }
        return prodigy.bufferRange(name, of: slices[index], offset: range.lowerBound, count: range.count, fullCount: parameters[index].count)
    }

    /// The first flat index of rank `rank`'s range: `rank·⌊N/W⌋ + min(rank, N mod W)`.
    static func start(of rank: Int, total: Int, ranks: Int) -> Int {
        rank * (total / ranks) + min(rank, total % ranks)
    }

    static func describe(_ dictionary: HyperparameterDictionary) -> String {
        dictionary.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    static func describe(_ configuration: OptimizerConfiguration) -> String {
        "\(configuration.name)(\(describe(configuration.hyperparameters)))" + (configuration.base.map { " over " + describe($0) } ?? "")
    }

    /// This rank's range of the flat index space.
    public var shard: Range<Int> { partition[communicator.rank] }

    /// The part of `parameter` this rank updates, in the parameter's own (flat) indices; empty
    /// when the parameter lies wholly in other ranks' ranges.
    public func shardRange(of parameter: Parameter) throws(OptimError) -> Range<Int> {
        sliceRanges[try index(of: parameter)]
    }

    private func index(of parameter: Parameter) throws(OptimError) -> Int {
        guard let index = indexByObject[ObjectIdentifier(parameter)] else { throw .unknownParameter(name: parameter.name) }
        return index
    }

    // MARK: Optimizer

    /// The registry name of the optimizer that runs on the shards.
    public var name: String { shardOptimizer.name }
    public var groupCount: Int { groupParameters.count }

    public func parameters(group: Int) throws(OptimError) -> [Parameter] {
        guard groupParameters.indices.contains(group) else { throw .invalidGroup(index: group, groupCount: groupParameters.count) }
        return groupParameters[group]
    }

    public func learningRate(group: Int) throws(OptimError) -> Double { try shardOptimizer.learningRate(group: group) }
    public func setLearningRate(_ learningRate: Double, group: Int) throws(OptimError) {
        try shardOptimizer.setLearningRate(learningRate, group: group)
    }
    public func initialLearningRate(group: Int) throws(OptimError) -> Double { try shardOptimizer.initialLearningRate(group: group) }
    public func hyperparameters(group: Int) throws(OptimError) -> HyperparameterDictionary { try shardOptimizer.hyperparameters(group: group) }

    public func stepCount(of parameter: Parameter) throws(OptimError) -> Int {
        try shardOptimizer.stepCount(of: slices[try index(of: parameter)])
    }

    /// This rank's part of `parameter`'s state buffers (``shardRange(of:)`` of each); the full
    /// buffers are in ``gatherSnapshot()``.
    public func state(of parameter: Parameter) throws(OptimError) -> [String: [Float]] {
        try shardOptimizer.state(of: slices[try index(of: parameter)])
    }

    public func scaleNextGradient(of parameter: Parameter, by factor: Float) throws(OptimError) {
        try shardOptimizer.scaleNextGradient(of: slices[try index(of: parameter)], by: factor)
    }

    public var skippedSteps: Int { shardOptimizer.skippedSteps }

    /// Steps this rank's parts, rebuilds the full parameters on every rank, and with
    /// `collectingMetrics` returns the metrics of the full parameters (one allreduce of the
    /// pre-reduced sums). Collective. Expects the same gradients on every rank (after
    /// ``DataParallel/averageGradients()``).
    @discardableResult
    public func step(collectingMetrics: Bool) throws -> OptimizerMetrics? {
        if let gradientSharding {
            // ZeRO-2: the parts step on this rank's shard of the reduced gradients.
            try takeShardGradients(gradientSharding)
            if nonFinitePolicy != .propagate, let bad = try firstNonFiniteShardGradient() {
                if nonFinitePolicy == .throw { throw OptimError.nonFiniteGradient(parameter: bad.name) }
                shardable.recordSkippedStep()
                return nil
            }
        } else {
            if nonFinitePolicy != .propagate, let bad = firstNonFiniteGradient() {
                if nonFinitePolicy == .throw { throw OptimError.nonFiniteGradient(parameter: bad.name) }
                shardable.recordSkippedStep()
                return nil
            }
            for index in parameters.indices {
                if let gradient = parameters[index].gradient {
                    let range = sliceRanges[index]
                    try slices[index].setGradient(borrowing: range.isEmpty ? Self.emptyStorage : UnsafeMutableBufferPointer(rebasing: gradient[range]))
                } else {
                    slices[index].zeroGradient()
                }
            }
        }
        let metrics = try shardOptimizer.step(collectingMetrics: collectingMetrics)
        try gatherParameters()
        guard collectingMetrics, let metrics else { return nil }
        return try reduce(metrics)
    }

    /// The shard optimizer's mode switch on this rank's parts, then the moved parts gathered
    /// into the full parameters on every rank. Collective.
    public func train() throws {
        try shardOptimizer.train()
        try gatherParameters()
    }

    /// The shard optimizer's mode switch on this rank's parts, then the moved parts gathered
    /// into the full parameters on every rank. Collective.
    public func eval() throws {
        try shardOptimizer.eval()
        try gatherParameters()
    }

    private func firstNonFiniteGradient() -> Parameter? {
        let withGradient = parameters.filter { $0.gradient != nil && $0.count > 0 }
        let flags = Finiteness.check(withGradient.map { UnsafeBufferPointer($0.gradient!) }, on: threadPool)
        return flags.firstIndex(of: false).map { withGradient[$0] }
    }

    /// Allgathers every rank's range into the full parameters, in rounds: in round `k` rank `q`
    /// sends elements `[k·c, (k+1)·c)` of its range, `c` the per-rank chunk.
    private func gatherParameters() throws(DistributedError) {
        let ranks = communicator.size, rank = communicator.rank
        guard ranks > 1 else { return }
        var done = 0
        while done < longestShard {
            var ownOffset = 0, total = 0
            for other in 0..<ranks {
                let count = max(0, min(gatherChunk, partition[other].count - done))
                gatherCounts[other] = count
                if other < rank { ownOffset += count }
                total += count
            }
            let ownStart = partition[rank].lowerBound + done
            layout.forEachSegment(in: ownStart..<(ownStart + gatherCounts[rank])) { tensor, elements, flat in
                (gatherBuffer.baseAddress! + ownOffset + (flat - ownStart))
                    .update(from: parameters[tensor].values.baseAddress! + elements.lowerBound, count: elements.count)
            }
            try gatherCounts.withUnsafeBufferPointer { counts throws(DistributedError) in
                try communicator.allgather(UnsafeMutableBufferPointer(rebasing: gatherBuffer[0..<total]), counts: counts)
            }
            var offset = 0
            for other in 0..<ranks {
                let count = gatherCounts[other]
                if other != rank, count > 0 {
                    let start = partition[other].lowerBound + done, bufferStart = offset
                    layout.forEachSegment(in: start..<(start + count)) { tensor, elements, flat in
                        (parameters[tensor].values.baseAddress! + elements.lowerBound)
                            .update(from: gatherBuffer.baseAddress! + bufferStart + (flat - start), count: elements.count)
                    }
                }
                offset += count
            }
            done += gatherChunk
        }
    }

    /// Adds every rank's metric sums (the pre-reduced form) with one allreduce.
    private func reduce(_ local: OptimizerMetrics) throws(DistributedError) -> OptimizerMetrics {
        metricBuffer.update(repeating: 0)
        for (index, parameter) in parameters.enumerated() {
            guard let sums = local.sums[parameter.name] else { continue }
            let base = 6 * index
            metricBuffer[base] = sums.momentSquared ?? 0
            metricBuffer[base + 1] = sums.parameterSquared
            metricBuffer[base + 2] = sums.updateSquared
            metricBuffer[base + 3] = sums.gradientSquared
            metricBuffer[base + 4] = sums.updateDotGradient
            metricBuffer[base + 5] = sums.momentDotGradient ?? 0
        }
        try communicator.allreduceSum(UnsafeMutableBufferPointer(rebasing: metricBuffer[0..<(6 * parameters.count)]))
        var global: [String: ParameterMetricSums] = [:]
        for (index, parameter) in parameters.enumerated() {
            guard let sums = local.sums[parameter.name] else { continue }
            let base = 6 * index
            global[parameter.name] = ParameterMetricSums(
                momentSquared: sums.momentSquared == nil ? nil : metricBuffer[base], parameterSquared: metricBuffer[base + 1],
                updateSquared: metricBuffer[base + 2], gradientSquared: metricBuffer[base + 3],
                updateDotGradient: metricBuffer[base + 4], momentDotGradient: sums.momentDotGradient == nil ? nil : metricBuffer[base + 5])
        }
        return OptimizerMetrics(sums: global)
    }
}

extension ShardedOptimizer: ShardableOptimizer {
    package var stateByteCount: Int { shardable.stateByteCount }
    package func recordSkippedStep() { shardable.recordSkippedStep() }
    package var isShardable: Bool { false }  // not to be sharded again
}
