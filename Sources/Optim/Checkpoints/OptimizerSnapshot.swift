/// Everything an optimizer holds beyond its parameters' values: what a checkpoint stores.
public struct OptimizerSnapshot: Sendable, Equatable {
    /// One parameter group as saved: its parameters, hyperparameters, initial learning rate and state.
    public struct Group: Sendable, Equatable {
        /// The names of the group's parameters, in order.
        public var parameterNames: [String]
        /// The group's hyperparameters by PyTorch name, the learning rate in force included.
        public var hyperparameters: HyperparameterDictionary
        /// The group's initial learning rate (`initial_lr`), to which schedules are relative.
        public var initialLearningRate: Double
        /// The group's own state by name (``UpdateRule/groupStateNames(_:)``): per-group step
        /// counters, schedule-free's `k`, `lr_max`, `weight_sum` and `train_mode`; empty for most.
        public var state: [String: Double]

        /// A group of `parameterNames` with its hyperparameters, initial learning rate and own state.
        public init(parameterNames: [String], hyperparameters: HyperparameterDictionary, initialLearningRate: Double,
                    state: [String: Double] = [:]) {
            self.parameterNames = parameterNames
            self.hyperparameters = hyperparameters
            self.initialLearningRate = initialLearningRate
            self.state = state
        }
    }

    /// One quantized state buffer, as it is stored. 8-bit (``StateDType/int8``): a code per element
    /// and a float32 absmax per block of ``BlockwiseQuantization/blockSize`` elements (the value
    /// of element `i` is `map[codes[i]] · absmax[i / 256]`, bitsandbytes' `state1`/`absmax1`).
    /// 4-bit (``StateDType/int4``): two codes a byte, element `2k` in the high nibble of
    /// `codes[k]`, and one scale per block of ``FourBitQuantization/blockSize`` elements in
    /// `absmax` (torchao's `OptimState4bit.codes` and `scale`).
    public struct QuantizedBuffer: Sendable, Equatable {
        /// The codes: one a byte (8-bit), into the buffer's ``DynamicQuantizationMap``, or two a
        /// byte (4-bit), into its ``FourBitMap``.
        public var codes: [UInt8]
        /// One scale per block of 256 (8-bit; the last block may be shorter) or 128 (4-bit) elements.
        public var absmax: [Float]

        /// A buffer of `codes` and its blocks' `absmax`.
        public init(codes: [UInt8], absmax: [Float]) {
            self.codes = codes
            self.absmax = absmax
        }
    }

    /// One parameter's saved state: step count, state buffers, pending gradient factor and scalars.
    public struct ParameterState: Sendable, Equatable {
        /// Steps that updated the parameter.
        public var stepCount: Int
        /// State buffers by PyTorch name (`exp_avg`, …; Lookahead adds `slow_weights`).
        public var buffers: [String: [Float]]
        /// A pending gradient factor not yet consumed by a step (1 for none).
        public var gradientScale: Float
        /// Scalar state by PyTorch name (ASGD's `eta` and `mu`, NAdam's `mu_product`): the same on
        /// every shard of a parameter.
        public var scalars: [String: Float]
        /// 8-bit state buffers by PyTorch name (`exp_avg`, `exp_avg_sq`), codes and absmax as
        /// they are held; a buffer is in one of ``buffers``, ``quantizedBuffers`` and
        /// ``bfloat16Buffers``, never two.
        public var quantizedBuffers: [String: QuantizedBuffer]
        /// bfloat16 state buffers by PyTorch name, their bits as they are held
        /// (``StateDType/bfloat16``).
        public var bfloat16Buffers: [String: [UInt16]]
        /// The buffer a bfloat16 parameter keeps beside it under its rounding
        /// (``BFloat16Rounding/parameterBufferName``), 16 bits an element as held: `kahan_comp`
        /// (bfloat16 bits) or `master_weight_remainder` (signed 16-bit integers, as their bits).
        /// Empty for the other roundings and float32 parameters.
        public var parameterBuffers: [String: [UInt16]]

        /// A parameter's state from its step count, buffers, pending gradient factor, scalars,
        /// 8-bit, bfloat16 and parameter buffers.
        public init(stepCount: Int, buffers: [String: [Float]], gradientScale: Float, scalars: [String: Float] = [:],
                    quantizedBuffers: [String: QuantizedBuffer] = [:], bfloat16Buffers: [String: [UInt16]] = [:],
                    parameterBuffers: [String: [UInt16]] = [:]) {
            self.stepCount = stepCount
            self.buffers = buffers
            self.gradientScale = gradientScale
            self.scalars = scalars
            self.quantizedBuffers = quantizedBuffers
            self.bfloat16Buffers = bfloat16Buffers
            self.parameterBuffers = parameterBuffers
        }
    }

    /// The registry name.
    public var optimizer: String
    /// The parameter groups, in order.
    public var groups: [Group]
    /// Each parameter's state, by parameter name.
    public var parameters: [String: ParameterState]
    /// Steps skipped because of a non-finite gradient (``Optimizer/skippedSteps``).
    public var skippedSteps: Int
    /// A wrapper's own counters and settings (Lookahead: `k`, `alpha`, `step_counter`).
    public var wrapper: [String: Double]
    private var wrapped: [OptimizerSnapshot]

    /// The wrapped optimizer's snapshot, for a wrapper.
    public var base: OptimizerSnapshot? {
        get { wrapped.first }
        set { wrapped = newValue.map { [$0] } ?? [] }
    }

    /// A snapshot of the optimizer `optimizer` (its registry name); `base` is the wrapped
    /// optimizer's snapshot, for a wrapper.
    public init(optimizer: String, groups: [Group], parameters: [String: ParameterState], skippedSteps: Int,
                wrapper: [String: Double] = [:], base: OptimizerSnapshot? = nil) {
        self.optimizer = optimizer
        self.groups = groups
        self.parameters = parameters
        self.skippedSteps = skippedSteps
        self.wrapper = wrapper
        self.wrapped = base.map { [$0] } ?? []
    }
}

extension GradientOptimizer {
    /// The groups, per-parameter state and skipped steps, for a checkpoint.
    public func snapshot() -> OptimizerSnapshot {
        var parameters: [String: OptimizerSnapshot.ParameterState] = [:]
        for slot in slots {
            var buffers: [String: [Float]] = [:], quantized: [String: OptimizerSnapshot.QuantizedBuffer] = [:], halves: [String: [UInt16]] = [:]
            switch slot.storage {
            case .int8, .int4:
                for (buffer, (codes, absmax)) in zip(slot.layout, zip(slot.codes, slot.state)) {
                    quantized[buffer.name] = .init(codes: Array(codes), absmax: Array(absmax))
                }
            case .bfloat16:
                for (buffer, bits) in zip(slot.layout, slot.halves) { halves[buffer.name] = Array(bits) }
            case .float32:
                for (buffer, storage) in zip(slot.layout, slot.state) { buffers[buffer.name] = Array(storage) }
            }
            let scalarNames = Rule.scalarStateNames(groups[slot.group].hyperparameters)
            var beside: [String: [UInt16]] = [:]
            if let name = parameterBufferName(slot), let buffer = slot.parameterBuffer { beside[name] = Array(buffer) }
            parameters[slot.parameter.name] = .init(stepCount: slot.steps, buffers: buffers, gradientScale: slot.gradientScale,
                                                    scalars: Dictionary(uniqueKeysWithValues: zip(scalarNames, slot.scalars)),
                                                    quantizedBuffers: quantized, bfloat16Buffers: halves, parameterBuffers: beside)
        }
        let groupStates = groups.enumerated().map { index, group in
            OptimizerSnapshot.Group(parameterNames: group.parameters.map(\.name), hyperparameters: group.hyperparameters.dictionary,
                                    initialLearningRate: initialLearningRates[index],
                                    state: Dictionary(uniqueKeysWithValues: zip(Rule.groupStateNames(group.hyperparameters), self.groupStates[index])))
        }
        return OptimizerSnapshot(optimizer: Rule.name, groups: groupStates, parameters: parameters, skippedSteps: skippedSteps)
    }

    /// Restores `snapshot`, after checking all of it: the optimizer, the groups and their
    /// parameters, hyperparameters, every buffer's name and length. On any mismatch it throws
    /// ``OptimError/checkpointMismatch(_:)`` and the optimizer is left exactly as it was.
    public func restore(_ snapshot: OptimizerSnapshot) throws(OptimError) {
        // Check everything first.
        guard snapshot.optimizer == Rule.name else {
            throw .checkpointMismatch("the checkpoint is for optimizer '\(snapshot.optimizer)', not '\(Rule.name)'")
        }
        guard snapshot.base == nil else { throw .checkpointMismatch("the checkpoint wraps another optimizer; '\(Rule.name)' does not") }
        guard snapshot.groups.count == groups.count else {
            throw .checkpointMismatch("the checkpoint has \(snapshot.groups.count) parameter group(s), the optimizer \(groups.count)")
        }
        var hyperparameters: [Hyperparameters] = []
        for (index, (saved, live)) in zip(snapshot.groups, groups).enumerated() {
            let names = live.parameters.map(\.name)
            guard saved.parameterNames == names else {
                throw .checkpointMismatch("group \(index) holds \(saved.parameterNames) in the checkpoint but \(names) here")
            }
            let parsed = try Hyperparameters(saved.hyperparameters)
            try parsed.validate()
            // The state format is part of the optimizer, not of the file: no silent conversion.
            guard parsed.statePrecision == live.hyperparameters.statePrecision else {
                throw .checkpointMismatch("group \(index): the checkpoint keeps \(parsed.statePrecision) state, this optimizer \(live.hyperparameters.statePrecision) state; build the optimizer with the checkpoint's state_dtype, min_8bit_size and bfloat16 parameter rounding (bf16_stochastic_round, kahan_sum, master_weights) to resume it")
            }
            guard saved.initialLearningRate.isFinite, saved.initialLearningRate > 0 else {
                throw .checkpointMismatch("group \(index): invalid initial learning rate \(saved.initialLearningRate)")
            }
            let stateNames = Rule.groupStateNames(parsed)
            guard Set(saved.state.keys) == Set(stateNames), saved.state.values.allSatisfy(\.isFinite) else {
                throw .checkpointMismatch("group \(index): group state \(saved.state.keys.sorted()), expected \(stateNames.sorted()) (finite)")
            }
            hyperparameters.append(parsed)
        }
        let live = Set(slots.map(\.parameter.name)), saved = Set(snapshot.parameters.keys)
        if let missing = live.subtracting(saved).sorted().first { throw .checkpointMismatch("the checkpoint has no state for parameter '\(missing)'") }
        if let extra = saved.subtracting(live).sorted().first { throw .checkpointMismatch("the checkpoint has state for '\(extra)', which this optimizer does not hold") }
        for slot in slots {
            let state = snapshot.parameters[slot.parameter.name]!
            guard state.stepCount >= 0, state.gradientScale.isFinite else {
                throw .checkpointMismatch("parameter '\(slot.parameter.name)': invalid step count \(state.stepCount) or gradient scale")
            }
            let layout = Rule.stateLayout(hyperparameters[slot.group], shape: slot.parameter.shape)
            let expected = layout.map(\.name)
            let storage = hyperparameters[slot.group].statePrecision.storage(count: slot.parameter.count)
            // Quantized buffers (8-bit or 4-bit, as the group's state_dtype says) are one kind here.
            let held: [(kind: String, names: [String])] = [("float32", Array(state.buffers.keys)), ("quantized", Array(state.quantizedBuffers.keys)),
                                                            ("bfloat16", Array(state.bfloat16Buffers.keys))]
            let kind = storage.isQuantized ? "quantized" : storage.rawValue
            let names = Set(held.first { $0.kind == kind }!.names)
            for (format, stored) in held where format != kind {
                if let stray = stored.sorted().first {
                    throw .checkpointMismatch("parameter '\(slot.parameter.name)': buffer '\(stray)' is \(format) in the checkpoint, but this optimizer keeps \(storage) state for it")
                }
            }
            guard names == Set(expected) || (names.isEmpty && state.stepCount == 0) else {
                throw .checkpointMismatch("parameter '\(slot.parameter.name)': state buffers \(names.sorted()), expected \(expected)")
            }
            for buffer in layout {
                if let values = state.buffers[buffer.name], values.count != buffer.count {
                    throw .checkpointMismatch("parameter '\(slot.parameter.name)': buffer '\(buffer.name)' holds \(values.count) values, expected \(buffer.count)")
                }
                if let bits = state.bfloat16Buffers[buffer.name], bits.count != buffer.count {
                    throw .checkpointMismatch("parameter '\(slot.parameter.name)': bfloat16 buffer '\(buffer.name)' holds \(bits.count) values, expected \(buffer.count)")
                }
                if let stored = state.quantizedBuffers[buffer.name] {
                    let blocks = storage.scaleCount(count: buffer.count), bytes = storage.codeBytes(count: buffer.count)
                    let what = storage == .int4 ? "4-bit" : "8-bit"
                    guard stored.codes.count == bytes, stored.absmax.count == blocks else {
                        throw .checkpointMismatch("parameter '\(slot.parameter.name)': \(what) buffer '\(buffer.name)' holds \(stored.codes.count) code bytes and \(stored.absmax.count) absmax values, expected \(bytes) and \(blocks) (blocks of \(storage.blockSize))")
                    }
                    guard stored.absmax.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                        throw .checkpointMismatch("parameter '\(slot.parameter.name)': \(what) buffer '\(buffer.name)' has a negative or non-finite absmax")
                    }
                }
            }
            let besideName = slot.dtype == .bfloat16 ? hyperparameters[slot.group].statePrecision.parameterRounding.parameterBufferName : nil
            let beside = Set(state.parameterBuffers.keys)
            if let besideName {
                guard beside.isSubset(of: [besideName]), !beside.isEmpty || state.stepCount == 0 else {
                    throw .checkpointMismatch("parameter '\(slot.parameter.name)': buffers beside the parameter \(beside.sorted()), expected ['\(besideName)'] (bfloat16 parameters rounded \(hyperparameters[slot.group].statePrecision.parameterRounding))")
                }
                if let bits = state.parameterBuffers[besideName], bits.count != slot.parameter.count {
                    throw .checkpointMismatch("parameter '\(slot.parameter.name)': '\(besideName)' holds \(bits.count) values, expected \(slot.parameter.count)")
                }
            } else if let stray = beside.sorted().first {
                throw .checkpointMismatch("parameter '\(slot.parameter.name)': the checkpoint keeps '\(stray)' beside it, which this optimizer does not (\(slot.dtype) parameter, rounded \(hyperparameters[slot.group].statePrecision.parameterRounding))")
            }
            let scalarNames = Rule.scalarStateNames(hyperparameters[slot.group])
            guard Set(state.scalars.keys) == Set(scalarNames) || (state.scalars.isEmpty && names.isEmpty) else {
                throw .checkpointMismatch("parameter '\(slot.parameter.name)': scalar state \(state.scalars.keys.sorted()), expected \(scalarNames)")
            }
        }
        guard snapshot.skippedSteps >= 0 else { throw .checkpointMismatch("invalid skipped-step count \(snapshot.skippedSteps)") }

        // Then apply; nothing below can fail.
        for index in groups.indices {
            groups[index].hyperparameters = hyperparameters[index]
            initialLearningRates[index] = snapshot.groups[index].initialLearningRate
            refreshLayouts(group: index)
            scalarGroups[index] = !Rule.scalarStateNames(hyperparameters[index]).isEmpty
            groupStates[index] = Rule.groupStateNames(hyperparameters[index]).map { snapshot.groups[index].state[$0]! }
        }
        skippedSteps = snapshot.skippedSteps
        let needing = slots.indices.filter { index in
            let saved = snapshot.parameters[slots[index].parameter.name]!
            return !(saved.buffers.isEmpty && saved.quantizedBuffers.isEmpty && saved.bfloat16Buffers.isEmpty) && slots[index].state.count < slots[index].layout.count
        }
        if !needing.isEmpty { allocateState(needing) }
        for index in slots.indices {
            let state = snapshot.parameters[slots[index].parameter.name]!
            if let name = parameterBufferName(slots[index]) {
                if let stored = state.parameterBuffers[name] {
                    _ = heldParameterBuffer(index).update(fromContentsOf: stored)
                } else {
                    slots[index].parameterBuffer?.update(repeating: 0)
                }
            }
            slots[index].steps = state.stepCount
            slots[index].gradientScale = state.gradientScale
            slots[index].scalars = Rule.scalarStateNames(groups[slots[index].group].hyperparameters).compactMap { state.scalars[$0] }
            for (position, name) in slots[index].layout.map(\.name).enumerated() where position < slots[index].state.count {
                let buffer = slots[index].state[position]
                if slots[index].storage == .bfloat16 {
                    let halves = slots[index].halves[position]
                    if let stored = state.bfloat16Buffers[name] {
                        _ = halves.update(fromContentsOf: stored)
                    } else {
                        let initial = Rule.initialState(groups[slots[index].group].hyperparameters)
                        halves.update(repeating: BFloat16State.bits(position < initial.count ? initial[position] : 0))
                    }
                    continue
                }
                if slots[index].quantized {
                    let codes = slots[index].codes[position]
                    if let stored = state.quantizedBuffers[name] {
                        stored.codes.withUnsafeBufferPointer { codes.baseAddress!.update(from: $0.baseAddress!, count: stored.codes.count) }
                        stored.absmax.withUnsafeBufferPointer { buffer.baseAddress!.update(from: $0.baseAddress!, count: stored.absmax.count) }
                    } else {
                        codes.update(repeating: 0)
                        buffer.update(repeating: 0)
                    }
                    continue
                }
                if let values = state.buffers[name] {
                    values.withUnsafeBufferPointer { source in buffer.baseAddress!.update(from: source.baseAddress!, count: values.count) }
                } else {
                    let initial = Rule.initialState(groups[slots[index].group].hyperparameters)
                    buffer.update(repeating: position < initial.count ? initial[position] : 0)
                }
            }
        }
    }
}

extension Lookahead {
    /// The wrapped optimizer's snapshot, with Lookahead's slow weights and counters (`k`, `alpha`,
    /// `step_counter`).
    public func snapshot() -> OptimizerSnapshot {
        var snapshot = OptimizerSnapshot(optimizer: Self.name, groups: [], parameters: [:], skippedSteps: 0,
                                         wrapper: ["k": Double(k), "alpha": alpha, "step_counter": Double(stepCount)], base: base.snapshot())
        for (parameter, slow) in zip(tracked, slowWeights) {
            snapshot.parameters[parameter.name] = .init(stepCount: 0, buffers: ["slow_weights": Array(slow)], gradientScale: 1)
        }
        return snapshot
    }

    /// Restores the wrapped optimizer's state, the slow weights and the step counter, after
    /// checking all of it; on a mismatch nothing changes.
    public func restore(_ snapshot: OptimizerSnapshot) throws(OptimError) {
        guard snapshot.optimizer == Self.name, let baseSnapshot = snapshot.base else {
            throw .checkpointMismatch("the checkpoint is for optimizer '\(snapshot.optimizer)', not 'lookahead'")
        }
        guard snapshot.wrapper["k"] == Double(k), snapshot.wrapper["alpha"] == alpha,
              let counter = snapshot.wrapper["step_counter"], counter >= 0, counter == counter.rounded(), counter < 1e15 else {
            throw .checkpointMismatch("lookahead settings differ: checkpoint \(snapshot.wrapper), here k \(k), alpha \(alpha)")
        }
        for parameter in tracked {
            guard let slow = snapshot.parameters[parameter.name]?.buffers["slow_weights"], slow.count == parameter.count else {
                throw .checkpointMismatch("parameter '\(parameter.name)': missing or mis-sized slow weights")
            }
        }
        guard snapshot.parameters.count == tracked.count else { throw .checkpointMismatch("the checkpoint has slow weights for other parameters") }
        try base.restore(baseSnapshot)  // checks before changing; nothing below can fail
        stepCount = Int(counter)
        for (parameter, slow) in zip(tracked, slowWeights) {
            let values = snapshot.parameters[parameter.name]!.buffers["slow_weights"]!
            values.withUnsafeBufferPointer { slow.baseAddress!.update(from: $0.baseAddress!, count: values.count) }
        }
    }
}
