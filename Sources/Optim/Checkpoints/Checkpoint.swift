import Foundation
import Safetensors

/// Checkpoints: parameters, optimizer state and schedule in one safetensors file that resumes
/// bit for bit.
///
/// Layout: each parameter under its own name (so `safetensors.numpy.load_file` gives the model;
/// F32, or BF16 for a bfloat16 parameter, loaded only into a parameter of the same dtype),
/// each state buffer as `state/<parameter>/<buffer>` (Lookahead's slow weights included) — an
/// 8-bit buffer (``StateDType/int8``) as it is held, its codes as `state/<parameter>/<buffer>.codes`
/// (U8, the parameter's shape) and its blocks' scales as `state/<parameter>/<buffer>.absmax` (F32,
/// one per block of 256 elements: bitsandbytes' `state1` and `absmax1`); a 4-bit buffer
/// (``StateDType/int4``) the same way, its codes two a byte (U8, flat, half the parameter's
/// element count; the first element in the high nibble) and one scale per block of 128 elements
/// as `.absmax` (torchao's `codes` and `scale`); the buffer a bfloat16 parameter keeps beside it
/// as `state/<parameter>/kahan_comp` (BF16) or `state/<parameter>/master_weight_remainder` (I16:
/// the float32 master's bits are the parameter's BF16 bits shifted up by 16 plus the remainder) — and in
/// `__metadata__`: `format` (`swift-optim-checkpoint/1`), `optimizer` (a JSON description: name,
/// groups with hyperparameters and initial learning rates, per-parameter step counts, wrapper
/// counters, recursively for a wrapped optimizer), `scheduler_step` when a scheduler is saved,
/// plus any caller metadata. Saving is atomic; loading checks everything before changing anything.
public enum Checkpoint {
    /// The dtype a buffer beside a bfloat16 parameter is stored as: I16 for master-weight
    /// remainders, BF16 for Kahan compensations.
    static func parameterBufferDType(_ name: String) -> DType {
        name == BFloat16Rounding.masterWeights.parameterBufferName ? .I16 : .BF16
    }

    /// A 16-bit tensor's little-endian bytes as its bit patterns (the inverse of ``bfloat16Bytes(_:count:)``).
    static func sixteenBitValues(_ bytes: Data) -> [UInt16] {
        bytes.withUnsafeBytes { raw in
            (0..<(raw.count / 2)).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) }
        }
    }

    /// bfloat16 (or other 16-bit) bit patterns as a 16-bit tensor's little-endian bytes.
    static func bfloat16Bytes(_ bits: some Sequence<UInt16>, count: Int) -> Data {
        var bytes = Data(capacity: count * 2)
        for value in bits { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        return bytes
    }

    /// The `format` value written to and expected in the checkpoint's metadata.
    public static let format = "swift-optim-checkpoint/1"

    /// Saves `optimizer`'s parameters and state (and the scheduler's step) to `url`, atomically.
    public static func save(_ optimizer: any Optimizer, scheduler: LearningRateScheduler? = nil, to url: URL,
                            metadata extra: [String: String] = [:]) throws {
        let snapshot = optimizer.snapshot()
        // A bfloat16 parameter is stored as BF16: its values are bfloat16 numbers, so the top 16
        // bits of each float are the value, exactly.
        var tensors = optimizer.parameters.map { parameter in
            switch parameter.dtype {
            case .float32:
                return TensorData(name: parameter.name, shape: parameter.shape, floats: parameter.valueArray)
            case .bfloat16:
                return TensorData(name: parameter.name, dtype: .BF16, shape: parameter.shape,
                                  bytes: bfloat16Bytes(parameter.values.lazy.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }, count: parameter.count))
            }
        }
        var shapes: [String: [Int]] = [:]
        for parameter in optimizer.parameters { shapes[parameter.name] = parameter.shape }
        func addBuffers(_ snapshot: OptimizerSnapshot, prefix: String) {
            for (name, state) in snapshot.parameters.sorted(by: { $0.key < $1.key }) {
                // A buffer of the parameter's size takes its shape; others (Adafactor's row and
                // column statistics) are stored flat.
                func shape(_ count: Int) -> [Int] { shapes[name].flatMap { $0.reduce(1, *) == count ? $0 : nil } ?? [count] }
                for (buffer, values) in state.buffers.sorted(by: { $0.key < $1.key }) {
                    tensors.append(TensorData(name: "\(prefix)\(name)/\(buffer)", shape: shape(values.count), floats: values))
                }
                // 16-bit buffers: bfloat16 state, and the buffer beside a bfloat16 parameter.
                let sixteenBit = state.bfloat16Buffers.map { ($0.key, $0.value, DType.BF16) }
                    + state.parameterBuffers.map { ($0.key, $0.value, parameterBufferDType($0.key)) }
                for (buffer, bits, dtype) in sixteenBit.sorted(by: { $0.0 < $1.0 }) {
                    tensors.append(TensorData(name: "\(prefix)\(name)/\(buffer)", dtype: dtype, shape: shape(bits.count), bytes: bfloat16Bytes(bits, count: bits.count)))
                }
                for (buffer, stored) in state.quantizedBuffers.sorted(by: { $0.key < $1.key }) {
                    tensors.append(TensorData(name: "\(prefix)\(name)/\(buffer).codes", dtype: .U8, shape: shape(stored.codes.count), bytes: Data(stored.codes)))
                    tensors.append(TensorData(name: "\(prefix)\(name)/\(buffer).absmax", shape: [stored.absmax.count], floats: stored.absmax))
                }
            }
            if let base = snapshot.base { addBuffers(base, prefix: prefix + "base/") }
        }
        addBuffers(snapshot, prefix: "state/")
        var metadata = extra
        metadata["format"] = format
        metadata["optimizer"] = try describe(snapshot)
        if let scheduler { metadata["scheduler_step"] = String(scheduler.stepCount) }
        try SafetensorsFile.write(tensors, metadata: metadata, to: url)
    }

    /// Loads a checkpoint into a live optimizer, its parameters and (if given) its scheduler.
    /// A file from another optimizer, with missing or extra parameters or buffers, other shapes
    /// or dtypes is refused with an error naming the mismatch, and nothing is changed.
    ///
    /// - Returns: the file's metadata.
    @discardableResult
    public static func load(from url: URL, into optimizer: any Optimizer, scheduler: LearningRateScheduler? = nil) throws -> [String: String] {
        let file = try SafetensorsFile(contentsOf: url)
        guard file.metadata["format"] == format else {
            throw OptimError.checkpointMismatch("\(url.path) is not a \(format) file (format: \(file.metadata["format"] ?? "none"))")
        }
        guard let description = file.metadata["optimizer"] else { throw OptimError.checkpointMismatch("\(url.path) has no optimizer description") }
        var snapshot = try parse(description)
        func fillBuffers(_ snapshot: inout OptimizerSnapshot, prefix: String) throws {
            for (name, state) in snapshot.parameters {
                for buffer in state.buffers.keys {
                    let tensor = "\(prefix)\(name)/\(buffer)"
                    guard (try? file.info(tensor))?.dtype == .F32 else { throw OptimError.checkpointMismatch("tensor '\(tensor)' is missing or not F32") }
                    snapshot.parameters[name]!.buffers[buffer] = try file.floats(tensor)
                }
                for buffer in state.bfloat16Buffers.keys {
                    let tensor = "\(prefix)\(name)/\(buffer)"
                    guard (try? file.info(tensor))?.dtype == .BF16 else { throw OptimError.checkpointMismatch("tensor '\(tensor)' is missing or not BF16") }
                    let bytes = try file.bytes(tensor)
                    snapshot.parameters[name]!.bfloat16Buffers[buffer] = sixteenBitValues(bytes)
                }
                for buffer in state.parameterBuffers.keys {
                    let tensor = "\(prefix)\(name)/\(buffer)", dtype = parameterBufferDType(buffer)
                    guard (try? file.info(tensor))?.dtype == dtype else { throw OptimError.checkpointMismatch("tensor '\(tensor)' is missing or not \(dtype.rawValue)") }
                    let bytes = try file.bytes(tensor)
                    snapshot.parameters[name]!.parameterBuffers[buffer] = sixteenBitValues(bytes)
                }
                for buffer in state.quantizedBuffers.keys {
                    let codes = "\(prefix)\(name)/\(buffer).codes", absmax = "\(prefix)\(name)/\(buffer).absmax"
                    guard (try? file.info(codes))?.dtype == .U8 else { throw OptimError.checkpointMismatch("tensor '\(codes)' is missing or not U8") }
                    guard (try? file.info(absmax))?.dtype == .F32 else { throw OptimError.checkpointMismatch("tensor '\(absmax)' is missing or not F32") }
                    snapshot.parameters[name]!.quantizedBuffers[buffer] = .init(codes: [UInt8](try file.bytes(codes)), absmax: try file.floats(absmax))
                }
            }
            if var base = snapshot.base {
                try fillBuffers(&base, prefix: prefix + "base/")
                snapshot.base = base
            }
        }
        try fillBuffers(&snapshot, prefix: "state/")
        let stored = Set(file.tensors.map(\.name).filter { !$0.hasPrefix("state/") })
        let live = Set(optimizer.parameters.map(\.name))
        if let missing = live.subtracting(stored).sorted().first { throw OptimError.checkpointMismatch("the checkpoint has no parameter '\(missing)'") }
        if let extra = stored.subtracting(live).sorted().first { throw OptimError.checkpointMismatch("the checkpoint has a parameter '\(extra)' this optimizer does not hold") }
        var values: [[Float]] = []
        for parameter in optimizer.parameters {
            let info = try file.info(parameter.name)
            // The parameter's dtype is the model's, not the file's: no silent conversion either way.
            let expected: DType = parameter.dtype == .bfloat16 ? .BF16 : .F32
            guard info.dtype == expected, info.shape == parameter.shape else {
                throw OptimError.checkpointMismatch("parameter '\(parameter.name)' is \(info.dtype.rawValue) \(info.shape) in the checkpoint, \(expected.rawValue) \(parameter.shape) here")
            }
            values.append(try file.floats(parameter.name))
        }
        let schedulerStep = file.metadata["scheduler_step"].flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil }
        if scheduler != nil, schedulerStep == nil {
            throw OptimError.checkpointMismatch("the checkpoint has no scheduler step for the given scheduler")
        }
        try optimizer.restore(snapshot)  // checks all before changing anything
        for (parameter, data) in zip(optimizer.parameters, values) { try parameter.setValues(data) }
        if let scheduler, let schedulerStep { try scheduler.restore(stepCount: schedulerStep) }
        return file.metadata
    }

    // MARK: the JSON description

    struct Description: Codable {
        struct Group: Codable {
            var params: [String]
            var initial_lr: Double
            var hyperparameters: HyperparameterDictionary
            /// Group state (absent in files of optimizers without it).
            var state: [String: Double]?
        }
        struct State: Codable {
            var steps: Int
            var buffers: [String]
            var gradient_scale: Float
            /// Scalar state (absent in files of optimizers without it).
            var scalars: [String: Float]?
            /// The 8-bit buffers, stored as `<buffer>.codes` and `<buffer>.absmax` (absent without).
            var quantized_buffers: [String]?
            /// The bfloat16 buffers, stored as BF16 tensors `<buffer>` (absent without).
            var bfloat16_buffers: [String]?
            /// The buffer beside a bfloat16 parameter, stored as `<buffer>`: `kahan_comp` (BF16) or
            /// `master_weight_remainder` (I16) (absent without).
            var parameter_buffers: [String]?
        }
        var name: String
        var skipped_steps: Int
        var wrapper: [String: Double]
        var groups: [Group]
        var parameters: [String: State]
        var base: [Description]?

        init(_ snapshot: OptimizerSnapshot) {
            name = snapshot.optimizer
            skipped_steps = snapshot.skippedSteps
            wrapper = snapshot.wrapper
            groups = snapshot.groups.map { Group(params: $0.parameterNames, initial_lr: $0.initialLearningRate, hyperparameters: $0.hyperparameters,
                                                  state: $0.state.isEmpty ? nil : $0.state) }
            parameters = snapshot.parameters.mapValues { State(steps: $0.stepCount, buffers: $0.buffers.keys.sorted(), gradient_scale: $0.gradientScale,
                                                                 scalars: $0.scalars.isEmpty ? nil : $0.scalars,
                                                                 quantized_buffers: $0.quantizedBuffers.isEmpty ? nil : $0.quantizedBuffers.keys.sorted(),
                                                                 bfloat16_buffers: $0.bfloat16Buffers.isEmpty ? nil : $0.bfloat16Buffers.keys.sorted(),
                                                                 parameter_buffers: $0.parameterBuffers.isEmpty ? nil : $0.parameterBuffers.keys.sorted()) }
            base = snapshot.base.map { [Description($0)] }
        }

        var snapshot: OptimizerSnapshot {
            OptimizerSnapshot(
                optimizer: name,
                groups: groups.map { .init(parameterNames: $0.params, hyperparameters: $0.hyperparameters, initialLearningRate: $0.initial_lr, state: $0.state ?? [:]) },
                parameters: parameters.mapValues { state in
                    .init(stepCount: state.steps, buffers: Dictionary(uniqueKeysWithValues: state.buffers.map { ($0, []) }), gradientScale: state.gradient_scale,
                          scalars: state.scalars ?? [:],
                          quantizedBuffers: Dictionary(uniqueKeysWithValues: (state.quantized_buffers ?? []).map { ($0, .init(codes: [], absmax: [])) }),
                          bfloat16Buffers: Dictionary(uniqueKeysWithValues: (state.bfloat16_buffers ?? []).map { ($0, []) }),
                          parameterBuffers: Dictionary(uniqueKeysWithValues: (state.parameter_buffers ?? []).map { ($0, []) }))
                },
                skippedSteps: skipped_steps, wrapper: wrapper, base: base?.first?.snapshot)
        }
    }

    package static func describe(_ snapshot: OptimizerSnapshot) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(Description(snapshot)), as: UTF8.self)
    }

    package static func parse(_ text: String) throws -> OptimizerSnapshot {
        do {
            return try JSONDecoder().decode(Description.self, from: Data(text.utf8)).snapshot
        } catch {
            throw OptimError.checkpointMismatch("the optimizer description is malformed: \(error)")
        }
    }
}
