import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes TensorBoard event files: every scalar of every training record (loss, accuracy,
/// learning rate, test loss and accuracy, gradient norm, every optimizer metric — the keys of
/// `metrics.jsonl`) under its `metrics.jsonl` name, at the record's step.
///
/// The file is TensorFlow's record format — each record `length (u64) · masked CRC-32C of the
/// length (u32) · data · masked CRC-32C of the data (u32)` — holding `tensorflow.Event` protocol
/// buffers: a first event with `file_version` "brain.Event:2", then one event per record with
/// `wall_time`, `step` and a `Summary` of `simple_value`s. The few fields are encoded here by hand
/// (field numbers from TensorFlow's `event.proto` and `summary.proto`), so no protobuf runtime is
/// needed. Values are float32, as `simple_value` is.
public final class TensorBoardWriter {
    /// The event file written.
    public let url: URL
    private let handle: FileHandle

    /// Creates `directory` if needed and a new event file in it,
    /// `events.out.tfevents.<seconds>.<host>.<pid>`.
    public init(directory: URL) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw TrainingError.file("cannot create the TensorBoard folder \(directory.path): \(error.localizedDescription)")
        }
        let host = ProcessInfo.processInfo.hostName.replacingOccurrences(of: "/", with: "_")
        let now = Date().timeIntervalSince1970
        url = directory.appendingPathComponent("events.out.tfevents.\(Int(now)).\(host).\(getpid())")
        guard FileManager.default.createFile(atPath: url.path, contents: nil), let handle = try? FileHandle(forWritingTo: url) else {
            throw TrainingError.file("cannot create the TensorBoard event file \(url.path)")
        }
        self.handle = handle
        try append(Self.event(wallTime: now, step: 0, fileVersion: "brain.Event:2"))
    }

    deinit { try? handle.close() }

    /// Writes one record's scalars, named as in `metrics.jsonl`, at its step.
    public func write(_ record: TrainingRecord, wallTime: Double = Date().timeIntervalSince1970) throws {
        var scalars: [(String, Double)] = [("epoch", Double(record.epoch)), ("seconds", record.seconds), ("lr", record.learningRate),
                                           ("loss", record.loss), ("accuracy", record.accuracy)]
        if let value = record.testLoss { scalars.append(("test_loss", value)) }
        if let value = record.testAccuracy { scalars.append(("test_accuracy", value)) }
        if let value = record.gradientNorm { scalars.append(("grad_norm", value)) }
        for (name, value) in (record.metrics ?? [:]).sorted(by: { $0.key < $1.key }) { scalars.append((name, value)) }
        try write(step: record.step, scalars: scalars, wallTime: wallTime)
    }

    /// Writes scalars at `step`.
    public func write(step: Int, scalars: [(String, Double)], wallTime: Double = Date().timeIntervalSince1970) throws {
        var summary = Data()
        for (tag, value) in scalars {
            var entry = Data()
            Self.appendBytes(&entry, field: 1, Data(tag.utf8))          // Summary.Value.tag
            Self.appendKey(&entry, field: 2, wireType: 5)                // Summary.Value.simple_value (float)
            Self.appendLittleEndian(&entry, Float(value).bitPattern)
            Self.appendBytes(&summary, field: 1, entry)                   // Summary.value
        }
        try append(Self.event(wallTime: wallTime, step: step, summary: summary))
    }

    /// Flushes the file to disk.
    public func flush() throws {
        do { try handle.synchronize() } catch {
            throw TrainingError.file("cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    private func append(_ event: Data) throws {
        var record = Data()
        var length = Data()
        Self.appendLittleEndian(&length, UInt64(event.count))
        record.append(length)
        Self.appendLittleEndian(&record, Self.maskedCRC32C(length))
        record.append(event)
        Self.appendLittleEndian(&record, Self.maskedCRC32C(event))
        do { try handle.write(contentsOf: record) } catch {
            throw TrainingError.file("cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    // MARK: the encoding

    /// A `tensorflow.Event`: wall_time (1, double), step (2, int64), file_version (3, string) or
    /// summary (5, Summary).
    static func event(wallTime: Double, step: Int, fileVersion: String? = nil, summary: Data? = nil) -> Data {
        var data = Data()
        appendKey(&data, field: 1, wireType: 1)
        appendLittleEndian(&data, wallTime.bitPattern)
        appendKey(&data, field: 2, wireType: 0)
        appendVarint(&data, UInt64(bitPattern: Int64(step)))
        if let fileVersion { appendBytes(&data, field: 3, Data(fileVersion.utf8)) }
        if let summary { appendBytes(&data, field: 5, summary) }
        return data
    }

    static func appendKey(_ data: inout Data, field: Int, wireType: Int) { appendVarint(&data, UInt64(field << 3 | wireType)) }

    static func appendVarint(_ data: inout Data, _ value: UInt64) {
        var value = value
        while value >= 0x80 {
            data.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        data.append(UInt8(value))
    }

    static func appendBytes(_ data: inout Data, field: Int, _ bytes: Data) {
        appendKey(&data, field: field, wireType: 2)
        appendVarint(&data, UInt64(bytes.count))
        data.append(bytes)
    }

    static func appendLittleEndian<T: FixedWidthInteger>(_ data: inout Data, _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) }
    }

    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord checksums use.
    static let crcTable: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func crc32C(_ data: Data) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }

    /// TFRecord's masking of a CRC: rotate right by 15 bits and add a constant.
    static func maskedCRC32C(_ data: Data) -> UInt32 {
        let crc = crc32C(data)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}
