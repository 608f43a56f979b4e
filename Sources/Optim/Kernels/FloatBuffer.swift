import Synchronization

/// Allocation of the library's own Float32 storage: 64-byte aligned (one cache line, one
/// AVX-512 vector) and counted, so memory reports come from what was really allocated.
public enum FloatStorage {
    /// Alignment of every buffer the library allocates, in bytes.
    public static let alignment = 64

    private static let liveBytesCounter = Atomic<Int>(0)

    /// Bytes currently allocated by the library for parameters, gradients and optimizer state.
    public static var liveBytes: Int { liveBytesCounter.load(ordering: .relaxed) }

    /// Allocates `count` Float32 elements, zero-filled.
    package static func allocate(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        liveBytesCounter.add(bytes, ordering: .relaxed)
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: Float.self, capacity: max(count, 1)), count: count)
    }

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
    static func allocateBytes(_ count: Int) -> UnsafeMutableBufferPointer<UInt8> {
        let bytes = max(count, 1)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        liveBytesCounter.add(bytes, ordering: .relaxed)
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: UInt8.self, capacity: bytes), count: count)
    }

    /// A zero-filled, 64-byte-aligned buffer of `count` 16-bit words (bfloat16 state), counted
    /// in ``liveBytes``.
    static func allocateHalves(_ count: Int) -> UnsafeMutableBufferPointer<UInt16> {
        let bytes = max(count, 1) * 2
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        liveBytesCounter.add(bytes, ordering: .relaxed)
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: UInt16.self, capacity: max(count, 1)), count: count)
    }

    static func deallocate(_ buffer: UnsafeMutableBufferPointer<UInt16>) {
        guard let base = buffer.baseAddress else { return }
        liveBytesCounter.subtract(max(buffer.count, 1) * 2, ordering: .relaxed)
        UnsafeMutableRawPointer(base).deallocate()
    }

    static func deallocate(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        guard let base = buffer.baseAddress else { return }
        liveBytesCounter.subtract(max(buffer.count, 1), ordering: .relaxed)
        UnsafeMutableRawPointer(base).deallocate()
    }

    package static func deallocate(_ buffer: UnsafeMutableBufferPointer<Float>) {
        guard let base = buffer.baseAddress else { return }
        liveBytesCounter.subtract(max(buffer.count, 1) * MemoryLayout<Float>.stride, ordering: .relaxed)
        UnsafeMutableRawPointer(base).deallocate()
    }
}
