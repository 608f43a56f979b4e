import COptimSIMD

/// bfloat16 optimizer state (``StateDType/bfloat16``) for any elementwise rule: its float32
/// kernel runs unchanged on chunks of the state widened to float32 in a small scratch, and the
/// new state is rounded back to bfloat16, nearest even — one pass over memory, 2 bytes a state
/// element read and written instead of 4.
///
/// Round to nearest even is torch's `float → bfloat16` conversion (`c10::BFloat16`,
/// `tensor.to(torch.bfloat16)`): add `0x7FFF` plus the lowest kept bit to the float's bits and keep
/// the top 16; NaN becomes the quiet NaN `0x7FC0`. Widening is exact (the bits shifted up by 16).
/// So a step with bfloat16 state is, bit for bit, the float32 step on state that holds bfloat16
/// values, followed by rounding the state: the reference the fixtures are made from
/// (`tools/reference/make_bfloat16_fixtures.py`).
public enum BFloat16State {
    /// Elements per chunk: the float32 scratch of four state buffers is 16 KB, in L1.
    public static let chunk = 1024

    /// The bits of `x` rounded to the nearest bfloat16, ties to even; NaN → `0x7FC0`.
    @inlinable @inline(__always)
    public static func bits(_ x: Float) -> UInt16 {
        guard !x.isNaN else { return 0x7FC0 }
        let bits = x.bitPattern
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    /// The float32 value of bfloat16 bits (exact).
    @inlinable @inline(__always)
    public static func value(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Widens `count` bfloat16 values at `source` into `target` (`optim_bf16_widen`: vector code
    /// for the calling kernel module's CPU).
    @_transparent
    public static func widen(_ source: UnsafeMutablePointer<UInt16>, into target: UnsafeMutablePointer<Float>, count: Int) {
        optim_bf16_widen(source, target, count)
    }

    /// Rounds `count` float32 values at `source` to bfloat16 at `target`, nearest even
    /// (`optim_bf16_narrow`, vector code for the calling kernel module's CPU).
    @_transparent
    public static func narrow(_ source: UnsafeMutablePointer<Float>, into target: UnsafeMutablePointer<UInt16>, count: Int) {
        optim_bf16_narrow(source, target, count)
    }

    /// The widening and rounding loops of one instruction set, as the calling module compiles
    /// them (``KernelTable/setBFloat16Conversions(_:)``); ``baseline`` is Optim's own.
    public struct Conversions: @unchecked Sendable {
        /// ``BFloat16State/widen(_:into:count:)``.
        public let widen: (UnsafeMutablePointer<UInt16>, UnsafeMutablePointer<Float>, Int) -> Void
        /// ``BFloat16State/narrow(_:into:count:)``.
        public let narrow: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<UInt16>, Int) -> Void
        /// ``BFloat16Parameters/roundNearest(_:count:)``: bfloat16 parameters after a step.
        public let roundNearest: (UnsafeMutablePointer<Float>, Int) -> Void
        /// ``BFloat16Parameters/roundStochastically(_:count:first:key0:key1:)``.
        public let roundStochastically: (UnsafeMutablePointer<Float>, Int, Int, UInt32, UInt32) -> Void
        /// ``BFloat16Parameters/roundCompensated(_:compensation:count:)``.
        public let roundCompensated: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<UInt16>, Int) -> Void
        /// ``BFloat16Parameters/joinMaster(_:remainders:count:)``.
        public let joinMaster: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int16>, Int) -> Void
        /// ``BFloat16Parameters/splitMaster(_:remainders:count:)``.
        public let splitMaster: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int16>, Int) -> Void

        /// The loops from their function values.
        public init(widen: @escaping (UnsafeMutablePointer<UInt16>, UnsafeMutablePointer<Float>, Int) -> Void,
                    narrow: @escaping (UnsafeMutablePointer<Float>, UnsafeMutablePointer<UInt16>, Int) -> Void,
                    roundNearest: @escaping (UnsafeMutablePointer<Float>, Int) -> Void,
                    roundStochastically: @escaping (UnsafeMutablePointer<Float>, Int, Int, UInt32, UInt32) -> Void,
                    roundCompensated: @escaping (UnsafeMutablePointer<Float>, UnsafeMutablePointer<UInt16>, Int) -> Void,
                    joinMaster: @escaping (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int16>, Int) -> Void,
                    splitMaster: @escaping (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int16>, Int) -> Void) {
            self.widen = widen
            self.narrow = narrow
            self.roundNearest = roundNearest
            self.roundStochastically = roundStochastically
            self.roundCompensated = roundCompensated
            self.joinMaster = joinMaster
            self.splitMaster = splitMaster
        }

        /// The loops compiled into Optim itself: the baseline path.
        public static let baseline = Conversions(
            widen: { BFloat16State.widen($0, into: $1, count: $2) },
            narrow: { BFloat16State.narrow($0, into: $1, count: $2) },
            roundNearest: { BFloat16Parameters.roundNearest($0, count: $1) },
            roundStochastically: { BFloat16Parameters.roundStochastically($0, count: $1, first: $2, key0: $3, key1: $4) },
            roundCompensated: { BFloat16Parameters.roundCompensated($0, compensation: $1, count: $2) },
            joinMaster: { BFloat16Parameters.joinMaster($0, remainders: $1, count: $2) },
            splitMaster: { BFloat16Parameters.splitMaster($0, remainders: $1, count: $2) })
    }

    /// The update of elements `range` of a tensor whose state is bfloat16
    /// (``KernelOperands/bfloat16State``): chunk by chunk, its state buffers widened into a float32
    /// scratch, the rule's compiled float32 kernel (`kernels.update`, or `kernels.updateCollecting`)
    /// run on the chunk with the scratch as its state, and the new state rounded back: to nearest
    /// even, or with `stochasticKeys` stochastically (torchao's `_fp32_to_bf16_sr` with the
    /// counter-based bits of ``BFloat16Parameters``, element index = position in the tensor).
    /// Returns the metric sums when `collectingMetrics`.
    ///
    /// Written against the function values of a path's kernels rather than the rule's generic
    /// `update`: a kernel module that inlined this loop would also compile `update` out of line
    /// under Optim's symbol name, which the linker would share between paths.
    public static func run<Coefficients>(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients, kernels: RuleKernels<Coefficients>,
                                         conversions: Conversions, stochasticKeys: (UInt32, UInt32)? = nil,
                                         collectingMetrics: Bool) -> MetricAccumulator {
        let halves = o.bfloat16State!
        // The caller's scratch (the optimizer keeps one per thread), else one of our own.
        let owned = o.scratch == nil ? UnsafeMutablePointer<Float>.allocate(capacity: 4 * chunk) : nil
        defer { owned?.deallocate() }
        let scratch = o.scratch ?? owned!
        // Four tests, not an array of the buffers: an array literal allocates on every call.
        func buffer(_ index: Int) -> UnsafeMutablePointer<UInt16> {
            switch index {
            case 0: halves.buffer0
            case 1: halves.buffer1
            case 2: halves.buffer2
            default: halves.buffer3
            }
        }
        // The chunk's operands: the rule's state is the scratch, one slice of `chunk` per buffer.
        var part = o
        part.bfloat16State = nil
        part.scratch = nil
        if halves.count > 0 { part.state0 = scratch }
        if halves.count > 1 { part.state1 = scratch + chunk }
        if halves.count > 2 { part.state2 = scratch + 2 * chunk }
        if halves.count > 3 { part.state3 = scratch + 3 * chunk }
        var total = MetricAccumulator()
        var start = range.lowerBound
        while start < range.upperBound {
            let count = min(chunk, range.upperBound - start)
            part.parameter = o.parameter + start
            part.gradient = o.gradient + start
            part.count = count
            for index in 0..<halves.count { conversions.widen(buffer(index) + start, scratch + index * chunk, count) }
            if collectingMetrics {
                total = total + kernels.updateCollecting(part, 0..<count, c)
            } else {
                kernels.update(part, 0..<count, c)
            }
            if let keys = stochasticKeys {
                // Stochastic rounding first (the values become bfloat16 values), so the narrowing
                // below only drops zero bits. Buffer b draws from its own stream: key0 + b·φ.
                for index in 0..<halves.count {
                    conversions.roundStochastically(scratch + index * chunk, count, start, keys.0 &+ UInt32(index) &* 0x9E37_79B9, keys.1)
                }
            }
            for index in 0..<halves.count { conversions.narrow(scratch + index * chunk, buffer(index) + start, count) }
            start += count
        }
        return total
    }
}
