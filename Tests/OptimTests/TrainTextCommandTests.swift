import Foundation
import Testing

/// `optim train --task austen` as a user runs it, on a GPT small enough for a debug build.
@Suite struct TrainTextCommandTests {
    static let tiny = ["--task", "austen", "--layers", "1", "--heads", "2", "--embedding", "16", "--context", "16", "--batch-size", "4",
                       "--iters", "20", "--eval-every", "10", "--eval-batches", "2", "--sample-length", "40", "--plain", "--threads", "2"]

    @Test func trainsTheGPTAndWritesValLossAndASample() throws {
        let root = try TrainCommandTests.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        let outcome = try TrainCommandTests.optim(["train", "--out", run.path, "--prompt", "Emma"] + Self.tiny)
        #expect(outcome.status == 0, "\(outcome.error)")
        #expect(outcome.output.contains("val loss"))
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: run.appendingPathComponent("summary.json"))) as? [String: Any])
        #expect(summary["task"] as? String == "austen")
        #expect(summary["optimizer"] as? String == "adamw")
        let validation = try #require(summary["val_loss"] as? Double)
        #expect(validation > 0 && validation < log(81.0))
        let sample = try String(contentsOf: run.appendingPathComponent("sample.txt"), encoding: .utf8)
        #expect(sample.hasPrefix("Emma") && sample.unicodeScalars.count == 44)
    }

    @Test func badTextOptionsGetOneLineErrors() throws {
        for (arguments, message) in [(["--prompt", "€"], "not in the vocabulary"), (["--heads", "3"], "not a multiple"),
                                     (["--iters", "25"], "multiple of --eval-every"), (["--context", "0"], "--context must be at least 1")] {
            let outcome = try TrainCommandTests.optim(["train", "--out", "/tmp/optim-never-written"] + Self.tiny + arguments)
            #expect(outcome.status != 0)
            #expect(outcome.error.contains(message), "\(arguments): \(outcome.error)")
            #expect(outcome.error.split(separator: "\n").count == 1)
        }
    }
}
