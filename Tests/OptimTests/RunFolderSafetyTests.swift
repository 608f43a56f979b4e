import Foundation
import Safetensors
import Testing

/// No run folder loses data: runs started at once, interrupted by signals, resumed into their
/// own folder, or replaced with --force keep every metrics line they wrote and a checkpoint
/// that loads.
@Suite(.serialized) struct RunFolderSafetyTests {
    static let quick = ["--hidden", "8", "--batch-size", "64", "--threads", "1", "--plain"]

    static func folder() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("optim-safety-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        return root
    }

    static func lines(_ url: URL) throws -> [String] {
        try String(contentsOf: url.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n").map(String.init)
    }

    static func summary(_ url: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url.appendingPathComponent("summary.json"))) as? [String: Any])
    }

    /// The checkpoint loads and is at `step`.
    static func expectCheckpoint(_ url: URL, step: Int) throws {
        let file = try SafetensorsFile(contentsOf: url.appendingPathComponent("checkpoint.safetensors"))
        #expect(file.metadata["scheduler_step"] == String(step))
        #expect(file.tensors.map(\.name).contains("layers.0.weight"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: url.path).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    @Test func twoRunsStartedAtOnceGetTwoFolders() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        nonisolated(unsafe) var outcomes: [BadInputTests.Outcome?] = [nil, nil]
        let threads = (0..<2).map { index in
            Thread { outcomes[index] = try? BadInputTests.optim(["train", "--epochs", "1"] + Self.quick, in: root) }
        }
        threads.forEach { $0.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(10_000) }
        for outcome in outcomes { #expect(outcome?.status == 0, "\(outcome?.error ?? "did not run")") }
        let runs = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("runs").path)
        #expect(runs.count == 2, "\(runs)")
        for run in runs { try Self.expectCheckpoint(root.appendingPathComponent("runs").appendingPathComponent(run), step: 23) }

        // Two runs at once into the same --out: one trains, the other is refused and writes nothing.
        nonisolated(unsafe) var same: [BadInputTests.Outcome?] = [nil, nil]
        let racers = (0..<2).map { index in
            Thread { same[index] = try? BadInputTests.optim(["train", "--epochs", "2", "--out", "same"] + Self.quick, in: root) }
        }
        racers.forEach { $0.start() }
        while racers.contains(where: { !$0.isFinished }) { usleep(10_000) }
        let statuses = same.map { $0?.status ?? -1 }.sorted()
        #expect(statuses == [0, 1], "\(same.map { $0?.error ?? "" })")
        let refused = same.first { $0?.status == 1 }??.error ?? ""
        #expect(refused.contains("already holds a run") || refused.contains("in use"), "\(refused)")
        try Self.expectCheckpoint(root.appendingPathComponent("same"), step: 46)
        #expect(try Self.summary(root.appendingPathComponent("same"))["steps"] as? Int == 46)
    }

    @Test func signalsSaveAndResumeAppends() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        // SIGTERM during the run: status 143, a checkpoint at the step reached, a summary marked interrupted.
        let first = try BadInputTests.optim(["train", "--epochs", "40", "--out", "run"] + Self.quick, in: root, signal: SIGTERM, after: "epoch 2/40")
        #expect(first.status == 143, "\(first.error)")
        #expect(first.error.split(separator: "\n").count == 1 && first.error.contains("interrupted by SIGTERM"), "\(first.error)")
        let firstSummary = try Self.summary(run)
        #expect(firstSummary["status"] as? String == "interrupted")
        let reached = try #require(firstSummary["steps"] as? Int)
        #expect(reached >= 46 && reached < 920)
        try Self.expectCheckpoint(run, step: reached)
        let firstLines = try Self.lines(run)
        #expect(!firstLines.isEmpty)

        // Resume into its own folder (the default), interrupted again by SIGINT: 130, metrics appended.
        let second = try BadInputTests.optim(["train", "--resume", "run/checkpoint.safetensors"] + Self.quick, in: root, signal: SIGINT, after: "  step ")
        #expect(second.status == 130, "\(second.error)")
        #expect(second.error.contains("interrupted by SIGINT"), "\(second.error)")
        let secondSummary = try Self.summary(run)
        let start = try #require(secondSummary["start_step"] as? Int), steps = try #require(secondSummary["steps"] as? Int)
        #expect(start == reached)
        try Self.expectCheckpoint(run, step: start + steps)
        let secondLines = try Self.lines(run)
        #expect(Array(secondLines.prefix(firstLines.count)) == firstLines && secondLines.count > firstLines.count)

        // A stale temporary file of a dead process goes; the run finishes; nothing is lost.
        let stale = run.appendingPathComponent(".checkpoint.safetensors.2147483646.7.tmp")
        try Data("partial".utf8).write(to: stale)
        let third = try BadInputTests.optim(["train", "--resume", "run/checkpoint.safetensors", "--threads", "2"] + Self.quick.filter { $0 != "1" && $0 != "--threads" }, in: root)
        #expect(third.status == 0, "\(third.error)")
        #expect(third.output.contains("changed: --threads 1 → 2"), "\(third.output)")
        let thirdSummary = try Self.summary(run)
        #expect(thirdSummary["status"] as? String == "completed")
        #expect((thirdSummary["changed_on_resume"] as? [String: [String]])?["threads"] == ["1", "2"])
        try Self.expectCheckpoint(run, step: 920)
        let thirdLines = try Self.lines(run)
        #expect(Array(thirdLines.prefix(secondLines.count)) == secondLines)
        #expect(thirdLines.last?.contains("\"step\":920") == true, "\(thirdLines.last ?? "")")

        // --force replaces the run; without it the folder is refused.
        #expect(try BadInputTests.optim(["train", "--epochs", "1", "--out", "run"] + Self.quick, in: root).status == 1)
        let forced = try BadInputTests.optim(["train", "--epochs", "1", "--out", "run", "--force"] + Self.quick, in: root)
        #expect(forced.status == 0, "\(forced.error)")
        #expect(try Self.summary(run)["steps"] as? Int == 23)
        try Self.expectCheckpoint(run, step: 23)
    }

    @Test func aKilledRunKeepsItsEpochCheckpointAndEveryLine() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("run")
        // SIGKILL cannot be caught: what survives is the checkpoint of the last finished epoch.
        let killed = try BadInputTests.optim(["train", "--epochs", "40", "--out", "run"] + Self.quick, in: root, signal: SIGKILL, after: "epoch 2/40")
        #expect(killed.status == SIGKILL || killed.status == 128 + SIGKILL, "status \(killed.status)")
        let file = try SafetensorsFile(contentsOf: run.appendingPathComponent("checkpoint.safetensors"))
        let saved = try #require(file.metadata["scheduler_step"].flatMap { Int($0) })
        #expect(saved >= 46 && saved % 23 == 0, "checkpoint at step \(saved)")
        let before = try Self.lines(run)

        // Resumed with --out naming its own folder: appended, never truncated.
        let resumed = try BadInputTests.optim(["train", "--resume", "run/checkpoint.safetensors", "--out", "run", "--stop-after-epoch", String(saved / 23 + 1)] + Self.quick, in: root)
        #expect(resumed.status == 0, "\(resumed.error)")
        let after = try Self.lines(run)
        #expect(Array(after.prefix(before.count)) == before && after.count > before.count)
        try Self.expectCheckpoint(run, step: saved + 23)
        #expect(try Self.summary(run)["start_step"] as? Int == saved)
        #expect(try Self.summary(run)["status"] as? String == "stopped")
    }

    @Test func aRunWhoseOutputGoesAwayStillFinishes() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        // `optim train | head -1`: the reader closes the pipe after the first line.
        let process = Process()
        process.executableURL = try CheckpointProcessTests.optimExecutable()
        process.arguments = ["train", "--epochs", "6", "--out", "run"] + Self.quick
        process.currentDirectoryURL = root
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        _ = output.fileHandleForReading.availableData
        try output.fileHandleForReading.close()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0 && process.terminationReason == .exit)
        #expect(try Self.summary(root.appendingPathComponent("run"))["status"] as? String == "completed")
        try Self.expectCheckpoint(root.appendingPathComponent("run"), step: 6 * 23)
    }
}
