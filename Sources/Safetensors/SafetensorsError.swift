/// A malformed or unreadable safetensors file: what is wrong, and where.
public enum SafetensorsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the format needs (the 8-byte length, or the header it announces).
    case truncated(String)
    /// The announced header is larger than the cap.
    case headerTooLarge(length: UInt64, limit: Int)
    /// The header is not valid JSON (with the byte offset in the header).
    case invalidJSON(offset: Int, reason: String)
    /// The header is valid JSON but not what the format allows.
    case invalidHeader(String)
    /// A tensor entry is wrong: which tensor, and why.
    case invalidTensor(name: String, reason: String)
    /// Two entries with the same name.
    case duplicateName(String)
    /// The data offsets leave bytes unused, overlap, or do not cover the data section.
    case invalidLayout(String)
    /// A tensor name that the file does not hold.
    case missingTensor(String)
    /// A tensor asked for as a type it cannot be read as.
    case unsupportedConversion(name: String, dtype: String)
    /// An I/O failure.
    case io(String)

    /// A one-line message: what is wrong with the file, and where.
    public var description: String {
        switch self {
        case let .truncated(what): return "truncated file: \(what)"
        case let .headerTooLarge(length, limit): return "header length \(length) exceeds the limit of \(limit) bytes"
        case let .invalidJSON(offset, reason): return "header is not valid JSON at byte \(offset): \(reason)"
        case let .invalidHeader(reason): return "invalid header: \(reason)"
        case let .invalidTensor(name, reason): return "tensor '\(name)': \(reason)"
        case let .duplicateName(name): return "tensor '\(name)' appears twice in the header"
        case let .invalidLayout(reason): return "invalid data layout: \(reason)"
        case let .missingTensor(name): return "no tensor named '\(name)'"
        case let .unsupportedConversion(name, dtype): return "tensor '\(name)' has dtype \(dtype), which cannot be read as Float32"
        case let .io(reason): return reason
        }
    }
}
