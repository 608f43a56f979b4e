import Foundation
import Optim
import Safetensors
import Testing

/// Bad input, as a careless or hostile user gives it, against the built `optim`: a table of
/// command lines, each with the exit status, a fragment its one-line error must contain, and
/// the rule that nothing on disk changes (no file created, changed or removed under the test's
/// folder, which is also the working directory, so a stray `runs/` shows too).
@Suite(.serialized) struct BadInputTests {
    struct Outcome {
        var status: Int32
        var output: String
        var error: String
    }

    /// Runs `optim` in `directory`; with `signal`, sends it that signal once `after` appears on
    /// its standard output.
    static func optim(_ arguments: [String], in directory: URL, signal: Int32? = nil, after marker: String = "") throws -> Outcome {
        let process = Process()
        process.executableURL = try CheckpointProcessTests.optimExecutable()
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        nonisolated(unsafe) var errorData = Data()
        let reader = Thread { errorData = error.fileHandleForReading.readDataToEndOfFile() }
        reader.start()
        var outputData = Data()
        var signalled = false
        while true {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            outputData += chunk
            if let signal, !signalled, String(decoding: outputData, as: UTF8.self).contains(marker) {
                kill(process.processIdentifier, signal)
                signalled = true
            }
        }
        process.waitUntilExit()
        while !reader.isFinished { usleep(1000) }
        return Outcome(status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
                       error: String(decoding: errorData, as: UTF8.self))
    }

    /// `optim list --json`, which the benchmark scripts read, gives one parseable object per
    /// registry entry, in registry order (Prodigy's infinite growth_rate once made it fail half way).
    @Test func listJSONHasEveryOptimizer() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("list-json-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outcome = try Self.optim(["list", "--json"], in: directory)
        #expect(outcome.status == 0, "\(outcome.error)")
        let names = try outcome.output.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return object?["name"] as? String ?? ""
        }
        #expect(names == OptimizerRegistry.names)
    }

    /// Every file under `root` (hidden ones too) with its contents.
    static func snapshot(_ root: URL) -> [String: Data] {
        var files: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey, .isDirectoryKey])
        while let url = enumerator?.nextObject() as? URL {
            let path = String(url.path.dropFirst(root.path.count))
            let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .isDirectoryKey])
            if values?.isRegularFile == true {
                files[path] = (try? Data(contentsOf: url)) ?? Data("unreadable".utf8)
            } else {
                files[path] = Data((values?.isDirectory == true ? "folder" : "other").utf8)
            }
        }
        return files
    }

    /// The fixtures the table refers to: `$R` the test's folder, `run` a finished 2-epoch run,
    /// `compare` a finished compare, and files a user might point at by mistake.
    static func makeFixtures() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("optim-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("folder"), withIntermediateDirectories: true)
        try "1,0.5,0.25\n0,0.1\n".write(to: root.appendingPathComponent("ragged.csv"), atomically: true, encoding: .utf8)
        try "1,0.5\n0,0.25\n".write(to: root.appendingPathComponent("tiny.csv"), atomically: true, encoding: .utf8)
        try "".write(to: root.appendingPathComponent("empty.csv"), atomically: true, encoding: .utf8)
        try (0..<40).map { "\($0 % 2),1,2,3,4,\($0)" }.joined(separator: "\n").write(to: root.appendingPathComponent("five.csv"), atomically: true, encoding: .utf8)
        try Data([0, 0, 8, 3, 0, 0, 0, 9]).write(to: root.appendingPathComponent("images.idx"))
        try "not a checkpoint".write(to: root.appendingPathComponent("afile"), atomically: true, encoding: .utf8)
        #expect(mkfifo(root.appendingPathComponent("fifo").path, 0o644) == 0)
        let quick = ["--epochs", "2", "--hidden", "8", "--batch-size", "256", "--plain", "--threads", "2"]
        let run = try optim(["train", "--out", "run"] + quick, in: root)
        #expect(run.status == 0, "\(run.error)")
        let compare = try optim(["compare", "--optimizers", "sgd", "--epochs", "1", "--hidden", "8", "--batch-size", "256", "--out", "compare"], in: root)
        #expect(compare.status == 0, "\(compare.error)")
        // A checkpoint as written before run options were saved in it.
        let file = try SafetensorsFile(contentsOf: root.appendingPathComponent("run/checkpoint.safetensors"), mapping: false)
        let tensors = try file.tensors.map { TensorData(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: try file.bytes($0.name)) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("legacy"), withIntermediateDirectories: true)
        try SafetensorsFile.write(tensors, metadata: file.metadata.filter { $0.key != "optim/options" },
                                  to: root.appendingPathComponent("legacy/checkpoint.safetensors"))
        return root
    }

    struct Case: CustomStringConvertible {
        var arguments: [String]
        var mentions: String
        var status: Int32 = 1
        /// Whether the command may create files (only new ones, under a folder of its own).
        var writes = false
        var description: String { arguments.joined(separator: " ") }
    }

    static let checkpoint = "run/checkpoint.safetensors"
    static let quick = ["--hidden", "8", "--batch-size", "256", "--threads", "2", "--plain"]

    static let cases: [Case] = [
        // Numbers beyond what can be computed or allocated.
        Case(arguments: ["train", "--epochs", "9223372036854775807"], mentions: "--epochs 9223372036854775807"),
        Case(arguments: ["train", "--epochs", "99999999999"], mentions: "steps a run may take"),
        Case(arguments: ["train", "--batch-size", "9223372036854775807"], mentions: "--batch-size"),
        Case(arguments: ["train", "--batch-size", "5000"], mentions: "larger than the 1438 training examples"),
        Case(arguments: ["compare", "--epochs", "9223372036854775807", "--optimizers", "sgd"], mentions: "--epochs"),
        Case(arguments: ["compare", "--batch-size", "9223372036854775807", "--optimizers", "sgd"], mentions: "--batch-size"),
        Case(arguments: ["train", "--warmup", "9223372036854775807"], mentions: "--warmup"),
        Case(arguments: ["train", "--hidden", "65536,65536,65536"], mentions: "needs about"),
        Case(arguments: ["train", "--hidden", "99999999999999999999"], mentions: "--hidden"),
        Case(arguments: ["train", "--epochs", "1400000", "--batch-size", "1", "--log-every", "1"], mentions: "of records in memory"),
        Case(arguments: ["train", "--epochs", "1000000", "--metrics-every", "1"], mentions: "of records in memory"),
        Case(arguments: ["train", "--hidden", "0"], mentions: "--hidden"),
        Case(arguments: ["bench", "--params", "1000000000000"], mentions: "--params 1000000000000 with --tensors 1 needs about"),
        Case(arguments: ["bench", "--params", "-5"], mentions: "--params"),
        Case(arguments: ["bench", "--threads", "100000"], mentions: "--threads"),
        Case(arguments: ["bench", "--optimizer", "nosuch"], mentions: "nosuch"),
        Case(arguments: ["verify", "--threads", "0", "folder"], mentions: "--threads"),
        Case(arguments: ["train", "--threads", "0"], mentions: "--threads"),
        Case(arguments: ["train", "--threads", "100000"], mentions: "--threads"),
        // A negative number is the option's value (`--lr -1` as `--lr=-1`), not a flag.
        Case(arguments: ["train", "--lr", "-1"], mentions: "(lr) = -1"),
        Case(arguments: ["train", "--lr", "-1e-3"], mentions: "(lr) = -0.001"),
        Case(arguments: ["train", "--lr", "nan"], mentions: "lr"),
        Case(arguments: ["train", "--weight-decay", "-0.5"], mentions: "weight"),
        Case(arguments: ["train", "--betas", "-0.9,0.99"], mentions: "-0.9"),
        Case(arguments: ["train", "--clip", "-1"], mentions: "--clip"),
        Case(arguments: ["train", "--clip", "inf"], mentions: "--clip"),
        Case(arguments: ["train", "--test-fraction", "1.5"], mentions: "--test-fraction"),
        Case(arguments: ["train", "--test-fraction", "-0.2"], mentions: "--test-fraction"),
        Case(arguments: ["train", "--seed", "-1"], mentions: "--seed"),
        Case(arguments: ["train", "--epochs", "0"], mentions: "--epochs"),
        Case(arguments: ["train", "--epochs", "-3"], mentions: "--epochs"),
        Case(arguments: ["train", "--log-every", "0"], mentions: "log"),
        Case(arguments: ["train", "--checkpoint-every", "-1"], mentions: "--checkpoint-every"),
        Case(arguments: ["train", "--epochs", "1", "--stop-after-epoch", "2"], mentions: "--stop-after-epoch"),
        Case(arguments: ["train", "--stop-after-epoch", "0"], mentions: "--stop-after-epoch"),
        Case(arguments: ["train", "--epochs"], mentions: "--epochs"),
        Case(arguments: ["train", "--epochs", "many"], mentions: "many"),
        Case(arguments: ["train", "--nosuch"], mentions: "--nosuch"),
        Case(arguments: ["nosuch"], mentions: "nosuch"),
        Case(arguments: ["train", "--optimizer", "nosuch"], mentions: "nosuch"),
        Case(arguments: ["train", "--schedule", "sideways"], mentions: "sideways"),
        Case(arguments: ["train", "--activation", "tanh"], mentions: "tanh"),
        Case(arguments: ["train", "-H", "nesterov"], mentions: "name=value"),
        Case(arguments: ["compare", "--optimizers", "sgd,sgd"], mentions: "twice"),
        Case(arguments: ["compare", "--optimizers", "sgd,,lion"], mentions: "--optimizers"),
        // Run folders: an existing run is never overwritten.
        Case(arguments: ["train", "--out", "run"] + quick, mentions: "already holds a run"),
        Case(arguments: ["train", "--out", "afile"] + quick, mentions: "not a folder"),
        Case(arguments: ["train", "--out", "afile/run"] + quick, mentions: "afile is a file, not a folder"),
        Case(arguments: ["train", "--out", "run", "--resume", "compare/sgd/checkpoint.safetensors", "--epochs", "2"], mentions: "already holds a run"),
        Case(arguments: ["train", "--resume", "compare/sgd/checkpoint.safetensors", "--epochs", "2", "--optimizer", "adamw"], mentions: "--optimizer adamw contradicts the checkpoint's sgd"),
        Case(arguments: ["train", "--out", "compare/sgd", "--resume", checkpoint, "--epochs", "3"] + quick, mentions: "already holds a run"),
        Case(arguments: ["compare", "--out", "compare", "--optimizers", "sgd", "--epochs", "1", "--hidden", "8"], mentions: "already holds"),
        Case(arguments: ["compare", "--out", "afile", "--optimizers", "sgd"], mentions: "not a folder"),
        // Resume: the checkpoint's options are restored; a contradiction is refused, naming both values.
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--lr", "0.5"], mentions: "--lr 0.5 contradicts the checkpoint's lr 0.0005"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--weight-decay", "0.3"], mentions: "--weight-decay 0.3 contradicts the checkpoint's weight_decay 1e-05"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "-H", "decoupled=false"], mentions: "-H decoupled"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--batch-size", "64"], mentions: "--batch-size 64 contradicts the checkpoint's 256"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--seed", "3"], mentions: "--seed 3 contradicts the checkpoint's 0"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--activation", "gelu"], mentions: "--activation gelu contradicts the checkpoint's relu"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--hidden", "16"], mentions: "--hidden 16 contradicts the checkpoint's 8"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--optimizer", "adamw"], mentions: "--optimizer adamw contradicts"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--schedule", "linear"], mentions: "--schedule linear contradicts"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--warmup", "2"], mentions: "--warmup 2 contradicts"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--test-fraction", "0.3"], mentions: "--test-fraction 0.3 contradicts"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--data", "five.csv"], mentions: "--data"),
        Case(arguments: ["train", "--resume", "legacy/checkpoint.safetensors", "--epochs", "3", "--hidden", "8", "--batch-size", "256", "--lr", "0.1"], mentions: "--lr cannot apply"),
        Case(arguments: ["train", "--resume", checkpoint], mentions: "nothing is left to train"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "2"], mentions: "nothing is left to train"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "1"], mentions: "past the"),
        Case(arguments: ["train", "--resume", checkpoint, "--epochs", "3", "--stop-after-epoch", "2"], mentions: "nothing is left to train"),
        Case(arguments: ["train", "--resume", "missing.safetensors"], mentions: "missing.safetensors: no such file"),
        Case(arguments: ["train", "--resume", "folder"], mentions: "folder: it is a folder"),
        Case(arguments: ["train", "--resume", "fifo"], mentions: "FIFO"),
        Case(arguments: ["train", "--resume", "/dev/null"], mentions: "device"),
        Case(arguments: ["train", "--resume", "afile"], mentions: "--resume afile"),
        Case(arguments: ["train", "--resume", "ragged.csv"], mentions: "--resume ragged.csv"),
        // Data: unreadable, malformed or too small.
        Case(arguments: ["train", "--data", "ragged.csv"], mentions: "ragged.csv"),
        Case(arguments: ["train", "--data", "missing.csv"], mentions: "missing.csv: no such file"),
        Case(arguments: ["train", "--data", "folder"], mentions: "it is a folder"),
        Case(arguments: ["train", "--data", "fifo"], mentions: "FIFO"),
        Case(arguments: ["train", "--data", "/dev/zero"], mentions: "device"),
        Case(arguments: ["train", "--data", "empty.csv"], mentions: "empty"),
        Case(arguments: ["train", "--data", "tiny.csv"], mentions: "to test on"),
        Case(arguments: ["train", "--data", "five.csv", "--test-fraction", "0.01"], mentions: "to test on"),
        Case(arguments: ["train", "--labels", "images.idx"], mentions: "--labels needs --data"),
        Case(arguments: ["train", "--data", "five.csv", "--label-column", "middle"], mentions: "--label-column"),
        Case(arguments: ["train", "--data", "images.idx", "--labels", "images.idx"], mentions: "images.idx"),
        Case(arguments: ["train", "--data", "images.idx", "--labels", "fifo"], mentions: "FIFO"),
        // Other commands' files.
        Case(arguments: ["inspect", "folder"], mentions: "it is a folder"),
        Case(arguments: ["inspect", "fifo"], mentions: "FIFO"),
        Case(arguments: ["inspect", "missing.safetensors"], mentions: "no such file"),
        Case(arguments: ["inspect", "ragged.csv"], mentions: "ragged.csv"),
        // A run that diverges stops with an error and writes no checkpoint of NaNs.
        Case(arguments: ["train", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3", "--out", "diverged"] + quick, mentions: "training diverged", writes: true),
    ]

    @Test func everyBadInputGetsOneLineStatusOneAndChangesNothing() throws {
        let root = try Self.makeFixtures()
        defer { try? FileManager.default.removeItem(at: root) }
        for testCase in Self.cases {
            let before = Self.snapshot(root)
            let outcome = try Self.optim(testCase.arguments, in: root)
            #expect(outcome.status == testCase.status, "\(testCase): status \(outcome.status), \(outcome.error)")
            #expect(outcome.error.split(separator: "\n").count == 1, "\(testCase): \(outcome.error)")
            #expect(outcome.error.contains(testCase.mentions), "\(testCase): \(outcome.error)")
            #expect(!outcome.error.contains("Error Domain") && !outcome.error.contains("Fatal error"), "\(testCase): \(outcome.error)")
            let after = Self.snapshot(root)
            for (path, digest) in before { #expect(after[path] == digest, "\(testCase): \(path) changed or removed") }
            let created = after.keys.filter { before[$0] == nil }
            #expect(testCase.writes || created.isEmpty, "\(testCase): created \(created.sorted())")
        }
        // The diverged run kept its steps, wrote no checkpoint of NaNs, and a summary that says so.
        let diverged = root.appendingPathComponent("diverged")
        #expect(!FileManager.default.fileExists(atPath: diverged.appendingPathComponent("checkpoint.safetensors").path))
        let summary = try String(contentsOf: diverged.appendingPathComponent("summary.json"), encoding: .utf8)
        #expect(summary.contains("\"status\" : \"diverged\"") && !summary.contains("NaN"), "\(summary)")
        if let text = try? String(contentsOf: diverged.appendingPathComponent("metrics.jsonl"), encoding: .utf8) {
            #expect(!text.lowercased().contains("nan"))
        }
    }
}
