import Foundation
import Testing
@testable import Training

/// TensorBoard event files: the record framing and its checksums, decoded back here, and read by
/// TensorBoard's own event reader when Python has `tensorboard` (CI installs it).
@Suite struct TensorBoardTests {
    @Test func crc32CMatchesTheStandardCheckValue() {
        // The CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
        #expect(TensorBoardWriter.crc32C(Data("123456789".utf8)) == 0xE306_9283)
    }

    /// The records of an event file: (length check, data check) verified, events decoded to
    /// (step, [tag: value]); the first event is the file version.
    static func readEvents(_ url: URL) throws -> (version: String?, scalars: [(step: Int, values: [String: Float])]) {
        let data = try Data(contentsOf: url)
        var offset = 0, version: String?
        var scalars: [(Int, [String: Float])] = []
        func littleEndian<T: FixedWidthInteger>(_ type: T.Type, at position: Int) -> T {
            data[position..<(position + MemoryLayout<T>.size)].reversed().reduce(T(0)) { $0 << 8 | T($1) }
        }
        while offset < data.count {
            let length = Int(littleEndian(UInt64.self, at: offset))
            #expect(littleEndian(UInt32.self, at: offset + 8) == TensorBoardWriter.maskedCRC32C(data[offset..<(offset + 8)]))
            let event = data[(offset + 12)..<(offset + 12 + length)]
            #expect(littleEndian(UInt32.self, at: offset + 12 + length) == TensorBoardWriter.maskedCRC32C(Data(event)))
            offset += 16 + length
            var step = 0, values: [String: Float] = [:]
            try decode(Data(event)) { field, payload, varint in
                switch field {
                case 2: step = Int(varint)
                case 3: version = String(decoding: payload, as: UTF8.self)
                case 5:
                    try decode(payload) { _, value, _ in
                        var tag = "", number: Float = .nan
                        try decode(value) { field, bytes, fixed in
                            if field == 1 { tag = String(decoding: bytes, as: UTF8.self) }
                            if field == 2 { number = Float(bitPattern: UInt32(fixed)) }
                        }
                        values[tag] = number
                    }
                default: break
                }
            }
            if !values.isEmpty { scalars.append((step, values)) }
        }
        return (version, scalars)
    }

    /// A minimal protobuf reader: calls `body(field, bytes, number)` per field.
    static func decode(_ data: Data, _ body: (Int, Data, UInt64) throws -> Void) throws {
        let bytes = [UInt8](data)
        var index = 0
        func varint() -> UInt64 {
            var result: UInt64 = 0, shift: UInt64 = 0
            while true {
                let byte = bytes[index]
                index += 1
                result |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return result }
                shift += 7
            }
        }
        while index < bytes.count {
            let key = varint()
            let field = Int(key >> 3)
            switch key & 7 {
            case 0: try body(field, Data(), varint())
            case 1:
                let value = bytes[index..<(index + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                index += 8
                try body(field, Data(), value)
            case 2:
                let length = Int(varint())
                try body(field, Data(bytes[index..<(index + length)]), 0)
                index += length
            case 5:
                let value = bytes[index..<(index + 4)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                index += 4
                try body(field, Data(), value)
            default: throw CocoaError(.fileReadCorruptFile)
            }
        }
    }

    /// A short training run writing metrics.jsonl and TensorBoard events side by side.
    static func trainedRun() throws -> (folder: URL, events: URL, jsonl: [[String: Double]]) {
        let data = try digits()
        let folder = try temporaryFolder()
        let run = try RunFolder(folder.appendingPathComponent("run"))
        let writer = try TensorBoardWriter(directory: folder.appendingPathComponent("tb"))
        run.metricsWriter().tensorboard = writer
        let trainer = try Trainer(configuration: quickConfiguration(epochs: 2), train: data.train, test: data.test)
        _ = try trainer.run(recordingTo: run, checkpoint: run.checkpoint)
        let lines = try String(contentsOf: run.metrics, encoding: .utf8).split(separator: "\n")
        // Each line's numbers, the optimizer metrics (under "metrics") flattened beside the others.
        enum Entry: Decodable {
            case number(Double), metrics([String: Double])
            init(from decoder: Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let number = try? container.decode(Double.self) { self = .number(number) } else { self = .metrics(try container.decode([String: Double].self)) }
            }
        }
        let jsonl = try lines.map { line in
            var flat: [String: Double] = [:]
            for (key, entry) in try JSONDecoder().decode([String: Entry].self, from: Data(line.utf8)) {
                switch entry {
                case let .number(value): flat[key] = value
                case let .metrics(metrics): flat.merge(metrics) { $1 }
                }
            }
            return flat
        }
        return (folder, writer.url, jsonl)
    }

    @Test func eventsHoldEveryScalarOfMetricsJSONL() throws {
        let (folder, events, jsonl) = try Self.trainedRun()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (version, scalars) = try Self.readEvents(events)
        #expect(version == "brain.Event:2")
        #expect(scalars.count == jsonl.count && !jsonl.isEmpty)
        for (event, line) in zip(scalars, jsonl) {
            #expect(Double(event.step) == line["step"])
            let expected = line.filter { $0.key != "step" }.mapValues { Float($0) }
            #expect(event.values == expected)
        }
        #expect(jsonl.contains { $0.keys.contains { $0.hasPrefix("l2_norm/") } }, "the optimizer metrics are among the scalars")
    }

    /// `python3` on the PATH, through `env`.
    static func python(_ arguments: [String]) -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        return process
    }

    static let hasTensorBoard: Bool = {
        let process = python(["-c", "import tensorboard.backend.event_processing.event_accumulator"])
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }()

    @Test(.enabled(if: hasTensorBoard, "Python's tensorboard package is not installed (pip install tensorboard): TensorBoard's own reader is not run"))
    func tensorBoardsOwnReaderReadsTheSameScalars() throws {
        let (folder, events, jsonl) = try Self.trainedRun()
        defer { try? FileManager.default.removeItem(at: folder) }
        let script = """
        import json, sys
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
        acc.Reload()
        print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}))
        """
        let process = Self.python(["-c", script, events.deletingLastPathComponent().path])
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let read = try JSONSerialization.jsonObject(with: printed) as! [String: [[Double]]]
        var expected: [String: [[Double]]] = [:]
        for line in jsonl {
            for (tag, value) in line where tag != "step" { expected[tag, default: []].append([line["step"]!, Double(Float(value))]) }
        }
        #expect(Set(read.keys) == Set(expected.keys))
        // TensorBoard's values are float32 (simple_value); compare them as such.
        func asFloats(_ points: [[Double]]?) -> [[Float]]? { points?.map { $0.map { Float($0) } } }
        for (tag, points) in expected { #expect(asFloats(read[tag]) == asFloats(points), "\(tag)") }
    }
}
