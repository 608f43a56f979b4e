import COptimSIMD

/// A 16-entry map of torchao's 4-bit optimizer state (torchao 0.18, `torchao.optim.subclass_4bit`;
/// Li et al., 2023, "Memory Efficient Optimizers with 4-bit States", arXiv:2309.01507).
///
/// - ``signed``: `create_dynamic_map(signed=True, max_exponent_bits=3, total_bits=4)` of
///   `torchao.optim.quant_utils` (bitsandbytes' dynamic map without its zero padding): ±0.0055 …
///   ±0.8875, 0 and 1.
/// - ``unsigned``: `linspace(0, 1, 17)[1:]`, the linear map 1/16 … 1 without zero, for second
///   moments.
///
/// Its ``values`` are torchao's float32 values bit for bit (checked against
/// `Tests/Fixtures/lowbit/torchao-4bit-quantization.json`, which torchao wrote).
public final class FourBitMap: @unchecked Sendable {
    /// The 16 entries, ascending.
    public let values: [Float]
    /// Whether it is the signed map or the unsigned one.
    public let isSigned: Bool
    /// The entries as an immortal buffer the kernels read without checks.
    @usableFromInline let entries: UnsafeMutablePointer<Float>

    /// For first moments: torchao's `get_qmap_signed()`.
    public static let signed = FourBitMap(bits: [
        0xBF63_3333, 0xBF29_999A, 0xBEE0_0000, 0xBE59_9999, 0xBD9E_B852, 0xBD05_1EB9, 0xBBB4_3958, 0x0000_0000,
        0x3BB4_3958, 0x3D05_1EB9, 0x3D9E_B852, 0x3E59_9999, 0x3EE0_0000, 0x3F29_999A, 0x3F63_3333, 0x3F80_0000,
    ], isSigned: true)
    /// For second moments: torchao's `get_qmap_unsigned()`.
    public static let unsigned = FourBitMap(bits: (1...16).map { (Float($0) / 16).bitPattern }, isSigned: false)

    private init(bits: [UInt32], isSigned: Bool) {
        precondition(bits.count == 16)
        values = bits.map(Float.init(bitPattern:))
        self.isSigned = isSigned
        entries = .allocate(capacity: 16)
        entries.initialize(from: values, count: 16)
    }

    /// The entry of `code` (multiply by the block's scale to get the value).
    @inlinable @inline(__always)
    public func value(of code: UInt8) -> Float { entries[Int(code & 15)] }
}

/// torchao's blockwise 4-bit quantization (`OptimState4bit.copy_` and `dequantize`, torchao 0.18):
/// a buffer is cut into blocks of ``blockSize`` (128) elements; each block keeps the scale
/// `max(max |x|, 1e-12)` (NaN when the block holds one, as torch's `amax` propagates it) and each
/// value the code of `x / scale` in a ``FourBitMap`` by `quantize_4bit_with_qmap`: the largest `k`
/// with `x ≥ map[k]` (0 when none), then one up when `x − map[c] ≥ (map[c+1] − map[c])·0.5`. Two
/// codes a byte, the first element in the high nibble. Dequantized, a value is `map[code] · scale`.
///
/// Only buffers of a multiple of 128 elements are quantized (``StatePrecision/quantizes(count:)``).
public enum FourBitQuantization {
    /// Elements per block (torchao's `AdamW4bit` default `block_size`).
    public static let blockSize = 128
    /// The smallest scale (torchao's `clip(1e-12)`).
    public static let minimumScale: Float = 1e-12

    /// Quantizes one block of 128 values into 64 bytes of codes; returns its scale.
    @_transparent
    public static func quantizeBlock(_ values: UnsafePointer<Float>, map: FourBitMap, codes: UnsafeMutablePointer<UInt8>) -> Float {
        var largest = FloatVector(), nan = SIMDMask<SIMD16<Int32>>()
        var i = 0
        while i < blockSize {
            let v = Elementwise.load(values, i, FloatVector.scalarCount), magnitude = Elementwise.absolute(v)
            largest.replace(with: magnitude, where: magnitude .> largest)
            nan = nan .| (v .!= v)
            i += FloatVector.scalarCount
        }
        let scale = scale(absmax: optim_reduce_max16(largest), hasNaN: any(nan))
        encode(values, count: blockSize, scale: scale, map: map, codes: codes)
        return scale
    }

    /// A block's scale from its largest magnitude: torchao's `amax(-1).clip(1e-12)`.
    @_transparent
    public static func scale(absmax: Float, hasNaN: Bool) -> Float {
        hasNaN ? .nan : max(absmax, minimumScale)
    }

    /// The packed codes of `count` (a multiple of 16) values divided by `scale`.
    @_transparent
    public static func encode(_ values: UnsafePointer<Float>, count: Int, scale: Float, map: FourBitMap, codes: UnsafeMutablePointer<UInt8>) {
        var i = 0
        while i < count {
            optim_int4_encode16(map.entries, values + i, scale, codes + i / 2)
            i += FloatVector.scalarCount
        }
    }

    /// Quantizes `values` (a multiple of 128) into packed `codes` (half as many bytes) and `scales`.
    public static func quantize(_ values: UnsafeBufferPointer<Float>, map: FourBitMap, codes: UnsafeMutableBufferPointer<UInt8>,
                                scales: UnsafeMutableBufferPointer<Float>) {
        precondition(values.count % blockSize == 0 && codes.count == values.count / 2 && scales.count == values.count / blockSize)
        guard let source = values.baseAddress, let target = codes.baseAddress else { return }
        for block in 0..<scales.count {
            scales[block] = quantizeBlock(source + block * blockSize, map: map, codes: target + block * blockSize / 2)
        }
    }

    /// Dequantizes packed `codes` with their blocks' `scales` into `values`: `map[code] · scale`.
    public static func dequantize(codes: UnsafeBufferPointer<UInt8>, scales: UnsafeBufferPointer<Float>, map: FourBitMap,
                                  into values: UnsafeMutableBufferPointer<Float>) {
        precondition(values.count % blockSize == 0 && codes.count == values.count / 2 && scales.count == values.count / blockSize)
        for i in 0..<values.count {
            let byte = codes[i / 2]
            values[i] = map.value(of: i % 2 == 0 ? byte >> 4 : byte & 15) * scales[i / blockSize]
        }
    }

    /// ``quantize(_:map:codes:scales:)`` of an array.
    public static func quantize(_ values: [Float], map: FourBitMap) -> (codes: [UInt8], scales: [Float]) {
        var codes = [UInt8](repeating: 0, count: values.count / 2), scales = [Float](repeating: 0, count: values.count / blockSize)
        values.withUnsafeBufferPointer { source in
            codes.withUnsafeMutableBufferPointer { codes in
                scales.withUnsafeMutableBufferPointer { scales in quantize(source, map: map, codes: codes, scales: scales) }
            }
        }
        return (codes, scales)
    }

    /// ``dequantize(codes:scales:map:into:)`` of arrays.
    public static func dequantize(codes: [UInt8], scales: [Float], map: FourBitMap) -> [Float] {
        var values = [Float](repeating: 0, count: codes.count * 2)
        codes.withUnsafeBufferPointer { codes in
            scales.withUnsafeBufferPointer { scales in
                values.withUnsafeMutableBufferPointer { dequantize(codes: codes, scales: scales, map: map, into: $0) }
            }
        }
        return values
    }

    /// The update of elements `range` (whole blocks of 128) of a parameter with 4-bit state, one
    /// fused pass per block: decode each vector (`map[code]·scale`), update it with `Kernel`, keep
    /// the block's new float32 state in a 512-byte scratch per buffer with its largest magnitude,
    /// then requantize the block (torchao takes the block's scale before it quantizes).
    /// `operands.codes0`/`codes1`/`codes2` hold the packed codes, `state0`/`state1`/`state2` the
    /// scales; `map1` and `map2` are nil for fewer state buffers. Returns the metric sums when
    /// `collectingMetrics`.
    @_transparent
    public static func run<Kernel: QuantizedVectorKernel>(_ kernel: Kernel.Type, _ o: KernelOperands, _ range: Range<Int>,
                                                          _ coefficients: Kernel.Coefficients, map0: FourBitMap,
                                                          map1: FourBitMap?, map2: FourBitMap?, collectingMetrics: Bool) -> MetricAccumulator {
        let owned = o.scratch == nil ? UnsafeMutablePointer<Float>.allocate(capacity: 3 * blockSize) : nil
        defer { owned?.deallocate() }
        let new0 = o.scratch ?? owned!
        let new1 = new0 + blockSize, new2 = new1 + blockSize, width = FloatVector.scalarCount
        let codes0 = o.codes0!, codes1 = o.codes1, codes2 = o.codes2
        var total = VectorSums()
        var start = range.lowerBound
        while start < range.upperBound {
            let block = start / blockSize
            let scale0 = o.state0[block], scale1 = map1 != nil ? o.state1[block] : 0, scale2 = map2 != nil ? o.state2[block] : 0
            var max0 = FloatVector(), max1 = FloatVector(), max2 = FloatVector(), sums = VectorSums()
            var nan0 = SIMDMask<SIMD16<Int32>>(), nan1 = SIMDMask<SIMD16<Int32>>(), nan2 = SIMDMask<SIMD16<Int32>>()
            var j = 0
            while j < blockSize {
                let i = start + j
                var s0 = optim_int4_decode16(map0.entries, codes0 + i / 2) * scale0
                var s1 = FloatVector(), s2 = FloatVector()
                if let map1 { s1 = optim_int4_decode16(map1.entries, codes1! + i / 2) * scale1 }
                if let map2 { s2 = optim_int4_decode16(map2.entries, codes2! + i / 2) * scale2 }
                let result = Kernel.apply(o, i, width, coefficients, &s0, &s1, &s2)
                Elementwise.store(s0, new0, j, width)
                let magnitude0 = Elementwise.absolute(s0)
                max0.replace(with: magnitude0, where: magnitude0 .> max0)
                nan0 = nan0 .| (s0 .!= s0)
                if map1 != nil {
                    Elementwise.store(s1, new1, j, width)
                    let magnitude1 = Elementwise.absolute(s1)
                    max1.replace(with: magnitude1, where: magnitude1 .> max1)
                    nan1 = nan1 .| (s1 .!= s1)
                }
                if map2 != nil {
                    Elementwise.store(s2, new2, j, width)
                    let magnitude2 = Elementwise.absolute(s2)
                    max2.replace(with: magnitude2, where: magnitude2 .> max2)
                    nan2 = nan2 .| (s2 .!= s2)
                }
                if collectingMetrics { sums.add(result) }
                j += width
            }
            let newScale0 = scale(absmax: optim_reduce_max16(max0), hasNaN: any(nan0))
            o.state0[block] = newScale0
            encode(new0, count: blockSize, scale: newScale0, map: map0, codes: codes0 + start / 2)
            if let map1 {
                let newScale1 = scale(absmax: optim_reduce_max16(max1), hasNaN: any(nan1))
                o.state1[block] = newScale1
                encode(new1, count: blockSize, scale: newScale1, map: map1, codes: codes1! + start / 2)
            }
            if let map2 {
                let newScale2 = scale(absmax: optim_reduce_max16(max2), hasNaN: any(nan2))
                o.state2[block] = newScale2
                encode(new2, count: blockSize, scale: newScale2, map: map2, codes: codes2! + start / 2)
            }
            if collectingMetrics { total.add(sums) }
            start += blockSize
        }
        return collectingMetrics ? total.accumulator : MetricAccumulator()
    }
}
