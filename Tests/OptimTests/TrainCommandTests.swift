import Foundation
import Safetensors
import Testing

/// `optim train` and `optim compare` as a user runs them: the run folder they write, and one-line
/// errors with a non-zero status for bad input.
@Suite(.serialized) struct TrainCommandTests {
    struct Outcome {
        var status: Int32
        var output: String
        var error: String
    }

    static func optim(_ arguments: [String]) throws -> Outcome {
        let process = Process()
        process.executableURL = try CheckpointProcessTests.optimExecutable()
        process.arguments = arguments
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        // Read both pipes to the end before waiting, so a full pipe cannot block the child.
        nonisolated(unsafe) var errorData = Data()
        let reader = Thread { errorData = error.fileHandleForReading.readDataToEndOfFile() }
        reader.start()
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !reader.isFinished { usleep(1000) }
        return Outcome(status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
                       error: String(decoding: errorData, as: UTF8.self))
    }

    static func folder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test func trainWritesTheRunFolderAndResumes() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        let quick = ["--hidden", "32", "--batch-size", "64", "--lr", "1e-2", "--metrics-every", "10", "--plain", "--threads", "2"]
        let outcome = try Self.optim(["train", "--epochs", "2", "--out", run.path] + quick)
        #expect(outcome.status == 0, "\(outcome.error)")
        #expect(outcome.output.contains("epoch 2/2"))
        #expect(outcome.output.contains("test accuracy"))
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("summary.json"))) as? [String: Any])
        #expect(summary["optimizer"] as? String == "decoupled_lionw")
        let accuracy = try #require(summary["test_accuracy"] as? Double)
        #expect(accuracy > 0.8 && accuracy <= 1)
        for key in ["final_train_loss", "steps", "seconds", "steps_per_second", "hyperparameters", "state_bytes_per_parameter"] {
            #expect(summary[key] != nil, "summary.json lacks \(key)")
        }
        #expect(summary["steps"] as? Int == 2 * 23)
        let lines = try String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count >= 4)
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(object["loss"] is Double && object["lr"] is Double && object["step"] is Int)
        }
        #expect(lines.contains { $0.contains("\"l2_norm/update/layers.0.weight\"") })
        for chart in ["loss.svg", "accuracy.svg"] {
            let svg = try String(contentsOf: run.appendingPathComponent(chart), encoding: .utf8)
            #expect(svg.hasPrefix("<svg") && svg.contains("<polyline"), "\(chart)")
        }
        let checkpoint = try SafetensorsFile(contentsOf: run.appendingPathComponent("checkpoint.safetensors"))
        #expect(checkpoint.tensors.map(\.name).contains("layers.0.weight"))

        // The same seed and threads give the same checkpoint, byte for byte.
        let again = root.appendingPathComponent("again")
        #expect(try Self.optim(["train", "--epochs", "2", "--out", again.path] + quick).status == 0)
        #expect(try Data(contentsOf: again.appendingPathComponent("checkpoint.safetensors")) == Data(contentsOf: run.appendingPathComponent("checkpoint.safetensors")))

        // A run stopped after its last checkpoint but before its summary: resuming finishes it,
        // with the test accuracy and final train loss the uninterrupted run reported.
        try FileManager.default.removeItem(at: again.appendingPathComponent("summary.json"))
        let finish = try Self.optim(["train", "--resume", again.appendingPathComponent("checkpoint.safetensors").path])
        #expect(finish.status == 0, "\(finish.error)")
        #expect(finish.output.contains("finishing it"))
        let finished = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: again.appendingPathComponent("summary.json"))) as? [String: Any])
        #expect(finished["status"] as? String == "completed")
        #expect(finished["steps"] as? Int == 0 && finished["start_step"] as? Int == 46)
        #expect(finished["test_accuracy"] as? Double == summary["test_accuracy"] as? Double)
        #expect(finished["final_train_loss"] as? Double == summary["final_train_loss"] as? Double)
        // Once finished, there is nothing left to do.
        let twice = try Self.optim(["train", "--resume", again.appendingPathComponent("checkpoint.safetensors").path])
        #expect(twice.status == 1 && twice.error.contains("nothing is left to train"), "\(twice.error)")

        // Resume for a third epoch.
        let resumed = root.appendingPathComponent("resumed")
        let third = try Self.optim(["train", "--epochs", "3", "--out", resumed.path, "--resume", run.appendingPathComponent("checkpoint.safetensors").path] + quick)
        #expect(third.status == 0, "\(third.error)")
        #expect(third.output.contains("resumed at step 46"))
        let resumedSummary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: resumed.appendingPathComponent("summary.json"))) as? [String: Any])
        #expect(resumedSummary["start_step"] as? Int == 46 && resumedSummary["steps"] as? Int == 23)
    }

    @Test func compareWritesAReportWithEveryOptimizer() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let outcome = try Self.optim(["compare", "--epochs", "1", "--hidden", "16", "--optimizers", "sgd,lion,lookahead", "--out", root.path])
        #expect(outcome.status == 0, "\(outcome.error)")
        let html = try String(contentsOf: root.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(html.components(separatedBy: "<svg").count - 1 == 4)
        for name in ["sgd", "lion", "lookahead(adamw)"] { #expect(html.contains("<td>\(name)</td>"), "\(name) missing from the table") }
        // State bytes per parameter as measured from the buffers held: Lion's one float32 buffer.
        #expect(html.contains(">4.00</td>"), "no 4.00 state bytes per parameter in the table")
        for name in ["sgd", "lion", "lookahead"] {
            #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent(name).appendingPathComponent("summary.json").path))
        }
    }

    /// Bad input: one line on standard error naming the problem, status 1, nothing written.
    @Test func trainWithInt8StateCheckpointsCodesAndResumes() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        // --hidden 128: layers.0.weight has 64 × 128 = 8192 elements, over min_8bit_size (4096).
        let quick = ["--optimizer", "adamw", "--state-dtype", "int8", "--hidden", "128", "--batch-size", "128", "--lr", "3e-3", "--plain", "--threads", "2"]
        let outcome = try Self.optim(["train", "--epochs", "1", "--out", run.path] + quick)
        #expect(outcome.status == 0, "\(outcome.error)")
        let checkpoint = try SafetensorsFile(contentsOf: run.appendingPathComponent("checkpoint.safetensors"))
        #expect(try checkpoint.info("state/layers.0.weight/exp_avg.codes").dtype == .U8)
        #expect(try checkpoint.info("state/layers.0.weight/exp_avg_sq.absmax").dtype == .F32)
        #expect(try checkpoint.info("state/layers.0.bias/exp_avg").dtype == .F32)  // 128 elements: float32
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("summary.json"))) as? [String: Any])
        let bytes = try #require(summary["state_bytes_per_parameter"] as? Double)
        #expect(bytes < 3, "\(bytes) state bytes per parameter")  // float32 AdamW: 8
        let resumed = try Self.optim(["train", "--epochs", "2", "--out", root.appendingPathComponent("resumed").path,
                                      "--resume", run.appendingPathComponent("checkpoint.safetensors").path] + quick)
        #expect(resumed.status == 0, "\(resumed.error)")
    }

    @Test func trainWithBFloat16ParametersCheckpointsBF16AndResumes() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        let quick = ["--optimizer", "adamw", "--param-dtype", "bfloat16", "--state-dtype", "bfloat16", "--hidden", "64",
                     "--batch-size", "128", "--lr", "1e-2", "--plain", "--threads", "2", "--seed", "4"]
        let outcome = try Self.optim(["train", "--epochs", "2", "--out", run.path] + quick)
        #expect(outcome.status == 0, "\(outcome.error)")
        let checkpoint = try SafetensorsFile(contentsOf: run.appendingPathComponent("checkpoint.safetensors"))
        #expect(try checkpoint.info("layers.0.weight").dtype == .BF16)
        #expect(try checkpoint.info("state/layers.0.weight/exp_avg").dtype == .BF16)
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("summary.json"))) as? [String: Any])
        #expect(summary["parameter_dtype"] as? String == "bfloat16")
        let hyperparameters = try #require(summary["hyperparameters"] as? [String: Any])
        #expect(hyperparameters["bf16_stochastic_round"] as? Bool == true && hyperparameters["bf16_rounding_seed"] as? Double == 4)
        #expect(try #require(summary["test_accuracy"] as? Double) > 0.8)
        // The resume takes the saved precision; changing it is refused, naming the option.
        let resumed = try Self.optim(["train", "--epochs", "3", "--out", root.appendingPathComponent("resumed").path,
                                      "--resume", run.appendingPathComponent("checkpoint.safetensors").path, "--plain", "--threads", "2"])
        #expect(resumed.status == 0, "\(resumed.error)")
        let changed = try Self.optim(["train", "--epochs", "3", "--out", root.appendingPathComponent("changed").path, "--param-dtype", "float32",
                                      "--resume", run.appendingPathComponent("checkpoint.safetensors").path, "--plain"])
        #expect(changed.status != 0 && changed.error.contains("--param-dtype"), "\(changed.error)")
        // An optimizer that updates float32 parameters only, and a dtype that does not exist.
        let muon = try Self.optim(["train", "--optimizer", "muon", "--param-dtype", "bfloat16", "--epochs", "1", "--out", root.appendingPathComponent("muon").path, "--plain"])
        #expect(muon.status != 0 && muon.error.contains("float32 parameters only"), "\(muon.error)")
        let unknown = try Self.optim(["train", "--param-dtype", "fp8", "--epochs", "1", "--out", root.appendingPathComponent("fp8").path, "--plain"])
        #expect(unknown.status != 0 && unknown.error.contains("--param-dtype"), "\(unknown.error)")
        // A bfloat16 rounding asked of float32 parameters: a forgotten --param-dtype, refused before anything is written.
        let forgotten = try Self.optim(["train", "--optimizer", "adamw", "-H", "master_weights=true", "--epochs", "1",
                                        "--out", root.appendingPathComponent("forgotten").path, "--plain"])
        #expect(forgotten.status != 0 && forgotten.error.contains("--param-dtype bfloat16"), "\(forgotten.error)")
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("forgotten").path))
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("muon").path))
    }

    @Test func badInputGetsAOneLineErrorAndANonZeroStatus() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let ragged = root.appendingPathComponent("ragged.csv")
        try "1,0.5,0.25\n0,0.1\n".write(to: ragged, atomically: true, encoding: .utf8)
        let fiveFeatures = root.appendingPathComponent("five.csv")
        try (0..<40).map { "\($0 % 2),1,2,3,4,\($0)" }.joined(separator: "\n").write(to: fiveFeatures, atomically: true, encoding: .utf8)
        let notIDX = root.appendingPathComponent("images.idx")
        try Data([0, 0, 8, 3, 0, 0, 0, 9]).write(to: notIDX)
        let checkpoint = root.appendingPathComponent("run").appendingPathComponent("checkpoint.safetensors")
        #expect(try Self.optim(["train", "--epochs", "1", "--hidden", "8", "--batch-size", "256", "--out", root.appendingPathComponent("run").path, "--plain"]).status == 0)

        let cases: [(arguments: [String], mentions: String)] = [
            (["train", "--optimizer", "nosuch"], "nosuch"),
            (["train", "--optimizer", "adamw", "--momentum", "0.9"], "momentum"),
            (["train", "--optimizer", "sgd", "-H", "nesterov=maybe"], "nesterov"),
            (["train", "--data", ragged.path], "ragged.csv"),
            (["train", "--data", root.appendingPathComponent("missing.csv").path], "missing.csv"),
            (["train", "--data", notIDX.path, "--labels", notIDX.path], "images.idx"),
            (["train", "--data", fiveFeatures.path, "--hidden", "8", "--batch-size", "256", "--resume", checkpoint.path], "--data"),
            (["train", "--hidden", "16", "--batch-size", "256", "--resume", checkpoint.path], "hidden"),
            (["train", "--batch-size", "0"], "--batch-size"),
            (["train", "--schedule", "sideways"], "sideways"),
            (["train", "--lr=-1"], "lr"),
            (["compare", "--optimizers", "sgd,nosuch"], "nosuch"),
            (["train", "--optimizer", "nadam", "--state-dtype", "int8"], "int8"),
            (["train", "--optimizer", "nadam", "--state-dtype", "bfloat16"], "bfloat16 state is offered by"),
            (["train", "--optimizer", "sgd", "--state-dtype", "int8", "--momentum", "0"], "momentum > 0"),
            (["train", "--optimizer", "lion", "--state-dtype", "int4"], "int4 state is offered by adam, adamw"),
            (["train", "--optimizer", "adamw", "--state-dtype", "int2"], "int2"),
            (["train", "--optimizer", "adamw", "--state-dtype", "int8", "-H", "amsgrad=true"], "amsgrad"),
        ]
        for (arguments, mention) in cases {
            let out = root.appendingPathComponent("out-\(UUID().uuidString)")
            let outcome = try Self.optim(arguments + ["--epochs", "1", "--out", out.path])
            #expect(outcome.status == 1, "\(arguments): status \(outcome.status)")
            let lines = outcome.error.split(separator: "\n")
            #expect(lines.count == 1, "\(arguments): \(outcome.error)")
            #expect(outcome.error.contains(mention), "\(arguments): \(outcome.error)")
            #expect(!outcome.error.contains("Fatal error"))
        }
    }
}
