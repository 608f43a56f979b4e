import Foundation
import Safetensors
import Testing

enum Corpus {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/safetensors")
    static let malformed: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("malformed").path)) ?? [])
        .filter { $0.hasSuffix(".safetensors") }.sorted()
}

@Suite struct SafetensorsTests {
    @Test func corpusHasThirtyOrMoreMalformedFiles() { #expect(Corpus.malformed.count >= 30) }

    @Test(arguments: Corpus.malformed)
    func malformedFileIsRefused(file: String) throws {
        let url = Corpus.root.appendingPathComponent("malformed").appendingPathComponent(file)
        for mapping in [true, false] {
            do {
                let parsed = try SafetensorsFile(contentsOf: url, mapping: mapping)
                Issue.record("\(file) was accepted: \(parsed.tensors)")
            } catch {
                #expect(!error.description.isEmpty)
            }
        }
    }

    @Test func specificErrorsNameTheProblem() throws {
        func refuse(_ file: String) -> String {
            do {
                _ = try SafetensorsFile(contentsOf: Corpus.root.appendingPathComponent("malformed").appendingPathComponent(file))
                return "accepted"
            } catch { return error.description }
        }
        #expect(refuse(Corpus.malformed.first { $0.contains("duplicate-name") }!).contains("'a' appears twice"))
        #expect(refuse(Corpus.malformed.first { $0.contains("overlapping") }!).contains("overlaps"))
        #expect(refuse(Corpus.malformed.first { $0.contains("-hole") }!).contains("belong to no tensor"))
        #expect(refuse(Corpus.malformed.first { $0.contains("lying-size") }!).contains("needs 12 bytes"))
        #expect(refuse(Corpus.malformed.first { $0.contains("huge-header-length") }!).contains("exceeds the limit"))
        #expect(refuse(Corpus.malformed.first { $0.contains("not-brace-start") }!).contains("begin with '{'"))
        #expect(refuse(Corpus.malformed.first { $0.contains("unknown-dtype") }!).contains("unknown dtype"))
    }

    struct Expected: Decodable {
        struct Tensor: Decodable { var dtype: String; var shape: [Int]; var values: [Double] }
        var metadata: [String: String]
        var tensors: [String: Tensor]
    }

    @Test func filesWrittenByPythonLoad() throws {
        let folder = Corpus.root.appendingPathComponent("valid")
        let expected = try JSONDecoder().decode([String: Expected].self, from: Data(contentsOf: folder.appendingPathComponent("expected.json")))
        #expect(expected.count == 2)
        let dtypes = ["float32": DType.F32, "float16": .F16, "float64": .F64, "int64": .I64]
        for (file, want) in expected {
            let loaded = try SafetensorsFile(contentsOf: folder.appendingPathComponent(file))
            #expect(loaded.metadata == want.metadata)
            #expect(Set(loaded.tensors.map(\.name)) == Set(want.tensors.keys))
            for (name, tensor) in want.tensors {
                let info = try loaded.info(name)
                #expect(info.dtype == dtypes[tensor.dtype], "\(file) \(name)")
                #expect(info.shape == tensor.shape, "\(file) \(name)")
                if info.dtype == .I64 {
                    let bytes = try loaded.bytes(name)
                    let values = (0..<info.elementCount).map { index in bytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: index * 8, as: Int64.self)) } }
                    #expect(values.map(Double.init) == tensor.values)
                } else {
                    #expect(try loaded.floats(name) == tensor.values.map(Float.init), "\(file) \(name)")
                }
            }
        }
    }

    @Test func roundTripAndAlignment() throws {
        let tensors = [TensorData(name: "w", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]),
                       TensorData(name: "état/μ", shape: [], floats: [-0.5]),
                       TensorData(name: "ints", dtype: .I32, shape: [2], bytes: Data([1, 0, 0, 0, 2, 0, 0, 0]))]
        let data = try SafetensorsFile.encode(tensors, metadata: ["format": "test/1", "quote": "a \"b\"\n"])
        let headerLength = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        #expect((8 + headerLength) % 8 == 0)
        let parsed = try SafetensorsFile(data: data)
        #expect(parsed.metadata == ["format": "test/1", "quote": "a \"b\"\n"])
        #expect(try parsed.floats("w") == [1, 2, 3, 4, 5, 6])
        #expect(try parsed.floats("état/μ") == [-0.5])
        #expect(try parsed.info("état/μ").shape == [])
        #expect(throws: SafetensorsError.unsupportedConversion(name: "ints", dtype: "I32")) { try parsed.floats("ints") }
        #expect(throws: SafetensorsError.missingTensor("x")) { try parsed.floats("x") }
        #expect(throws: SafetensorsError.duplicateName("w")) { try SafetensorsFile.encode([tensors[0], tensors[0]]) }
        #expect(throws: SafetensorsError.self) { try SafetensorsFile.encode([TensorData(name: "w", shape: [3], floats: [1, 2])]) }
    }

    @Test func atomicWriteReplacesTheFileAndLeavesNoTemporary() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("state.safetensors")
        try SafetensorsFile.write([TensorData(name: "a", shape: [1], floats: [1])], to: url)
        try SafetensorsFile.write([TensorData(name: "a", shape: [2], floats: [2, 3])], to: url)
        #expect(try SafetensorsFile(contentsOf: url).floats("a") == [2, 3])
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["state.safetensors"])
        #expect(throws: SafetensorsError.self) {
            try SafetensorsFile.write([TensorData(name: "a", shape: [1], floats: [1])], to: folder.appendingPathComponent("missing/x.safetensors"))
        }
    }

    /// Python's reference reader loads what we write, with our values. Runs where python3 with
    /// safetensors and numpy is installed (.ci/run installs them); elsewhere it is skipped, visibly.
    static let python: String? = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import safetensors.numpy, numpy"]
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        process.waitUntilExit()
        return process.terminationStatus == 0 ? "python3" : nil
    }()

    @Test(.enabled(if: python != nil, "python3 with safetensors and numpy is not installed: interop with the reference reader not checked"))
    func pythonReadsWhatWeWrite() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-py-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("ours.safetensors")
        let values: [Float] = [1.5, -2.25, 3.0e-8, 1e30, 0, -0.0]
        try SafetensorsFile.write([TensorData(name: "w", shape: [2, 3], floats: values), TensorData(name: "s", shape: [], floats: [7])],
                                  metadata: ["k": "v"], to: url)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", """
            import json, sys
            from safetensors.numpy import load_file
            from safetensors import safe_open
            t = load_file(sys.argv[1])
            with safe_open(sys.argv[1], "np") as f: meta = f.metadata()
            print(json.dumps({"w": t["w"].tolist(), "wshape": list(t["w"].shape), "s": float(t["s"]), "sshape": list(t["s"].shape), "meta": meta}))
            """, url.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let object = try JSONSerialization.jsonObject(with: output) as! [String: Any]
        #expect((object["w"] as! [[Double]]).joined().map(Float.init) == values)
        #expect(object["wshape"] as! [Int] == [2, 3])
        #expect(object["s"] as! Double == 7 && (object["sshape"] as! [Int]).isEmpty)
        #expect(object["meta"] as! [String: String] == ["k": "v"])
    }
}
