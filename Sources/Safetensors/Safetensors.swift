import Foundation

/// The element types of safetensors, with their byte sizes.
public enum DType: String, Sendable, CaseIterable {
    /// The header's type names: floats (`BF16` is bfloat16), signed and unsigned integers by bit
    /// width, and booleans.
    case F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL

    /// The bytes one element takes: 8, 4, 2 or 1 (`BOOL` is one byte).
    public var byteCount: Int {
        switch self {
        case .F64, .I64, .U64: return 8
        case .F32, .I32, .U32: return 4
        case .F16, .BF16, .I16, .U16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }
}

/// One tensor of a file: its name, type, shape and byte range in the data section.
public struct TensorInfo: Sendable, Equatable {
    /// The tensor's name in the header.
    public var name: String
    /// The element type.
    public var dtype: DType
    /// The dimensions, outermost first; `[]` for a scalar.
    public var shape: [Int]
    /// Byte range within the data section (after the header).
    public var dataRange: Range<Int>

    /// The number of elements.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A tensor to write: name, type, shape and its raw little-endian bytes.
public struct TensorData: Sendable {
    /// The tensor's name in the header.
    public var name: String
    /// The element type.
    public var dtype: DType
    /// The dimensions, outermost first; `[]` for a scalar.
    public var shape: [Int]
    /// The raw little-endian bytes: the element count times ``DType/byteCount``.
    public var bytes: Data

    /// A tensor of `dtype` and `shape` from its raw little-endian `bytes`.
    public init(name: String, dtype: DType, shape: [Int], bytes: Data) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// A Float32 tensor.
    public init(name: String, shape: [Int], floats: [Float]) {
        self.init(name: name, dtype: .F32, shape: shape, bytes: floats.withUnsafeBufferPointer { Data(buffer: $0) })
    }
}

/// A safetensors file (https://github.com/huggingface/safetensors, "Format"): an 8-byte
/// little-endian header length N, N bytes of JSON header (beginning with `{`, possibly padded
/// with spaces), then the data section. The header maps each tensor name to its `dtype`,
/// `shape` and `data_offsets` `[begin, end)` relative to the data section, plus an optional
/// `__metadata__` map of strings to strings.
///
/// Reading checks everything the format promises — bounded header, valid JSON, known dtypes,
/// shapes whose byte size matches the offsets, offsets in bounds that tile the data section
/// with no holes or overlaps, no duplicate names — and throws ``SafetensorsError`` for the
/// first violation. Nothing is allocated from an unchecked size taken from the file.
public struct SafetensorsFile: Sendable {
    /// The largest header accepted, as the reference implementation: 100 MB.
    public static let maximumHeaderLength = 100_000_000

    /// Tensors in data order.
    public let tensors: [TensorInfo]
    /// The `__metadata__` map.
    public let metadata: [String: String]
    /// The whole file (mapped from disk when read with `mapping`).
    private let contents: Data
    private let dataStart: Int

    /// Parses a file's bytes.
    public init(data: Data) throws(SafetensorsError) {
        contents = data
        let parsed = data.withUnsafeBytes { bytes in Result { () throws(SafetensorsError) in try Self.parse(bytes) } }
        (tensors, metadata, dataStart) = try parsed.get()
    }

    /// Reads a file; with `mapping`, the file is memory-mapped instead of copied.
    public init(contentsOf url: URL, mapping: Bool = true) throws(SafetensorsError) {
        let data: Data
        do { data = try Data(contentsOf: url, options: mapping ? .alwaysMapped : []) } catch {
            throw .io("cannot read \(url.path): \(error.localizedDescription)")
        }
        try self.init(data: data)
    }

    /// The entry named `name`.
    public func info(_ name: String) throws(SafetensorsError) -> TensorInfo {
        guard let info = tensors.first(where: { $0.name == name }) else { throw .missingTensor(name) }
        return info
    }

    /// A tensor's raw bytes.
    public func bytes(_ name: String) throws(SafetensorsError) -> Data {
        let info = try info(name)
        return contents.subdata(in: (dataStart + info.dataRange.lowerBound)..<(dataStart + info.dataRange.upperBound))
    }

    /// A tensor's values as Float32 (F32 as is; F16, BF16 and F64 converted).
    public func floats(_ name: String) throws(SafetensorsError) -> [Float] {
        let info = try info(name)
        let count = info.elementCount
        let start = dataStart + info.dataRange.lowerBound
        let values = contents.withUnsafeBytes { raw -> [Float]? in
            let bytes = UnsafeRawBufferPointer(rebasing: raw[start..<(start + info.dataRange.count)])
            switch info.dtype {
            case .F32: return (0..<count).map { Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            case .F64: return (0..<count).map { Float(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)))) }
            case .BF16: return (0..<count).map { Float(bitPattern: UInt32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) << 16) }
            case .F16: return (0..<count).map { Float(Float16(bitPattern: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))) }
            default: return nil
            }
        }
        guard let values else { throw .unsupportedConversion(name: name, dtype: info.dtype.rawValue) }
        return values
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) throws(SafetensorsError) -> (tensors: [TensorInfo], metadata: [String: String], dataStart: Int) {
        guard bytes.count >= 8 else { throw .truncated("\(bytes.count) bytes; the header length alone takes 8") }
        let length = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard length <= UInt64(maximumHeaderLength) else { throw .headerTooLarge(length: length, limit: maximumHeaderLength) }
        let headerLength = Int(length)
        guard bytes.count - 8 >= headerLength else {
            throw .truncated("the header announces \(headerLength) bytes but only \(bytes.count - 8) follow")
        }
        let header = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)])
        guard headerLength > 0, header[0] == UInt8(ascii: "{") else { throw .invalidHeader("it must begin with '{'") }
        guard case let .object(members) = try HeaderJSON.parse(header) else { throw .invalidHeader("it must be a JSON object") }
        let dataLength = bytes.count - 8 - headerLength

        var tensors: [TensorInfo] = []
        var metadata: [String: String] = [:]
        var names = Set<String>()
        for (name, value) in members {
            guard names.insert(name).inserted else { throw .duplicateName(name) }
            if name == "__metadata__" {
                guard case let .object(entries) = value else { throw .invalidHeader("__metadata__ must be an object of strings") }
                for (key, item) in entries {
                    guard case let .string(text) = item else { throw .invalidHeader("__metadata__ value '\(key)' must be a string") }
                    guard metadata[key] == nil else { throw .invalidHeader("__metadata__ key '\(key)' appears twice") }
                    metadata[key] = text
                }
                continue
            }
            tensors.append(try tensor(name, value, dataLength: dataLength))
        }
        tensors.sort { ($0.dataRange.lowerBound, $0.dataRange.upperBound) < ($1.dataRange.lowerBound, $1.dataRange.upperBound) }
        var position = 0
        for info in tensors {
            if info.dataRange.lowerBound > position {
                throw .invalidLayout("bytes \(position)..<\(info.dataRange.lowerBound) belong to no tensor (before '\(info.name)')")
            }
            if info.dataRange.lowerBound < position {
                throw .invalidLayout("'\(info.name)' overlaps the previous tensor at byte \(info.dataRange.lowerBound)")
            }
            position = info.dataRange.upperBound
        }
        guard position == dataLength else {
            throw .invalidLayout("tensors cover \(position) bytes but the data section holds \(dataLength)")
        }
        return (tensors, metadata, 8 + headerLength)
    }

    static func tensor(_ name: String, _ value: HeaderJSON, dataLength: Int) throws(SafetensorsError) -> TensorInfo {
        guard case let .object(fields) = value else { throw .invalidTensor(name: name, reason: "entry must be an object") }
        var dtype: DType?, shape: [Int]?, offsets: [Int]?
        for (key, field) in fields {
            switch key {
            case "dtype":
                guard case let .string(text) = field, let parsed = DType(rawValue: text) else {
                    throw .invalidTensor(name: name, reason: "unknown dtype \(field.brief()); expected one of \(DType.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                dtype = parsed
            case "shape": shape = try integers(field, name: name, field: "shape")
            case "data_offsets": offsets = try integers(field, name: name, field: "data_offsets")
            default: throw .invalidTensor(name: name, reason: "unknown field '\(key)'")
            }
        }
        guard let dtype else { throw .invalidTensor(name: name, reason: "missing dtype") }
        guard let shape else { throw .invalidTensor(name: name, reason: "missing shape") }
        guard let offsets else { throw .invalidTensor(name: name, reason: "missing data_offsets") }
        guard offsets.count == 2 else { throw .invalidTensor(name: name, reason: "data_offsets must hold two integers") }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else { throw .invalidTensor(name: name, reason: "data_offsets [\(begin), \(end)] end before they begin") }
        guard end <= dataLength else {
            throw .invalidTensor(name: name, reason: "data_offsets end at \(end), past the data section's \(dataLength) bytes")
        }
        var bytes = dtype.byteCount
        for dimension in shape {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw .invalidTensor(name: name, reason: "shape \(brief(shape)) is too large") }
            bytes = product
        }
        guard bytes == end - begin else {
            throw .invalidTensor(name: name, reason: "shape \(brief(shape)) of \(dtype.rawValue) needs \(bytes) bytes but data_offsets span \(end - begin)")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
    }

    static func integers(_ value: HeaderJSON, name: String, field: String) throws(SafetensorsError) -> [Int] {
        guard case let .array(items) = value else {
            throw .invalidTensor(name: name, reason: "\(field) must be an array of integers, got \(value.brief())")
        }
        var result: [Int] = []
        for item in items {
            // "-0" is refused too, as the reference reader does (it reads it as the float -0.0).
            guard case let .number(text) = item, !text.hasPrefix("-"), let number = Int(text) else {
                throw .invalidTensor(name: name, reason: "\(field) must hold non-negative integers, got \(item.brief())")
            }
            result.append(number)
        }
        return result
    }

    /// A shape for an error message: all of it when short, else its start and its length.
    static func brief(_ shape: [Int]) -> String {
        shape.count <= 8 ? "\(shape)" : "[" + shape.prefix(8).map(String.init).joined(separator: ", ") + ", …] (\(shape.count) dimensions)"
    }

    /// Encodes tensors (in the given order) and metadata as a safetensors file; the header is
    /// padded with spaces so the data section starts 8-byte aligned.
    public static func encode(_ tensors: [TensorData], metadata: [String: String] = [:]) throws(SafetensorsError) -> Data {
        var names = Set<String>()
        var entries: [String] = []
        if !metadata.isEmpty {
            let items = metadata.sorted { $0.key < $1.key }.map { "\(HeaderJSON.quote($0.key)):\(HeaderJSON.quote($0.value))" }
            entries.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var offset = 0
        for tensor in tensors {
            guard tensor.name != "__metadata__", names.insert(tensor.name).inserted else { throw .duplicateName(tensor.name) }
            var expected = tensor.dtype.byteCount
            for dimension in tensor.shape {
                let (product, overflow) = expected.multipliedReportingOverflow(by: dimension)
                guard dimension >= 0, !overflow else { throw .invalidTensor(name: tensor.name, reason: "invalid shape \(tensor.shape)") }
                expected = product
            }
            guard expected == tensor.bytes.count else {
                throw .invalidTensor(name: tensor.name, reason: "shape \(tensor.shape) of \(tensor.dtype.rawValue) needs \(expected) bytes, got \(tensor.bytes.count)")
            }
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            entries.append("\(HeaderJSON.quote(tensor.name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + expected)]}")
            offset += expected
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while (8 + header.count) % 8 != 0 { header.append(UInt8(ascii: " ")) }
        var data = Data(capacity: 8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header)
        for tensor in tensors { data.append(tensor.bytes) }
        return data
    }
}
