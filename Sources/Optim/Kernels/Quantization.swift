import COptimSIMD
import Foundation

/// The number format an optimizer keeps its per-parameter state in, chosen per parameter group
/// with the hyperparameter `state_dtype` (FORMAT.md, "Low-precision optimizer state").
///
/// - ``float32``: the default; every rule keeps its state this way.
/// - ``int8``: bitsandbytes' blockwise 8-bit dynamic quantization (bitsandbytes 0.50.2; Dettmers
///   et al., 2022, "8-bit Optimizers via Block-wise Quantization", arXiv:2110.02861): each state
///   buffer is one `UInt8` code per element into a 256-entry ``DynamicQuantizationMap`` and one
///   `Float` absmax per block of ``BlockwiseQuantization/blockSize`` (256) elements, so a value is
///   `map[code] · absmax`. Signed state (first moments) uses ``DynamicQuantizationMap/signed``,
///   the second moment ``DynamicQuantizationMap/unsigned``. A parameter with fewer than
///   ``StatePrecision/minimumQuantizedCount`` elements (`min_8bit_size`, 4096) keeps float32
///   state, as bitsandbytes does. Rules that offer it: ``AdamRule``, ``AdamWRule``, ``LionRule``,
///   ``SGDRule`` (momentum), ``RMSpropRule`` (neither momentum nor centred), ``AdagradRule`` and
///   ``AdEMAMixRule`` (three buffers: both averages on the signed map, `nu` on the unsigned one),
///   each in bitsandbytes' own 8-bit arithmetic; and ``DecoupledAdamWRule``,
///   ``DecoupledLionWRule`` and ``ADOPTRule``, which bitsandbytes does not offer in 8 bits: their
///   own float32 kernels on the dequantized state, then bitsandbytes' quantization
///   (``BlockwiseQuantization/runFloatKernel(_:_:_:_:map0:map1:collectingMetrics:)``).
///   One-state rules quantize with the signed map, as bitsandbytes' `Optimizer1State` does.
///
/// Speed (BENCHMARKS.md, "8-bit optimizer state", with its commands): the fused 8-bit step is
/// 8–9× faster than bitsandbytes' own CPU 8-bit step on the same 64M-parameter tensors, but still
/// compute-bound at 3–5× the float32 step's time (measured under load on 2026-12-02).
///
/// - ``bfloat16``: every state buffer element is a bfloat16 (2 bytes), widened to float32 for
///   the update and rounded back to the nearest bfloat16, ties to even (torch's
///   `tensor.to(torch.bfloat16)`), in one pass per chunk of ``BFloat16State/chunk`` elements
///   (``BFloat16State/run(_:_:_:kernels:conversions:stochasticKeys:collectingMetrics:)``). Scalar state (NAdam's `mu_product`,
///   ASGD's `eta`) stays float32; every tensor is rounded, whatever its size. Rules that offer it
///   list it in their ``UpdateRule/stateDTypes``.
///
/// - ``int4``: torchao's 4-bit state (torchao 0.18 `AdamW4bit`/`Adam4bit`; Li et al., 2023,
///   "Memory Efficient Optimizers with 4-bit States", arXiv:2309.01507): two codes a byte into a
///   16-entry ``FourBitMap`` (signed for first moments, the linear unsigned map for second
///   moments) and one float32 scale per block of ``FourBitQuantization/blockSize`` (128), about
///   0.53 bytes an element. A tensor keeps float32 state when it has fewer than
///   ``StatePrecision/minimumQuantizedCount`` elements or a count that is not a multiple of 128,
///   as torchao does. Rules that offer it: ``AdamRule`` and ``AdamWRule``, whose 4-bit update is
///   torchao's (``FourBitQuantization``).
public enum StateDType: String, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE single precision, 4 bytes an element: every optimizer's default.
    case float32
    /// bfloat16 (8 significant bits, float32's exponent range): 2 bytes an element, rounded to
    /// nearest even after every update.
    case bfloat16
    /// bitsandbytes' blockwise 8-bit dynamic quantization: 1 byte an element plus a float32
    /// absmax per block of 256 (about 1.016 bytes an element).
    case int8
    /// torchao's blockwise 4-bit state: half a byte an element plus a float32 scale per block of
    /// 128 (about 0.531 bytes an element).
    case int4

    /// Bits one element of a state buffer takes, block scales left out (32, 16, 8 and 4).
    public var bitsPerElement: Int {
        switch self {
        case .float32: 32
        case .bfloat16: 16
        case .int8: 8
        case .int4: 4
        }
    }

    /// Whether the format is blockwise quantized: codes plus one float32 scale per block.
    public var isQuantized: Bool { self == .int8 || self == .int4 }

    /// Elements per block of a quantized format: 256 for int8 (bitsandbytes), 128 for int4
    /// (torchao); 0 for the others.
    public var blockSize: Int {
        switch self {
        case .int8: BlockwiseQuantization.blockSize
        case .int4: FourBitQuantization.blockSize
        case .float32, .bfloat16: 0
        }
    }

    /// Bytes of codes a quantized buffer of `count` elements holds: `count` for int8, `count / 2`
    /// for int4 (two codes a byte).
    public func codeBytes(count: Int) -> Int { self == .int4 ? count / 2 : count }

    /// Scales (one float32 per block) a quantized buffer of `count` elements holds: ⌈count / block⌉.
    public func scaleCount(count: Int) -> Int { isQuantized ? (count + blockSize - 1) / blockSize : 0 }

    /// Bytes a state buffer of `count` elements takes in this format, its block scales included.
    public func stateBytes(count: Int) -> Int {
        isQuantized ? codeBytes(count: count) + 4 * scaleCount(count: count) : count * bitsPerElement / 8
    }

    /// The `state_dtype` name: `float32`, `bfloat16`, `int8` or `int4`.
    public var description: String { rawValue }
}

/// A parameter group's state format: the ``StateDType`` and the size under which a tensor keeps
/// float32 state anyway — bitsandbytes' `optim_bits` and `min_8bit_size`, read from the
/// hyperparameters `state_dtype` (`"float32"`, `"int8"`) and `min_8bit_size` (FORMAT.md).
public struct StatePrecision: Sendable, Hashable, CustomStringConvertible {
    /// The format of the group's state buffers.
    public var dtype: StateDType
    /// Tensors with fewer elements keep float32 state (bitsandbytes' `min_8bit_size`).
    public var minimumQuantizedCount: Int
    /// How the group's bfloat16 parameters are rounded after a step (``BFloat16Rounding``):
    /// the hyperparameters `bf16_stochastic_round` (torchao's name; false, the default, rounds
    /// to nearest even) and `bf16_rounding_seed` (0 by default), or `kahan_sum` (optimi's name),
    /// or `master_weights` (apex's name). float32 parameters ignore it.
    public var parameterRounding: BFloat16Rounding = .nearestEven
    /// How bfloat16 *state* is rounded when it is stored after each update: to nearest even
    /// (torchao's and FORMAT.md's bfloat16 state, the default), or stochastically, so that an
    /// update smaller than half a bfloat16 step still moves the state on average (hyperparameter
    /// `bf16_state_stochastic_round`, with the same seed `bf16_rounding_seed` as the parameters;
    /// valid only with ``StateDType/bfloat16`` state). Each state buffer of each tensor draws its
    /// own counter-based bits (seed, tensor, step, buffer, element), so runs are deterministic and
    /// resume bit-exact on any thread count.
    public var stateRounding: BFloat16Rounding = .nearestEven

    /// bitsandbytes' `min_8bit_size` default.
    public static let defaultMinimumQuantizedCount = 4096
    /// Float32 state: the default of every optimizer.
    public static let float32 = StatePrecision()

    /// A state format; `minimumQuantizedCount` defaults to bitsandbytes' 4096.
    public init(dtype: StateDType = .float32, minimumQuantizedCount: Int = StatePrecision.defaultMinimumQuantizedCount,
                parameterRounding: BFloat16Rounding = .nearestEven, stateRounding: BFloat16Rounding = .nearestEven) {
        self.dtype = dtype
        self.minimumQuantizedCount = minimumQuantizedCount
        self.parameterRounding = parameterRounding
        self.stateRounding = stateRounding
    }

    /// Whether a tensor of `count` elements keeps quantized state: 8-bit or 4-bit state and at
    /// least ``minimumQuantizedCount`` elements (bitsandbytes: `p.numel() < min_8bit_size` →
    /// float32), and for 4-bit state a multiple of 128 elements (torchao's condition).
    public func quantizes(count: Int) -> Bool {
        switch dtype {
        case .int8: count >= minimumQuantizedCount
        case .int4: count >= minimumQuantizedCount && count % FourBitQuantization.blockSize == 0
        case .float32, .bfloat16: false
        }
    }

    /// The format a tensor of `count` elements keeps its state in: ``dtype``, but float32 for a
    /// quantized group's tensors that ``quantizes(count:)`` leaves out.
    public func storage(count: Int) -> StateDType {
        dtype.isQuantized && !quantizes(count: count) ? .float32 : dtype
    }

    /// `int8 (min_8bit_size 4096)`, `int4 (min_8bit_size 4096)`, `bfloat16` or `float32`.
    public var description: String {
        let rounding = parameterRounding == .nearestEven ? "" : ", bfloat16 parameters rounded \(parameterRounding)"
        let stateRounding = self.stateRounding == .nearestEven ? "" : ", rounded \(self.stateRounding)"
        return (dtype.isQuantized ? "\(dtype) (min_8bit_size \(minimumQuantizedCount))" : dtype.rawValue) + stateRounding + rounding
    }

    /// Reads `state_dtype`, `min_8bit_size`, `bf16_stochastic_round`, `kahan_sum`, `master_weights`,
    /// `bf16_state_stochastic_round` and `bf16_rounding_seed`, refusing a dtype the optimizer
    /// cannot keep and more than one way to round bfloat16 parameters.
    init(reading reader: inout HyperparameterReader, supported: [StateDType]) throws(OptimError) {
        let names = StateDType.allCases.map(\.rawValue)
        let name = try reader.choice("state_dtype", names, default: StateDType.float32.rawValue)
        let dtype = StateDType(rawValue: name)!
        guard supported.contains(dtype) else { throw Self.unsupported(dtype.rawValue, optimizer: reader.optimizer, supported: supported) }
        let minimum = try reader.number("min_8bit_size", default: Double(Self.defaultMinimumQuantizedCount))
        guard minimum.isFinite, minimum >= 0, minimum == minimum.rounded(), minimum < 1e15 else {
            throw .invalidHyperparameter(optimizer: reader.optimizer, name: "min_8bit_size", value: HyperparameterValue.format(minimum),
                                         expected: "a whole number in [0, 10^15)")
        }
        let flags = BFloat16Rounding.flagNames
        let stochastic = try reader.bool(flags[0], default: false)
        let seed = try reader.number("bf16_rounding_seed", default: 0)
        guard seed.isFinite, seed >= 0, seed == seed.rounded(), seed <= Double(BFloat16Rounding.largestSeed) else {
            throw .invalidHyperparameter(optimizer: reader.optimizer, name: "bf16_rounding_seed", value: HyperparameterValue.format(seed),
                                         expected: BFloat16Rounding.seedRange)
        }
        let kahan = try reader.bool(flags[1], default: false)
        let master = try reader.bool(flags[2], default: false)
        let chosen = zip(flags, [stochastic, kahan, master]).filter(\.1).map(\.0)
        if chosen.count > 1 {
            throw .invalidHyperparameter(optimizer: reader.optimizer, name: chosen[1], value: "true",
                                         expected: "false when \(chosen[0]) is true (bfloat16 parameters take one of \(flags[0]), \(flags[1]) and \(flags[2]))")
        }
        let stochasticState = try reader.bool("bf16_state_stochastic_round", default: false)
        if stochasticState && dtype != .bfloat16 {
            throw .invalidHyperparameter(optimizer: reader.optimizer, name: "bf16_state_stochastic_round", value: "true",
                                         expected: "false unless state_dtype is 'bfloat16' (state_dtype is '\(dtype)')")
        }
        let parameterRounding: BFloat16Rounding = stochastic ? .stochastic(seed: UInt64(seed)) : kahan ? .kahanSum : master ? .masterWeights : .nearestEven
        self.init(dtype: dtype, minimumQuantizedCount: Int(minimum), parameterRounding: parameterRounding,
                  stateRounding: stochasticState ? .stochastic(seed: UInt64(seed)) : .nearestEven)
    }

    /// The one seed of the stochastic roundings (``parameterRounding``, ``stateRounding``), nil when both round to nearest.
    var roundingSeed: UInt64? {
        if case let .stochastic(seed) = parameterRounding { return seed }
        if case let .stochastic(seed) = stateRounding { return seed }
        return nil
    }

    /// Adds `state_dtype`, `min_8bit_size` and the bfloat16 parameter rounding to a hyperparameter dictionary where they differ
    /// from the defaults, so that float32 optimizers' dictionaries stay torch's.
    func write(into dictionary: inout HyperparameterDictionary) {
        if dtype != .float32 { dictionary["state_dtype"] = .string(dtype.rawValue) }
        if minimumQuantizedCount != Self.defaultMinimumQuantizedCount { dictionary["min_8bit_size"] = .number(Double(minimumQuantizedCount)) }
        switch parameterRounding {
        case .nearestEven: break
        case .stochastic: dictionary["bf16_stochastic_round"] = .bool(true)
        case .kahanSum: dictionary["kahan_sum"] = .bool(true)
        case .masterWeights: dictionary["master_weights"] = .bool(true)
        }
        if stateRounding != .nearestEven { dictionary["bf16_state_stochastic_round"] = .bool(true) }
        if let roundingSeed { dictionary["bf16_rounding_seed"] = .number(Double(roundingSeed)) }
    }

    /// The error for a `state_dtype` an optimizer cannot keep: one line naming the value, what the
    /// optimizer supports and which optimizers keep that format.
    static func unsupported(_ value: String, optimizer: String, supported: [StateDType]) -> OptimError {
        let offering = StateDType(rawValue: value).map { dtype in
            " (\(dtype) state: " + OptimizerRegistry.all.filter { $0.stateDTypes.contains(dtype) }.map(\.name).joined(separator: ", ") + ")"
        } ?? ""
        return .invalidConfiguration("\(optimizer): state_dtype '\(value)' is not supported; \(optimizer) keeps "
            + supported.map(\.rawValue).joined(separator: " or ") + " state" + offering)
    }
}

/// A 256-entry dynamic quantization map of bitsandbytes (`functional.create_dynamic_map`,
/// bitsandbytes 0.50.2; Dettmers, 2016, "8-Bit Approximations for Parallelism in Deep
/// Learning", arXiv:1511.04561, and Dettmers et al., 2022, arXiv:2110.02861): a dynamic exponent
/// (7 bits, 10⁻⁶ … 1) and a linear fraction in the remaining bits, sorted, plus 0 and 1.
///
/// Its ``values`` are bitsandbytes' float32 values bit for bit (checked against the map in
/// `Tests/Fixtures/lowbit/bnb-blockwise-quantization.json`, which bitsandbytes wrote).
/// ``code(normalized:)`` is the nearest-entry rounding of bitsandbytes' CPU quantizer
/// (`quantize_cpu` in `csrc/cpu_ops.cpp`): a 65,536-bin lookup table over [−1, 1] whose bin `i`,
/// at `−1 + 2i/65535`, holds the first entry whose midpoint with the next one is not below it
/// (a tie goes to the lower entry); a normalised value `v` falls in bin
/// `⌊((v + 1)·0.5)·65535 + 0.5⌋` (float32, no fused multiply-add).
public final class DynamicQuantizationMap: @unchecked Sendable {
    /// The 256 entries, ascending: `create_dynamic_map(signed)` of bitsandbytes 0.50.2.
    public let values: [Float]
    /// Whether it is the signed map (entries in [−0.993, 1]) or the unsigned one ([0, 1]).
    public let isSigned: Bool
    /// The entries and the lookup table, as immortal buffers the kernels read without checks.
    @usableFromInline let entries: UnsafeMutablePointer<Float>
    @usableFromInline let table: UnsafeMutablePointer<UInt8>
    /// The table as a binary search: 19 rows of 16 `Int32` (see `optim_code_search16` in
    /// COptimSIMD), which the AVX-512 kernels search with permutes instead of reading the table.
    @usableFromInline let searchLevels: UnsafeMutablePointer<Int32>
    /// Bins of the lookup table (bitsandbytes' `kLUTSize`).
    @usableFromInline static let tableSize = 65536

    /// For first moments and other signed state: `create_dynamic_map(signed=True)`.
    public static let signed = DynamicQuantizationMap(bits: signedBits, isSigned: true)
    /// For second moments: `create_dynamic_map(signed=False)`.
    public static let unsigned = DynamicQuantizationMap(bits: unsignedBits, isSigned: false)

    private init(bits: [UInt32], isSigned: Bool) {
        precondition(bits.count == 256)
        values = bits.map(Float.init(bitPattern:))
        self.isSigned = isSigned
        entries = .allocate(capacity: 256)
        entries.initialize(from: values, count: 256)
        // bitsandbytes' build_quantize_lut, in float32.
        // Three bytes beyond the last bin: the vector look-ups read 4 bytes at a bin (optim_lookup16).
        table = .allocate(capacity: Self.tableSize + 4)
        table.initialize(repeating: 0, count: Self.tableSize + 4)
        var midpoints = [Float](repeating: 0, count: 255)
        for i in 0..<255 { midpoints[i] = 0.5 * (values[i] + values[i + 1]) }
        var code = 0
        for i in 0..<Self.tableSize {
            let position: Float = -1 + (2 * Float(i)) / Float(Self.tableSize - 1)
            while code < 255 && midpoints[code] < position { code += 1 }
            table[i] = UInt8(code)
        }
        // S[c]: the first bin whose code is at least c (65536 when none); step s of the search
        // reads S[2s·k + s] for k < 128/s, at the row offsets optim_code_search16 uses.
        var first = [Int32](repeating: Int32(Self.tableSize), count: 256)
        var bin = 0
        for c in 1...255 {
            while bin < Self.tableSize && Int(table[bin]) < c { bin += 1 }
            first[c] = Int32(bin)
        }
        let rows = Int(OPTIM_CODE_SEARCH_ROWS)
        searchLevels = .allocate(capacity: 16 * rows)
        searchLevels.initialize(repeating: 0, count: 16 * rows)
        for (step, offset) in [(128, 0), (64, 16), (32, 32), (16, 48), (8, 64), (4, 80), (2, 112), (1, 176)] {
            for k in 0..<(128 / step) { searchLevels[offset + k] = first[2 * step * k + step] }
        }
    }

    /// The code of a value already divided by its block's absmax: bitsandbytes' lookup (see the
    /// type's documentation). NaN gives code 0, as bitsandbytes' does.
    @inlinable @inline(__always)
    public func code(normalized value: Float) -> UInt8 {
        guard !value.isNaN else { return table[0] }
        let clamped = min(max(value, -1), 1)
        let half = (clamped + 1) * 0.5
        let scaled = half * Float(Self.tableSize - 1)
        return table[Int(scaled + 0.5)]
    }

    /// The entry of `code` (multiply by the block's absmax to get the value).
    @inlinable @inline(__always)
    public func value(of code: UInt8) -> Float { entries[Int(code)] }

    private static let signedBits: [UInt32] = [
        0xBF7E3333, 0xBF7A999A, 0xBF770000, 0xBF736666, 0xBF6FCCCD, 0xBF6C3333, 0xBF68999A, 0xBF650000,
        0xBF616666, 0xBF5DCCCD, 0xBF5A3333, 0xBF56999A, 0xBF530000, 0xBF4F6666, 0xBF4BCCCD, 0xBF483333,
        0xBF44999A, 0xBF410000, 0xBF3D6666, 0xBF39CCCD, 0xBF363334, 0xBF32999A, 0xBF2F0000, 0xBF2B6666,
        0xBF27CCCD, 0xBF243334, 0xBF20999A, 0xBF1D0000, 0xBF196666, 0xBF15CCCD, 0xBF123334, 0xBF0E999A,
        0xBF0B0000, 0xBF076666, 0xBF03CCCC, 0xBF003333, 0xBEF93332, 0xBEF20000, 0xBEEACCCC, 0xBEE3999A,
        0xBEDC6666, 0xBED53333, 0xBECE0000, 0xBEC6CCCC, 0xBEBF999A, 0xBEB86666, 0xBEB13333, 0xBEAA0000,
        0xBEA2CCCC, 0xBE9B999A, 0xBE946666, 0xBE8D3334, 0xBE860000, 0xBE7D9999, 0xBE6F3333, 0xBE60CCCD,
        0xBE526666, 0xBE440000, 0xBE35999A, 0xBE273333, 0xBE18CCCD, 0xBE0A6666, 0xBDF80000, 0xBDDB3334,
        0xBDC9EB85, 0xBDC428F7, 0xBDBE6667, 0xBDB8A3D7, 0xBDB2E148, 0xBDAD1EB8, 0xBDA75C2A, 0xBDA1999A,
        0xBD9BD70A, 0xBD96147B, 0xBD9051EB, 0xBD8A8F5D, 0xBD84CCCD, 0xBD7E147B, 0xBD728F5D, 0xBD670A3D,
        0xBD5B851F, 0xBD500000, 0xBD447AE1, 0xBD38F5C3, 0xBD2D70A3, 0xBD21EB85, 0xBD166667, 0xBD0AE148,
        0xBCFEB852, 0xBCE7AE15, 0xBCD0A3D7, 0xBCB9999A, 0xBCA28F5D, 0xBC8B851F, 0xBC68F5C3, 0xBC3AE148,
        0xBC1F3B64, 0xBC160418, 0xBC0CCCCD, 0xBC039581, 0xBBF4BC6A, 0xBBE24DD3, 0xBBCFDF3B, 0xBBBD70A4,
        0xBBAB020D, 0xBB989374, 0xBB8624DD, 0xBB676C8A, 0xBB428F5C, 0xBB1DB22D, 0xBAF1A9FC, 0xBAA7EF9D,
        0xBA7765FF, 0xBA59E83E, 0xBA3C6A80, 0xBA1EECC1, 0xBA016F01, 0xB9C7E283, 0xB98CE705, 0xB923D70B,
        0xB8BA1F4B, 0xB88AEFB3, 0xB8378034, 0xB7B24206, 0xB70205FF, 0xB65A1A94, 0xB513A3B7, 0x00000000,
        0x3513A3B7, 0x365A1A94, 0x370205FF, 0x37B24206, 0x38378034, 0x388AEFB3, 0x38BA1F4B, 0x3923D70B,
        0x398CE705, 0x39C7E283, 0x3A016F01, 0x3A1EECC1, 0x3A3C6A80, 0x3A59E83E, 0x3A7765FF, 0x3AA7EF9D,
        0x3AF1A9FC, 0x3B1DB22D, 0x3B428F5C, 0x3B676C8A, 0x3B8624DD, 0x3B989374, 0x3BAB020D, 0x3BBD70A4,
        0x3BCFDF3B, 0x3BE24DD3, 0x3BF4BC6A, 0x3C039581, 0x3C0CCCCD, 0x3C160418, 0x3C1F3B64, 0x3C3AE148,
        0x3C68F5C3, 0x3C8B851F, 0x3CA28F5D, 0x3CB9999A, 0x3CD0A3D7, 0x3CE7AE15, 0x3CFEB852, 0x3D0AE148,
        0x3D166667, 0x3D21EB85, 0x3D2D70A3, 0x3D38F5C3, 0x3D447AE1, 0x3D500000, 0x3D5B851F, 0x3D670A3D,
        0x3D728F5D, 0x3D7E147B, 0x3D84CCCD, 0x3D8A8F5D, 0x3D9051EB, 0x3D96147B, 0x3D9BD70A, 0x3DA1999A,
        0x3DA75C2A, 0x3DAD1EB8, 0x3DB2E148, 0x3DB8A3D7, 0x3DBE6667, 0x3DC428F7, 0x3DC9EB85, 0x3DDB3334,
        0x3DF80000, 0x3E0A6666, 0x3E18CCCD, 0x3E273333, 0x3E35999A, 0x3E440000, 0x3E526666, 0x3E60CCCD,
        0x3E6F3333, 0x3E7D9999, 0x3E860000, 0x3E8D3334, 0x3E946666, 0x3E9B999A, 0x3EA2CCCC, 0x3EAA0000,
        0x3EB13333, 0x3EB86666, 0x3EBF999A, 0x3EC6CCCC, 0x3ECE0000, 0x3ED53333, 0x3EDC6666, 0x3EE3999A,
        0x3EEACCCC, 0x3EF20000, 0x3EF93332, 0x3F003333, 0x3F03CCCC, 0x3F076666, 0x3F0B0000, 0x3F0E999A,
        0x3F123334, 0x3F15CCCD, 0x3F196666, 0x3F1D0000, 0x3F20999A, 0x3F243334, 0x3F27CCCD, 0x3F2B6666,
        0x3F2F0000, 0x3F32999A, 0x3F363334, 0x3F39CCCD, 0x3F3D6666, 0x3F410000, 0x3F44999A, 0x3F483333,
        0x3F4BCCCD, 0x3F4F6666, 0x3F530000, 0x3F56999A, 0x3F5A3333, 0x3F5DCCCD, 0x3F616666, 0x3F650000,
        0x3F68999A, 0x3F6C3333, 0x3F6FCCCD, 0x3F736666, 0x3F770000, 0x3F7A999A, 0x3F7E3333, 0x3F800000
    ]

    private static let unsignedBits: [UInt32] = [
        0x00000000, 0x34AE7BAA, 0x35500998, 0x360E9B38, 0x3692CCF6, 0x36DE4C51, 0x3714E5D5, 0x3783126E,
        0x37E171A0, 0x381FE868, 0x384F1800, 0x387E479A, 0x3896BB99, 0x38AE5364, 0x38C5EB31, 0x3906594B,
        0x394154CA, 0x397C5049, 0x399BA5E4, 0x39B923A2, 0x39D6A163, 0x39F41F22, 0x3A08CE71, 0x3A178D50,
        0x3A264C30, 0x3A350B10, 0x3A43C9EF, 0x3A5288D0, 0x3A6147AF, 0x3A70068E, 0x3A7EC56E, 0x3A958106,
        0x3ABA5E35, 0x3ADF3B64, 0x3B020C4A, 0x3B147AE1, 0x3B26E978, 0x3B395810, 0x3B4BC6A7, 0x3B5E3540,
        0x3B70A3D7, 0x3B818937, 0x3B8AC082, 0x3B93F7CF, 0x3B9D2F1A, 0x3BA66666, 0x3BAF9DB2, 0x3BB8D4FD,
        0x3BC20C4A, 0x3BCB4395, 0x3BD47AE1, 0x3BDDB22E, 0x3BE6E978, 0x3BF020C5, 0x3BF9580F, 0x3C0147AE,
        0x3C05E354, 0x3C0A7EF9, 0x3C0F1AA0, 0x3C13B645, 0x3C1851EB, 0x3C1CED92, 0x3C218937, 0x3C2F5C2A,
        0x3C466667, 0x3C5D70A3, 0x3C747AE2, 0x3C85C28F, 0x3C9147AF, 0x3C9CCCCD, 0x3CA851EB, 0x3CB3D70B,
        0x3CBF5C29, 0x3CCAE147, 0x3CD66667, 0x3CE1EB87, 0x3CED70A3, 0x3CF8F5C3, 0x3D023D70, 0x3D080000,
        0x3D0DC28F, 0x3D13851F, 0x3D1947AF, 0x3D1F0A3D, 0x3D24CCCD, 0x3D2A8F5C, 0x3D3051EB, 0x3D36147B,
        0x3D3BD70A, 0x3D41999A, 0x3D475C28, 0x3D4D1EB8, 0x3D52E147, 0x3D58A3D7, 0x3D5E6667, 0x3D6428F7,
        0x3D69EB87, 0x3D6FAE15, 0x3D7570A3, 0x3D7B3333, 0x3D807AE2, 0x3D835C2A, 0x3D863D71, 0x3D891EB8,
        0x3D8C0000, 0x3D8EE148, 0x3D91C290, 0x3D94A3D7, 0x3D97851F, 0x3D9A6667, 0x3D9D47AF, 0x3DA028F6,
        0x3DA30A3E, 0x3DA5EB85, 0x3DA8CCCD, 0x3DABAE15, 0x3DAE8F5C, 0x3DB170A4, 0x3DB451EB, 0x3DB73333,
        0x3DBA147B, 0x3DBCF5C3, 0x3DBFD70B, 0x3DC2B852, 0x3DC5999A, 0x3DC87AE2, 0x3DCB5C29, 0x3DD40000,
        0x3DE26666, 0x3DF0CCCD, 0x3DFF3333, 0x3E06CCCC, 0x3E0E0000, 0x3E153334, 0x3E1C6666, 0x3E23999A,
        0x3E2ACCCC, 0x3E320000, 0x3E393334, 0x3E406666, 0x3E47999A, 0x3E4ECCCC, 0x3E560000, 0x3E5D3334,
        0x3E646666, 0x3E6B999A, 0x3E72CCCC, 0x3E7A0000, 0x3E809999, 0x3E843333, 0x3E87CCCD, 0x3E8B6666,
        0x3E8F0000, 0x3E92999A, 0x3E963333, 0x3E99CCCC, 0x3E9D6666, 0x3EA10000, 0x3EA4999A, 0x3EA83333,
        0x3EABCCCC, 0x3EAF6666, 0x3EB30000, 0x3EB6999A, 0x3EBA3333, 0x3EBDCCCC, 0x3EC16666, 0x3EC50000,
        0x3EC8999A, 0x3ECC3333, 0x3ECFCCCC, 0x3ED36666, 0x3ED70000, 0x3EDA999A, 0x3EDE3333, 0x3EE1CCCC,
        0x3EE56666, 0x3EE90000, 0x3EEC999A, 0x3EF03333, 0x3EF3CCCC, 0x3EF76666, 0x3EFB0000, 0x3EFE9999,
        0x3F01199A, 0x3F02E666, 0x3F04B333, 0x3F068000, 0x3F084CCC, 0x3F0A199A, 0x3F0BE666, 0x3F0DB334,
        0x3F0F8000, 0x3F114CCD, 0x3F13199A, 0x3F14E666, 0x3F16B334, 0x3F188000, 0x3F1A4CCD, 0x3F1C199A,
        0x3F1DE666, 0x3F1FB334, 0x3F218000, 0x3F234CCD, 0x3F25199A, 0x3F26E666, 0x3F28B334, 0x3F2A8000,
        0x3F2C4CCD, 0x3F2E199A, 0x3F2FE666, 0x3F31B334, 0x3F338000, 0x3F354CCD, 0x3F37199A, 0x3F38E666,
        0x3F3AB334, 0x3F3C8000, 0x3F3E4CCD, 0x3F40199A, 0x3F41E666, 0x3F43B334, 0x3F458000, 0x3F474CCC,
        0x3F49199A, 0x3F4AE666, 0x3F4CB334, 0x3F4E8000, 0x3F504CCC, 0x3F52199A, 0x3F53E666, 0x3F55B334,
        0x3F578000, 0x3F594CCC, 0x3F5B199A, 0x3F5CE666, 0x3F5EB334, 0x3F608000, 0x3F624CCC, 0x3F64199A,
        0x3F65E666, 0x3F67B334, 0x3F698000, 0x3F6B4CCC, 0x3F6D199A, 0x3F6EE666, 0x3F70B334, 0x3F728000,
        0x3F744CCC, 0x3F76199A, 0x3F77E666, 0x3F79B334, 0x3F7B8000, 0x3F7D4CCC, 0x3F7F199A, 0x3F800000
    ]
}

/// bitsandbytes' blockwise quantization of float32 values to 8-bit codes (`quantize_blockwise`
/// and `dequantize_blockwise` of its CPU backend, bitsandbytes 0.50.2; Dettmers et al., 2022,
/// arXiv:2110.02861, §2): the values are cut into blocks of ``blockSize`` (256), the last one
/// possibly shorter; each block keeps `absmax = max |x|` (NaN left out, 0 for an empty or all-zero
/// block) and each value the code of `x · (1/absmax)` in a ``DynamicQuantizationMap`` (all codes
/// 0 when absmax is 0). Dequantized, a value is `map[code] · absmax`, in float32.
public enum BlockwiseQuantization {
    /// Elements per block (bitsandbytes' 8-bit optimizers use 256).
    public static let blockSize = 256

    /// Blocks needed for `count` elements: ⌈count / 256⌉.
    @inlinable public static func blockCount(_ count: Int) -> Int { (count + blockSize - 1) / blockSize }

    /// Quantizes one block of `count` (≤ 256) values: writes the codes and returns the absmax.
    @inlinable @inline(__always)
    public static func quantizeBlock(_ values: UnsafePointer<Float>, count: Int, map: DynamicQuantizationMap,
                                     codes: UnsafeMutablePointer<UInt8>) -> Float {
        var absmax: Float = 0
        for i in 0..<count {
            let magnitude = abs(values[i])
            if magnitude > absmax { absmax = magnitude }  // NaN compares false: left out
        }
        if absmax == 0 {
            codes.update(repeating: 0, count: count)
            return 0
        }
        let inverse = 1 / absmax
        for i in 0..<count { codes[i] = map.code(normalized: values[i] * inverse) }
        return absmax
    }

    /// Quantizes `values` block by block into `codes` (same count) and `absmax`
    /// (``blockCount(_:)`` values).
    public static func quantize(_ values: UnsafeBufferPointer<Float>, map: DynamicQuantizationMap,
                                codes: UnsafeMutableBufferPointer<UInt8>, absmax: UnsafeMutableBufferPointer<Float>) {
        precondition(codes.count == values.count && absmax.count == blockCount(values.count))
        guard let source = values.baseAddress, let target = codes.baseAddress else { return }
        for block in 0..<absmax.count {
            let start = block * blockSize
            absmax[block] = quantizeBlock(source + start, count: min(blockSize, values.count - start), map: map, codes: target + start)
        }
    }

    /// Dequantizes `codes` with their blocks' `absmax` into `values`: `map[code] · absmax`.
    public static func dequantize(codes: UnsafeBufferPointer<UInt8>, absmax: UnsafeBufferPointer<Float>, map: DynamicQuantizationMap,
                                  into values: UnsafeMutableBufferPointer<Float>) {
        precondition(codes.count == values.count && absmax.count == blockCount(codes.count))
        for i in 0..<codes.count { values[i] = map.value(of: codes[i]) * absmax[i / blockSize] }
    }

    /// ``quantize(_:map:codes:absmax:)`` of an array.
    public static func quantize(_ values: [Float], map: DynamicQuantizationMap) -> (codes: [UInt8], absmax: [Float]) {
        var codes = [UInt8](repeating: 0, count: values.count), absmax = [Float](repeating: 0, count: blockCount(values.count))
        values.withUnsafeBufferPointer { source in
            codes.withUnsafeMutableBufferPointer { codes in
                absmax.withUnsafeMutableBufferPointer { absmax in quantize(source, map: map, codes: codes, absmax: absmax) }
            }
        }
        return (codes, absmax)
    }

    /// ``dequantize(codes:absmax:map:into:)`` of arrays.
    public static func dequantize(codes: [UInt8], absmax: [Float], map: DynamicQuantizationMap) -> [Float] {
        var values = [Float](repeating: 0, count: codes.count)
        codes.withUnsafeBufferPointer { codes in
            absmax.withUnsafeBufferPointer { absmax in
                values.withUnsafeMutableBufferPointer { dequantize(codes: codes, absmax: absmax, map: map, into: $0) }
            }
        }
        return values
    }
}

/// One vector of an update on 8-bit or 4-bit state (``StateDType/int8``, ``StateDType/int4``), for
/// ``BlockwiseQuantization/run(_:_:_:_:map0:map1:map2:collectingMetrics:)`` and
/// ``FourBitQuantization/run(_:_:_:_:map0:map1:map2:collectingMetrics:)``: given the dequantized
/// state of `lanes` elements at `index`, it updates the parameter, replaces the state vectors
/// with their new float32 values and returns what the metrics need. Implementations are
/// `@_transparent`, as ``VectorKernel``'s are, so that each kernel module compiles its own loop.
public protocol QuantizedVectorKernel {
    /// The per-step scalars the kernel reads (the rule's ``UpdateRule/Coefficients``).
    associatedtype Coefficients
    /// Updates one vector; `state0`, `state1` and `state2` hold the dequantized state on entry
    /// (zero for buffers a rule does not keep) and the updated state on return.
    static func apply(_ operands: KernelOperands, _ index: Int, _ lanes: Int, _ coefficients: Coefficients,
                      _ state0: inout FloatVector, _ state1: inout FloatVector, _ state2: inout FloatVector) -> UpdateLanes
}

extension BlockwiseQuantization {
    /// The entries of the codes of `lanes` (≤ 16) elements at `index` (zero in missing lanes).
    @_transparent
    public static func entries(_ map: DynamicQuantizationMap, _ codes: UnsafeMutablePointer<UInt8>, _ index: Int, _ lanes: Int) -> FloatVector {
        let table = map.entries
        if lanes == FloatVector.scalarCount { return optim_gather16(table, codes + index) }
        var result = FloatVector()
        for lane in 0..<lanes { result[lane] = table[Int(codes[index + lane])] }
        return result
    }

    /// Requantizes a block of `count` values whose absmax is `absmax`: the vector form of
    /// ``quantizeBlock(_:count:map:codes:)``'s second half, the same bits (`x·(1/absmax)`,
    /// NaN → −1, clamp to [−1, 1], bin `⌊((v + 1)·0.5)·65535 + 0.5⌋`), 16 values at a time by
    /// `optim_quantize16` (AVX2: gathers from the table; AVX-512: a binary search over the
    /// table's code boundaries by permutes, which a test checks against the table bin by bin).
    @_transparent
    public static func requantize(_ values: UnsafePointer<Float>, count: Int, absmax: Float, map: DynamicQuantizationMap,
                                  codes: UnsafeMutablePointer<UInt8>) {
        guard absmax != 0 else {
            codes.update(repeating: 0, count: count)
            return
        }
        let inverse = 1 / absmax, table = map.table, levels = map.searchLevels, width = FloatVector.scalarCount
        var i = 0
        while i + width <= count {
            optim_quantize16(table, levels, values + i, inverse, codes + i)
            i += width
        }
        while i < count {
            var v = values[i] * inverse
            if !(v >= -1) { v = -1 }  // below −1, and NaN
            if v > 1 { v = 1 }
            let bin = (v + 1) * 0.5 * Float(DynamicQuantizationMap.tableSize - 1) + 0.5
            codes[i] = table[Int(bin)]
            i += 1
        }
    }

    /// The update of elements `range` (whole blocks; the last possibly partial) of a parameter
    /// with 8-bit state, one fused pass per block: dequantize each vector (`map[code]·absmax`),
    /// update it with `Kernel`, keep the block's new float32 state in a 1 KB scratch per buffer
    /// and its absmax (NaN left out), then requantize the block. `map1` is nil for one state
    /// buffer, `map2` for fewer than three (AdEMAMix keeps three).
    /// Returns the metric sums when `collectingMetrics` (lane-wise over each block of 16
    /// vectors, then in Double, as ``Elementwise/runCollecting(_:_:_:_:)``).
    @_transparent
    public static func run<Kernel: QuantizedVectorKernel>(_ kernel: Kernel.Type, _ o: KernelOperands, _ range: Range<Int>,
                                                          _ coefficients: Kernel.Coefficients, map0: DynamicQuantizationMap,
                                                          map1: DynamicQuantizationMap?, map2: DynamicQuantizationMap? = nil,
                                                          collectingMetrics: Bool) -> MetricAccumulator {
        // One block's new state (1 KB a buffer) per call of a chunk of up to 2¹⁵ elements; allocated
        // here, not in a closure, which a kernel module would compile under Optim's symbol name.
        // The caller's scratch (the optimizer keeps one per thread), else our own.
        let owned = o.scratch == nil ? UnsafeMutablePointer<Float>.allocate(capacity: 3 * blockSize) : nil
        defer { owned?.deallocate() }
        let new0 = o.scratch ?? owned!
        var total = VectorSums()
        var start = range.lowerBound
        while start < range.upperBound {
            let count = min(blockSize, range.upperBound - start)
            // A whole block (every block but a tensor's last) with the vector width fixed, so
            // that the partial-vector branches fold away.
            if count == blockSize {
                block(Kernel.self, o, start, count, full: true, coefficients, map0: map0, map1: map1, map2: map2, scratch: new0,
                      collectingMetrics: collectingMetrics, total: &total)
            } else {
                block(Kernel.self, o, start, count, full: false, coefficients, map0: map0, map1: map1, map2: map2, scratch: new0,
                      collectingMetrics: collectingMetrics, total: &total)
            }
            start += count
        }
        return collectingMetrics ? total.accumulator : MetricAccumulator()
    }

    /// One block of ``run(_:_:_:_:map0:map1:map2:collectingMetrics:)``: `count` elements at `start`,
    /// every vector full when `full` (a compile-time constant at each call).
    @_transparent
    @usableFromInline
    static func block<Kernel: QuantizedVectorKernel>(_ kernel: Kernel.Type, _ o: KernelOperands, _ start: Int, _ count: Int, full: Bool,
                                                     _ coefficients: Kernel.Coefficients, map0: DynamicQuantizationMap,
                                                     map1: DynamicQuantizationMap?, map2: DynamicQuantizationMap?,
                                                     scratch new0: UnsafeMutablePointer<Float>,
                                                     collectingMetrics: Bool, total: inout VectorSums) {
        let width = FloatVector.scalarCount, new1 = new0 + blockSize, new2 = new1 + blockSize
        let codes0 = o.codes0!, codes1 = o.codes1, codes2 = o.codes2
        let lane = FloatVector(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        let block = start / blockSize
        let scale0 = o.state0[block], scale1 = map1 != nil ? o.state1[block] : 0, scale2 = map2 != nil ? o.state2[block] : 0
        var max0 = FloatVector(), max1 = FloatVector(), max2 = FloatVector(), sums = VectorSums()
        var j = 0
        while j < count {
            let lanes = full ? width : min(width, count - j), i = start + j
            var s0 = entries(map0, codes0, i, lanes) * scale0
            var s1 = FloatVector(), s2 = FloatVector()
            if let map1 { s1 = entries(map1, codes1!, i, lanes) * scale1 }
            if let map2 { s2 = entries(map2, codes2!, i, lanes) * scale2 }
            var result = Kernel.apply(o, i, lanes, coefficients, &s0, &s1, &s2)
            if !full && lanes < width {
                // Padding lanes hold what the arithmetic made of zeros: leave them out.
                let padding = lane .>= FloatVector(repeating: Float(lanes))
                s0.replace(with: 0, where: padding)
                s1.replace(with: 0, where: padding)
                s2.replace(with: 0, where: padding)
                result.before.replace(with: 0, where: padding)
                result.after.replace(with: 0, where: padding)
                result.gradient.replace(with: 0, where: padding)
                result.moment.replace(with: 0, where: padding)
            }
            Elementwise.store(s0, new0, j, lanes)
            let magnitude0 = Elementwise.absolute(s0)
            max0.replace(with: magnitude0, where: magnitude0 .> max0)  // NaN compares false
            if map1 != nil {
                Elementwise.store(s1, new1, j, lanes)
                let magnitude1 = Elementwise.absolute(s1)
                max1.replace(with: magnitude1, where: magnitude1 .> max1)
            }
            if map2 != nil {
                Elementwise.store(s2, new2, j, lanes)
                let magnitude2 = Elementwise.absolute(s2)
                max2.replace(with: magnitude2, where: magnitude2 .> max2)
            }
            if collectingMetrics { sums.add(result) }
            j += width
        }
        let absmax0 = optim_reduce_max16(max0)
        o.state0[block] = absmax0
        requantize(new0, count: count, absmax: absmax0, map: map0, codes: codes0 + start)
        if let map1 {
            let absmax1 = optim_reduce_max16(max1)
            o.state1[block] = absmax1
            requantize(new1, count: count, absmax: absmax1, map: map1, codes: codes1! + start)
        }
        if let map2 {
            let absmax2 = optim_reduce_max16(max2)
            o.state2[block] = absmax2
            requantize(new2, count: count, absmax: absmax2, map: map2, codes: codes2! + start)
        }
        if collectingMetrics { total.add(sums) }
    }
}

extension BlockwiseQuantization {
    /// The update of elements `range` of a parameter with 8-bit state for a rule whose 8-bit form
    /// has no arithmetic of its own in bitsandbytes: the rule's float32 ``VectorKernel`` runs
    /// unchanged, block by block, on its state dequantized into a 1 KB scratch per buffer
    /// (`map[code]·absmax`), and the new state is requantized as bitsandbytes does (the block's
    /// absmax, NaN left out, then ``requantize(_:count:absmax:map:codes:)``). The result is the
    /// reference optimizer's step on the dequantized state, followed by bitsandbytes'
    /// quantization of the state it leaves: the same bits as the float32 kernel on those values.
    /// Up to two quantized buffers (`map1` nil for one); returns the metric sums when
    /// `collectingMetrics`.
    @_transparent
    public static func runFloatKernel<Kernel: VectorKernel>(_ kernel: Kernel.Type, _ o: KernelOperands, _ range: Range<Int>,
                                                            _ coefficients: Kernel.Coefficients, map0: DynamicQuantizationMap,
                                                            map1: DynamicQuantizationMap?, collectingMetrics: Bool) -> MetricAccumulator {
        let owned = o.scratch == nil ? UnsafeMutablePointer<Float>.allocate(capacity: 2 * blockSize) : nil
        defer { owned?.deallocate() }
        let scratch = o.scratch ?? owned!
        let codes0 = o.codes0!, codes1 = o.codes1
        var total = MetricAccumulator()
        var start = range.lowerBound
        while start < range.upperBound {
            let count = min(blockSize, range.upperBound - start), block = start / blockSize
            // The block's state, dequantized; the rule's kernel sees the block as its tensor.
            var operands = o
            operands.parameter = o.parameter + start
            operands.gradient = o.gradient + start
            operands.count = count
            operands.codes0 = nil
            operands.codes1 = nil
            operands.codes2 = nil
            operands.state0 = scratch
            operands.state1 = scratch + blockSize
            dequantizeBlock(map0, codes0 + start, scale: o.state0[block], count: count, into: scratch)
            if let map1 { dequantizeBlock(map1, codes1! + start, scale: o.state1[block], count: count, into: scratch + blockSize) }
            if collectingMetrics {
                total = total + Elementwise.runCollecting(Kernel.self, operands, 0..<count, coefficients)
            } else {
                Elementwise.run(Kernel.self, operands, 0..<count, coefficients)
            }
            o.state0[block] = requantizeBlock(scratch, count: count, map: map0, codes: codes0 + start)
            if let map1 { o.state1[block] = requantizeBlock(scratch + blockSize, count: count, map: map1, codes: codes1! + start) }
            start += count
        }
        return total
    }

    /// `count` values of a block, `map[code]·scale`, into `target`.
    @_transparent
    public static func dequantizeBlock(_ map: DynamicQuantizationMap, _ codes: UnsafeMutablePointer<UInt8>, scale: Float, count: Int,
                                       into target: UnsafeMutablePointer<Float>) {
        let width = FloatVector.scalarCount
        var j = 0
        while j < count {
            let lanes = min(width, count - j)
            Elementwise.store(entries(map, codes, j, lanes) * scale, target, j, lanes)
            j += width
        }
    }

    /// Quantizes `count` values of a block into `codes` and returns the block's absmax (NaN left out).
    @_transparent
    public static func requantizeBlock(_ values: UnsafeMutablePointer<Float>, count: Int, map: DynamicQuantizationMap,
                                       codes: UnsafeMutablePointer<UInt8>) -> Float {
        let width = FloatVector.scalarCount
        var largest = FloatVector()
        var j = 0
        while j < count {
            let magnitude = Elementwise.absolute(Elementwise.load(values, j, min(width, count - j)))
            largest.replace(with: magnitude, where: magnitude .> largest)  // NaN compares false
            j += width
        }
        let absmax = optim_reduce_max16(largest)
        requantize(values, count: count, absmax: absmax, map: map, codes: codes)
        return absmax
    }
}
