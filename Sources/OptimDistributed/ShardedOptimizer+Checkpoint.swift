import Foundation
import Optim

extension ShardedOptimizer {
    /// This rank's shard of the state: the shard optimizer's snapshot, whose buffers hold only
    /// this rank's parts (``shardRange(of:)``). Not a checkpoint of the whole optimizer — for that,
    /// ``gatherSnapshot()`` or ``saveCheckpoint(to:scheduler:metadata:writer:)``, which every rank
    /// calls. (Passed to the generic `Checkpoint.save`, a shard's buffers don't fit the
    /// parameters' shapes and the save throws.)
    public func snapshot() -> OptimizerSnapshot { shardOptimizer.snapshot() }

    /// The full snapshot, the one an unsharded optimizer over the same parameters would give:
    /// every state buffer gathered from the ranks that hold its parts. Collective; every rank
    /// receives it. First checks that every rank's shard has the same structure (optimizer, step
    /// counts, buffer names), throwing `DistributedError.parameterMismatch(_:)` on every rank
    /// otherwise.
    public func gatherSnapshot() throws(DistributedError) -> OptimizerSnapshot {
        let local = shardOptimizer.snapshot()
        try checkStructure(local)
        return try gather(local)
    }

    /// Checks that every rank's shard snapshot has the same structure (optimizer, step counts,
    /// buffer names); throws `DistributedError.parameterMismatch(_:)` on every rank otherwise.
    /// Collective.
    func checkStructure(_ local: OptimizerSnapshot) throws(DistributedError) {
        let structure = Self.structure(of: local, names: parameters.map(\.name))
        let hashes = try communicator.allgather([Int64(bitPattern: ParameterSignature.fnv1a(structure))])
        if let differing = hashes.indices.first(where: { hashes[$0] != hashes[0] }) {
            throw .parameterMismatch("the optimizer state of rank \(differing) differs in structure from rank 0's (optimizer, step counts or state buffers); this rank's: \(structure)")
        }
    }

    /// A text of everything in a shard snapshot that must agree across ranks, in a fixed order.
    private static func structure(of snapshot: OptimizerSnapshot, names: [String]) -> String {
        var text = "\(snapshot.optimizer) skipped \(snapshot.skippedSteps) wrapper \(snapshot.wrapper.sorted { $0.key < $1.key })"
        for name in names {
            guard let state = snapshot.parameters[name] else { continue }
            text += "; \(name) \(state.stepCount) \(state.buffers.keys.sorted())"
        }
        if let base = snapshot.base { text += " base { " + structure(of: base, names: names) + " }" }
        return text
    }

    private func gather(_ local: OptimizerSnapshot) throws(DistributedError) -> OptimizerSnapshot {
        var full = local
        var counts = [Int](repeating: 0, count: communicator.size)
        for (index, parameter) in parameters.enumerated() {
            guard let state = local.parameters[parameter.name] else { continue }
            for name in state.buffers.keys.sorted() {
                for rank in counts.indices { counts[rank] = bufferRange(name, parameter: index, rank: rank).part.count }
                let (mine, length) = bufferRange(name, parameter: index, rank: communicator.rank)
                let part = state.buffers[name]!
                guard part.count == mine.count else {
                    throw .invalidConfiguration("buffer '\(name)' of '\(parameter.name)' holds \(part.count) values; this rank's part has \(mine.count)")
                }
                var values = [Float](repeating: 0, count: length)
                values.replaceSubrange(mine, with: part)
                try values.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in
                    try counts.withUnsafeBufferPointer { counts throws(DistributedError) in try communicator.allgather(buffer, counts: counts) }
                }
                full.parameters[parameter.name]!.buffers[name] = values
            }
        }
        if let base = local.base { full.base = try gather(base) }
        return full
    }

    /// Restores a full snapshot — from ``gatherSnapshot()``, an unsharded optimizer or a
    /// checkpoint file — keeping this rank's part of every buffer. Not collective: each rank
    /// restores from its own copy. Checks everything first (buffer lengths here, the rest in the
    /// shard optimizer's restore) and changes nothing on a mismatch.
    public func restore(_ snapshot: OptimizerSnapshot) throws(OptimError) {
        try shardOptimizer.restore(try part(of: snapshot))
    }

    private func part(of snapshot: OptimizerSnapshot) throws(OptimError) -> OptimizerSnapshot {
        var part = snapshot
        for (name, state) in snapshot.parameters {
            guard let index = indexByName[name] else { continue }  // the shard optimizer's restore names it
            for (buffer, values) in state.buffers {
                let (mine, length) = bufferRange(buffer, parameter: index, rank: communicator.rank)
                guard values.count == length else {
                    throw .checkpointMismatch("parameter '\(name)': buffer '\(buffer)' holds \(values.count) values, the parameter \(length) (a sharded optimizer restores full snapshots)")
                }
                part.parameters[name]!.buffers[buffer] = Array(values[mine])
            }
        }
        if let base = snapshot.base { part.base = try self.part(of: base) }
        return part
    }

    /// Saves an ordinary checkpoint (the format of `Checkpoint.save(_:scheduler:to:metadata:)`,
    /// loadable by a sharded or an unsharded run of any world size): gathers the full state on
    /// every rank, then rank `writer` alone writes the file. Collective — call it on every rank.
    public func saveCheckpoint(to url: URL, scheduler: LearningRateScheduler? = nil, metadata: [String: String] = [:], writer: Int = 0) throws {
        try communicator.checkRoot(writer)
        let snapshot = try gatherSnapshot()
        guard communicator.rank == writer else { return }
        try Checkpoint.save(snapshot, parameters: parameters, schedulerStep: scheduler?.stepCount, to: url, metadata: metadata)
    }
}

extension Checkpoint {
    /// Saves `parameters` and a snapshot — typically a sharded optimizer's gathered one — in the
    /// format of `Checkpoint.save(_:scheduler:to:metadata:)`, which writes it.
    public static func save(_ snapshot: OptimizerSnapshot, parameters: [Parameter], schedulerStep: Int? = nil, to url: URL,
                            metadata: [String: String] = [:]) throws {
        var scheduler: LearningRateScheduler?
        let holder = SnapshotHolder(snapshot, parameters: parameters)
        if let schedulerStep { scheduler = try LearningRateScheduler(holder, schedule: ConstantOne(), stepCount: schedulerStep) }
        try save(holder, scheduler: scheduler, to: url, metadata: metadata)
    }
}

/// A schedule of constant 1, for a scheduler that only carries a step count to `Checkpoint.save`.
private struct ConstantOne: LearningRateSchedule {
    func multiplier(at step: Int) -> Double { 1 }
}

/// An `Optimizer` that only presents a fixed snapshot and parameters, so that
/// `Checkpoint.save` writes a gathered snapshot through its one code path. Nothing else works.
private final class SnapshotHolder: Optimizer {
    let stored: OptimizerSnapshot
    let parameters: [Parameter]

    init(_ snapshot: OptimizerSnapshot, parameters: [Parameter]) {
        self.stored = snapshot
        self.parameters = parameters
    }

    var name: String { stored.optimizer }
    var groupCount: Int { stored.groups.count }
    func parameters(group: Int) throws(OptimError) -> [Parameter] { throw Self.unavailable }
    func learningRate(group: Int) throws(OptimError) -> Double { throw Self.unavailable }
    func setLearningRate(_ learningRate: Double, group: Int) throws(OptimError) {}
    func initialLearningRate(group: Int) throws(OptimError) -> Double { 1 }
    func hyperparameters(group: Int) throws(OptimError) -> HyperparameterDictionary { throw Self.unavailable }
    func step(collectingMetrics: Bool) throws -> OptimizerMetrics? { throw Self.unavailable }
    func stepCount(of parameter: Parameter) throws(OptimError) -> Int { throw Self.unavailable }
    func state(of parameter: Parameter) throws(OptimError) -> [String: [Float]] { throw Self.unavailable }
    func scaleNextGradient(of parameter: Parameter, by factor: Float) throws(OptimError) { throw Self.unavailable }
    var nonFinitePolicy: NonFinitePolicy {
        get { .propagate }
        set {}
    }
    var skippedSteps: Int { stored.skippedSteps }
    func snapshot() -> OptimizerSnapshot { stored }
    func restore(_ snapshot: OptimizerSnapshot) throws(OptimError) { throw Self.unavailable }

    private static let unavailable = OptimError.invalidConfiguration("a snapshot being saved is not a live optimizer")
}
