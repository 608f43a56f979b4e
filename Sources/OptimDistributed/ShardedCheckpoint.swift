import Foundation
import Optim
import Safetensors

/// Sharded checkpoints: every rank of a ``ShardedOptimizer`` writes its own part of the optimizer
/// state, and one index says where each part is, so no rank gathers the whole state to save it,
/// and a run of any number of ranks reads back only the parts it holds.
///
/// A sharded checkpoint is a folder, laid out as Hugging Face's sharded safetensors checkpoints
/// (`model-00001-of-00002.safetensors` beside `model.safetensors.index.json`):
///
/// - `shard-<save>-<rank+1>-of-<ranks>.safetensors` (five-digit numbers, `<save>` sixteen hex
///   digits naming one save): the rank's part of every state buffer, flat, under the names a
///   `Checkpoint` uses (`state/<parameter>/<buffer>`, `state/base/…` for a wrapped optimizer);
///   the writing rank's file also holds the parameters, under their own names.
/// - ``indexName`` (`checkpoint.safetensors.index.json`): `metadata` (``format``, the optimizer's
///   description as in a `Checkpoint`, `scheduler_step`, `world_size`, the save's id, and the
///   caller's metadata), `weight_map` (each whole tensor → its file, as in Hugging Face's index),
///   and two additions for tensors split across files: `slices` (each state buffer → its parts:
///   file, first element, element count, in order) and `lengths` (each state buffer's length).
///
/// Saving is atomic as a whole: each rank writes its file under a new save id, and only when every
/// rank has written its file does the writing rank replace the index, which is what a load reads;
/// then it deletes the files of earlier saves. A job killed at any moment leaves the previous
/// checkpoint readable. Loading is collective and all-or-nothing: every rank checks the index and
/// reads its parts first, and nothing changes on any rank unless every rank succeeded.
public enum ShardedCheckpoint {
    /// The `format` value of the index's metadata.
    public static let format = "swift-optim-sharded-checkpoint/1"
    /// The index's file name inside the checkpoint folder.
    public static let indexName = "checkpoint.safetensors.index.json"

    /// One contiguous part of a state buffer and the file that holds it.
    struct Slice: Codable, Equatable {
        var file: String
        var start: Int
        var count: Int
    }

    /// The index file.
    struct Index: Codable {
        var metadata: [String: String]
        var weight_map: [String: String]
        var slices: [String: [Slice]]
        var lengths: [String: Int]
    }

    /// Whether `url` is a folder holding a sharded checkpoint's index.
    public static func exists(at url: URL) -> Bool {
        var isFolder: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) && isFolder.boolValue
            && FileManager.default.fileExists(atPath: url.appendingPathComponent(indexName).path)
    }

    /// The metadata of the sharded checkpoint in `folder` (its index's): the format, the
    /// optimizer's description, the scheduler step and the saver's own entries.
    public static func metadata(in folder: URL) throws -> [String: String] {
        try readIndex(folder).metadata
    }

    static func shardName(save: String, rank: Int, ranks: Int) -> String {
        "shard-\(save)-\(String(format: "%05d", rank + 1))-of-\(String(format: "%05d", ranks)).safetensors"
    }

    /// Whether `name` is a shard file of some save (this format's naming), for removing stale ones.
    static func isShardName(_ name: String) -> Bool {
        name.hasPrefix("shard-") && name.hasSuffix(".safetensors") && name.contains("-of-")
    }

    /// Reads and checks the index of the sharded checkpoint in `folder`.
    static func readIndex(_ folder: URL) throws -> Index {
        let url = folder.appendingPathComponent(indexName)
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw OptimError.checkpointMismatch("\(folder.path) holds no readable sharded checkpoint index (\(indexName)): \(error.localizedDescription)")
        }
        let index: Index
        do { index = try JSONDecoder().decode(Index.self, from: data) } catch {
            throw OptimError.checkpointMismatch("\(url.path) is not a sharded checkpoint index: \(error)")
        }
        guard index.metadata["format"] == format else {
            throw OptimError.checkpointMismatch("\(url.path) is not a \(format) index (format: \(index.metadata["format"] ?? "none"))")
        }
        for file in Set(index.weight_map.values).union(index.slices.values.flatMap { $0.map(\.file) }) {
            // Files are named within the folder: no path separators, no way out of it.
            guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
                throw OptimError.checkpointMismatch("\(url.path) names a file '\(file)' outside its folder")
            }
        }
        for (tensor, slices) in index.slices {
            guard let length = index.lengths[tensor], length >= 0 else {
                throw OptimError.checkpointMismatch("\(url.path): buffer '\(tensor)' has slices but no length")
            }
            // The slices tile 0..<length in order, without gaps or overlaps.
            var next = 0
            for slice in slices {
                guard slice.start == next, slice.count > 0, slice.count <= length - next else {
                    throw OptimError.checkpointMismatch("\(url.path): the slices of '\(tensor)' do not tile its \(length) elements (a slice at \(slice.start) of \(slice.count), expected one at \(next))")
                }
                next += slice.count
            }
            guard next == length else {
                throw OptimError.checkpointMismatch("\(url.path): the slices of '\(tensor)' cover \(next) of its \(length) elements")
            }
        }
        return index
    }

    /// Reads parts of a sharded checkpoint's buffers and its parameters, opening (mapping) each
    /// file once and reading only the bytes asked for.
    final class Reader {
        let folder: URL
        let index: Index
        private var files: [String: SafetensorsFile] = [:]

        init(folder: URL) throws {
            self.folder = folder
            self.index = try readIndex(folder)
        }

        func file(_ name: String) throws -> SafetensorsFile {
            if let file = files[name] { return file }
            let file: SafetensorsFile
            do { file = try SafetensorsFile(contentsOf: folder.appendingPathComponent(name)) } catch {
                throw OptimError.checkpointMismatch("shard \(name) of \(folder.path) cannot be read: \(error)")
            }
            files[name] = file
            return file
        }

        /// The snapshot the index describes, its buffers holding elements `range(tensor, length)`
        /// of each buffer (the whole buffer for an unsharded optimizer, a rank's part for a shard).
        func snapshot(range: (_ tensor: String, _ parameter: String, _ buffer: String, _ length: Int) throws -> Range<Int>) throws -> OptimizerSnapshot {
            guard let description = index.metadata["optimizer"] else {
                throw OptimError.checkpointMismatch("\(folder.path): the index has no optimizer description")
            }
            var snapshot = try Checkpoint.parse(description)
            func fill(_ snapshot: inout OptimizerSnapshot, prefix: String) throws {
                for (name, state) in snapshot.parameters {
                    if let buffer = (state.quantizedBuffers.keys.sorted() + state.bfloat16Buffers.keys.sorted() + state.parameterBuffers.keys.sorted()).first {
                        throw OptimError.checkpointMismatch("'\(name)' has a low-precision buffer '\(buffer)'; sharded checkpoints hold float32 state only")
                    }
                    for buffer in state.buffers.keys {
                        let tensor = "\(prefix)\(name)/\(buffer)"
                        guard let length = index.lengths[tensor], let slices = index.slices[tensor] else {
                            throw OptimError.checkpointMismatch("\(folder.path): the index has no buffer '\(tensor)'")
                        }
                        let wanted = try range(tensor, name, buffer, length)
                        snapshot.parameters[name]!.buffers[buffer] = try read(tensor, wanted, slices: slices)
                    }
                }
                if var base = snapshot.base {
                    try fill(&base, prefix: prefix + "base/")
                    snapshot.base = base
                }
            }
            try fill(&snapshot, prefix: "state/")
            return snapshot
        }

        /// Elements `wanted` of buffer `tensor`, from the slices that overlap them.
        private func read(_ tensor: String, _ wanted: Range<Int>, slices: [Slice]) throws -> [Float] {
            var values = [Float](repeating: 0, count: wanted.count)
            for slice in slices {
                let overlap = wanted.clamped(to: slice.start..<(slice.start + slice.count))
                if overlap.isEmpty { continue }
                let file = try file(slice.file)
                let info: TensorInfo
                do { info = try file.info(tensor) } catch {
                    throw OptimError.checkpointMismatch("shard \(slice.file) has no tensor '\(tensor)'")
                }
                guard info.dtype == .F32, info.elementCount == slice.count else {
                    throw OptimError.checkpointMismatch("'\(tensor)' in shard \(slice.file) is \(info.dtype.rawValue) \(info.shape); the index says F32 of \(slice.count)")
                }
                let bytes = try file.bytes(tensor)
                bytes.withUnsafeBytes { raw in
                    values.withUnsafeMutableBytes { out in
                        let from = (overlap.lowerBound - slice.start) * 4, to = (overlap.lowerBound - wanted.lowerBound) * 4
                        out.baseAddress!.advanced(by: to).copyMemory(from: raw.baseAddress!.advanced(by: from), byteCount: overlap.count * 4)
                    }
                }
            }
            return values
        }

        /// Each parameter's values, checked against the live parameters' names and shapes.
        func parameterValues(for parameters: [Parameter]) throws -> [[Float]] {
            let live = Set(parameters.map(\.name))
            let stored = Set(index.weight_map.keys.filter { !$0.hasPrefix("state/") })
            if let missing = live.subtracting(stored).sorted().first { throw OptimError.checkpointMismatch("the checkpoint has no parameter '\(missing)'") }
            if let extra = stored.subtracting(live).sorted().first { throw OptimError.checkpointMismatch("the checkpoint has a parameter '\(extra)' this optimizer does not hold") }
            return try parameters.map { parameter in
                let file = try file(index.weight_map[parameter.name]!)
                let info: TensorInfo
                do { info = try file.info(parameter.name) } catch {
                    throw OptimError.checkpointMismatch("shard \(index.weight_map[parameter.name]!) has no parameter '\(parameter.name)'")
                }
                guard info.dtype == .F32, info.shape == parameter.shape else {
                    throw OptimError.checkpointMismatch("parameter '\(parameter.name)' is \(info.dtype.rawValue) \(info.shape) in the checkpoint, F32 \(parameter.shape) here")
                }
                return try file.floats(parameter.name)
            }
        }

        /// The saved scheduler step, checked to be there if a scheduler is given.
        func schedulerStep(required: Bool) throws -> Int? {
            let step = index.metadata["scheduler_step"].flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil }
            if required, step == nil { throw OptimError.checkpointMismatch("the checkpoint has no scheduler step for the given scheduler") }
            return step
        }
    }
}

extension ShardedOptimizer {
    /// Saves a sharded checkpoint into `folder` (created if missing; see ``ShardedCheckpoint``):
    /// each rank writes its part of the state, rank `writer` the parameters and, once every rank
    /// has written, the index. No rank gathers the state. Collective — call it on every rank.
    /// A failure on any rank throws on every rank and leaves the folder's previous checkpoint as
    /// it was.
    public func saveShardedCheckpoint(to folder: URL, scheduler: LearningRateScheduler? = nil, metadata: [String: String] = [:], writer: Int = 0) throws {
        try communicator.checkRoot(writer)
        let local = shardOptimizer.snapshot()
        try checkStructure(local)
        if let name = local.parameters.first(where: { !$0.value.quantizedBuffers.isEmpty || !$0.value.bfloat16Buffers.isEmpty || !$0.value.parameterBuffers.isEmpty })?.key {
            throw OptimError.invalidConfiguration("'\(name)' keeps low-precision state; sharded checkpoints hold float32 state only")
        }
        // One id for this save, the writer's, on every rank.
        let ids = try communicator.allgather([Int64(bitPattern: UInt64.random(in: 0...UInt64.max))])
        let save = String(format: "%016llx", UInt64(bitPattern: ids[writer][0]))
        let fileName = ShardedCheckpoint.shardName(save: save, rank: communicator.rank, ranks: communicator.size)

        var failure: (any Error)?
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            var tensors: [TensorData] = []
            if communicator.rank == writer {
                tensors = parameters.map { TensorData(name: $0.name, shape: $0.shape, floats: $0.valueArray) }
            }
            func add(_ snapshot: OptimizerSnapshot, prefix: String) {
                for (name, state) in snapshot.parameters.sorted(by: { $0.key < $1.key }) {
                    for (buffer, values) in state.buffers.sorted(by: { $0.key < $1.key }) where !values.isEmpty {
                        tensors.append(TensorData(name: "\(prefix)\(name)/\(buffer)", shape: [values.count], floats: values))
                    }
                }
                if let base = snapshot.base { add(base, prefix: prefix + "base/") }
            }
            add(local, prefix: "state/")
            try SafetensorsFile.write(tensors, metadata: ["format": ShardedCheckpoint.format, "rank": String(communicator.rank),
                                                          "world_size": String(communicator.size), "save": save],
                                      to: folder.appendingPathComponent(fileName))
        } catch {
            failure = error
        }
        try agree(failure, "save its shard of the checkpoint in \(folder.path)") {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(fileName))
        }

        // Every shard is on disk: the writer commits the save by replacing the index.
        failure = nil
        if communicator.rank == writer {
            do {
                var index = ShardedCheckpoint.Index(metadata: metadata, weight_map: [:], slices: [:], lengths: [:])
                index.metadata["format"] = ShardedCheckpoint.format
                index.metadata["optimizer"] = try Checkpoint.describe(local)
                index.metadata["world_size"] = String(communicator.size)
                index.metadata["save"] = save
                if let scheduler { index.metadata["scheduler_step"] = String(scheduler.stepCount) }
                let writerFile = ShardedCheckpoint.shardName(save: save, rank: writer, ranks: communicator.size)
                for parameter in parameters { index.weight_map[parameter.name] = writerFile }
                func describe(_ snapshot: OptimizerSnapshot, prefix: String) {
                    for (name, state) in snapshot.parameters {
                        guard let parameterIndex = indexByName[name] else { continue }
                        for buffer in state.buffers.keys {
                            let tensor = "\(prefix)\(name)/\(buffer)"
                            var slices: [ShardedCheckpoint.Slice] = []
                            var length = 0
                            for rank in 0..<communicator.size {
                                let (part, full) = bufferRange(buffer, parameter: parameterIndex, rank: rank)
                                length = full
                                if part.isEmpty { continue }
                                let file = ShardedCheckpoint.shardName(save: save, rank: rank, ranks: communicator.size)
                                slices.append(.init(file: file, start: part.lowerBound, count: part.count))
                            }
                            index.slices[tensor] = slices
                            index.lengths[tensor] = length
                        }
                    }
                    if let base = snapshot.base { describe(base, prefix: prefix + "base/") }
                }
                describe(local, prefix: "state/")
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                try SafetensorsFile.writeAtomically(try encoder.encode(index), to: folder.appendingPathComponent(ShardedCheckpoint.indexName))
            } catch {
                failure = error
            }
        }
        try agree(failure, "write the checkpoint index in \(folder.path)") {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(fileName))
        }
        // Committed: the writer removes the files of earlier saves (never read again).
        if communicator.rank == writer, let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) {
            for name in names where ShardedCheckpoint.isShardName(name) && !name.hasPrefix("shard-\(save)-") {
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
            }
        }
    }

    /// Loads a sharded checkpoint from `folder` — saved on any number of ranks — reading only
    /// this rank's part of each state buffer, and the parameters. Collective and all-or-nothing:
    /// if any rank cannot load (a missing or damaged file, another optimizer, other parameters),
    /// every rank throws and nothing changes anywhere.
    ///
    /// - Returns: the index's metadata.
    @discardableResult
    public func loadShardedCheckpoint(from folder: URL, scheduler: LearningRateScheduler? = nil) throws -> [String: String] {
        var prepared: (snapshot: OptimizerSnapshot, values: [[Float]], step: Int?, metadata: [String: String])?
        var failure: (any Error)?
        do {
            let reader = try ShardedCheckpoint.Reader(folder: folder)
            let snapshot = try reader.snapshot { tensor, name, buffer, length in
                guard let index = indexByName[name] else {
                    throw OptimError.checkpointMismatch("the checkpoint has state for '\(name)', which this optimizer does not hold")
                }
                let (part, full) = bufferRange(buffer, parameter: index, rank: communicator.rank)
                guard full == length else {
                    throw OptimError.checkpointMismatch("buffer '\(tensor)' holds \(length) values in the checkpoint, \(full) here")
                }
                return part
            }
            prepared = (snapshot, try reader.parameterValues(for: parameters), try reader.schedulerStep(required: scheduler != nil), reader.index.metadata)
        } catch {
            failure = error
        }
        try agree(failure, "read the sharded checkpoint in \(folder.path)") {}
        guard let prepared else { preconditionFailure("every rank agreed that this one prepared its load") }

        // The shard optimizer checks everything before changing anything; a rank whose check
        // fails makes the others put their state back.
        let previous = shardOptimizer.snapshot()
        failure = nil
        do { try shardOptimizer.restore(prepared.snapshot) } catch { failure = error }
        try agree(failure, "restore the sharded checkpoint in \(folder.path)") {
            if failure == nil { try? shardOptimizer.restore(previous) }
        }
        for (parameter, values) in zip(parameters, prepared.values) { try parameter.setValues(values) }
        if let scheduler, let step = prepared.step { try scheduler.restore(stepCount: step) }
        return prepared.metadata
    }

    /// Every rank learns whether every rank succeeded; if not, each runs `undo` and throws — its
    /// own error, or one naming the first rank that failed. Collective.
    private func agree(_ failure: (any Error)?, _ what: String, undo: () -> Void) throws {
        let outcomes = try communicator.allgather([failure == nil ? 0 : 1])
        guard let failed = outcomes.indices.first(where: { outcomes[$0][0] != 0 }) else { return }
        undo()
        if let failure { throw failure }
        throw DistributedError.aborted(rank: failed, message: "rank \(failed) could not \(what); nothing was changed")
    }
}

extension Checkpoint {
    /// Loads a sharded checkpoint (``ShardedCheckpoint``, saved on any number of ranks) into an
    /// unsharded optimizer: the whole state is assembled from every shard. Checks everything
    /// before changing anything, as `Checkpoint.load(from:into:scheduler:)` does.
    ///
    /// - Returns: the index's metadata.
    @discardableResult
    public static func load(shardedFrom folder: URL, into optimizer: any Optimizer, scheduler: LearningRateScheduler? = nil) throws -> [String: String] {
        let reader = try ShardedCheckpoint.Reader(folder: folder)
        let snapshot = try reader.snapshot { _, _, _, length in 0..<length }
        let values = try reader.parameterValues(for: optimizer.parameters)
        let step = try reader.schedulerStep(required: scheduler != nil)
        try optimizer.restore(snapshot)
        for (parameter, data) in zip(optimizer.parameters, values) { try parameter.setValues(data) }
        if let scheduler, let step { try scheduler.restore(stepCount: step) }
        return reader.index.metadata
    }
}
