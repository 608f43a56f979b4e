import Synchronization

/// Allocation of the library's own Float32 storage: 64-byte aligned (one cache line, one
/// AVX-512 vector) and counted, so memory reports come from what was really allocated.
public enum FloatStorage {
    /// Alignment of every buffer the library allocates, in bytes.
    public static let alignment = 64

    private static let liveBytesCounter = Atomic<Int>(0)

    private static let peakBytesCounter = Atomic<Int>(0)

    /// Bytes currently allocated by the library for parameters, gradients and optimizer state.
    public static var liveBytes: Int { liveBytesCounter.load(ordering: .relaxed) }

    /// The most ``liveBytes`` reached since the process started or ``resetPeakBytes()``.
    public static var peakBytes: Int { peakBytesCounter.load(ordering: .relaxed) }

    /// Starts ``peakBytes`` again from the bytes live now.
    public static func resetPeakBytes() { peakBytesCounter.store(liveBytes, ordering: .relaxed) }

    /// Allocates `count` Float32 elements, zero-filled.
    package static func allocate(_ count: Int) -> UnsafeMutableBufferPointer<Float> { zeroed(count) }

    /// Allocates and copies `source`.
    package static func allocate(copying source: UnsafeBufferPointer<Float>) -> UnsafeMutableBufferPointer<Float> {
        let buffer = allocate(source.count)
        if let base = source.baseAddress, source.count > 0 {
            buffer.baseAddress!.update(from: base, count: source.count)
        }
        return buffer
    }

    /// A zero-filled, 64-byte-aligned buffer of `count` bytes (the codes of 8-bit state),
    /// counted in ``liveBytes``.
    static func allocateBytes(_ count: Int) -> UnsafeMutableBufferPointer<UInt8> { zeroed(count) }

    /// A zero-filled, 64-byte-aligned buffer of `count` 16-bit words (bfloat16 state), counted
    /// in ``liveBytes``.
    static func allocateHalves(_ count: Int) -> UnsafeMutableBufferPointer<UInt16> { zeroed(count) }

    /// Frees a buffer of any of the allocators above and takes its bytes off ``liveBytes``.
    package static func deallocate<Element>(_ buffer: UnsafeMutableBufferPointer<Element>) {
        guard let base = buffer.baseAddress else { return }
        liveBytesCounter.subtract(max(buffer.count, 1) * MemoryLayout<Element>.stride, ordering: .relaxed)
        UnsafeMutableRawPointer(base).deallocate()
    }

    /// `count` zero-filled elements (room for one at least), 64-byte aligned, counted in ``liveBytes``.
    private static func zeroed<Element>(_ count: Int) -> UnsafeMutableBufferPointer<Element> {
        let capacity = max(count, 1), bytes = capacity * MemoryLayout<Element>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        let live = liveBytesCounter.add(bytes, ordering: .relaxed).newValue
        var peak = peakBytesCounter.load(ordering: .relaxed)
        while live > peak {
            let (exchanged, original) = peakBytesCounter.compareExchange(expected: peak, desired: live, ordering: .relaxed)
            if exchanged { break }
            peak = original
        }
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: Element.self, capacity: capacity), count: count)
    }
}
