import Foundation
import Optim
import OptimFixtures
import Testing

/// Checkpoints across processes: a child `optim checkpoint-stress` resumes from a file this test
/// wrote and keeps saving; killed at random moments, it must always leave a file that loads and
/// equals one of the states it saved.
@Suite(.serialized) struct CheckpointProcessTests {
    /// The `optim` executable built beside this test bundle.
    static func optimExecutable() throws -> URL {
        #if os(Linux)
        let tests = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        #else
        // Darwin has no /proc: the loaded test bundle (a folder there) says where the build is.
        guard let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "no .xctest bundle loaded: cannot find the build folder"])
        }
        let tests = bundle.bundleURL
        #endif
        var folder = tests.deletingLastPathComponent()
        // The bundle is `<build>/swift-optimPackageTests.xctest` (a file on Linux, a folder on Darwin).
        for _ in 0..<3 {
            let candidate = folder.appendingPathComponent("optim")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            folder = folder.deletingLastPathComponent()
        }
        throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "no optim executable beside \(tests.path): run `swift build` first"])
    }

    /// Every state of the problem from step 0 to `steps`, computed in this process.
    static func trajectory(_ problem: SyntheticProblem, steps: Int) throws -> [(values: [[UInt32]], snapshot: OptimizerSnapshot)] {
        let parameters = try problem.makeParameters()
        let optimizer = try problem.makeOptimizer(parameters)
        let scheduler = try problem.makeScheduler(optimizer)
        var states = [(parameters.map { bits($0.valueArray) }, optimizer.snapshot())]
        for step in 1...steps {
            problem.setGradients(step: step, parameters)
            try optimizer.step()
            try scheduler.step()
            states.append((parameters.map { bits($0.valueArray) }, optimizer.snapshot()))
        }
        return states
    }

    /// Writes the problem's state after `steps` steps to `url`.
    static func saveState(_ problem: SyntheticProblem, steps: Int, to url: URL) throws {
        let parameters = try problem.makeParameters()
        let optimizer = try problem.makeOptimizer(parameters)
        let scheduler = try problem.makeScheduler(optimizer)
        for step in stride(from: 1, through: steps, by: 1) {
            problem.setGradients(step: step, parameters)
            try optimizer.step()
            try scheduler.step()
        }
        try Checkpoint.save(optimizer, scheduler: scheduler, to: url)
    }

    /// Loads `url` into a fresh optimizer: the step reached, the parameters' bits and the snapshot.
    static func load(_ problem: SyntheticProblem, from url: URL) throws -> (step: Int, values: [[UInt32]], snapshot: OptimizerSnapshot) {
        let parameters = try problem.makeParameters()
        let optimizer = try problem.makeOptimizer(parameters)
        let scheduler = try problem.makeScheduler(optimizer)
        try Checkpoint.load(from: url, into: optimizer, scheduler: scheduler)
        return (scheduler.stepCount, parameters.map { bits($0.valueArray) }, optimizer.snapshot())
    }

    static func launch(_ problem: SyntheticProblem, file: URL, steps: Int) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = try optimExecutable()
        process.arguments = ["checkpoint-stress", "--file", file.path, "--optimizer", problem.optimizer,
                             "--params", String(problem.parameterCount), "--steps", String(steps)]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        return (process, output)
    }

    static func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    /// k steps here, save; the child loads in a new process and runs to N; equals N steps straight.
    @Test(arguments: vectorOptimizers)
    func resumeInANewProcessIsBitExact(optimizer name: String) throws {
        let problem = try SyntheticProblem(optimizer: name, parameterCount: 4096)
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("state.safetensors")
        try Self.saveState(problem, steps: 4, to: file)
        let (child, output) = try Self.launch(problem, file: file, steps: 9)
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        child.waitUntilExit()
        #expect(child.terminationStatus == 0)
        #expect(printed.split(separator: "\n").last == "saved 9")
        let straight = try Self.trajectory(problem, steps: 9)[9]
        let resumed = try Self.load(problem, from: file)
        #expect(resumed.step == 9)
        #expect(resumed.values == straight.values)
        #expect(resumed.snapshot == straight.snapshot)
    }

    /// A child saving in a loop is killed at random moments (25 trials): the file on disk always
    /// loads and equals one of the saved states, at least as new as the last save acknowledged.
    ///
    /// A debug-build step takes longer than a save, so uniform kill times would mostly land
    /// between saves. Each trial instead waits for the child to announce a save (`saving N`, for a
    /// random N) and kills it a random 0–25 ms later, inside or just after that save.
    @Test func killedWhileSavingLeavesALoadableSavedState() throws {
        let problem = try SyntheticProblem(optimizer: "adamw", parameterCount: 1 << 18)
        let steps = 12
        let states = try Self.trajectory(problem, steps: steps)
        var random = SplitMix(seed: 2026)
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("state.safetensors")
        var reached: [Int] = [], killedMidSave = 0, killedBeforeRename = 0
        for trial in 0..<25 {
            try Self.saveState(problem, steps: 0, to: file)
            let (child, output) = try Self.launch(problem, file: file, steps: steps)
            let target = Int.random(in: 1...4, using: &random)
            var printed = "", acknowledged = 0
            // Read the child's lines until it announces save number `target` (or exits).
            while !printed.contains("saving \(target)\n") {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { break }
                printed += String(decoding: data, as: UTF8.self)
            }
            usleep(UInt32.random(in: 0...25_000, using: &random))
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            printed += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            acknowledged = printed.split(separator: "\n").compactMap { $0.hasPrefix("saved ") ? Int($0.dropFirst(6)) : nil }.last ?? 0
            #expect(child.terminationReason == .uncaughtSignal, "trial \(trial): the child ended before it was killed")
            let loaded = try Self.load(problem, from: file)
            #expect(loaded.step >= acknowledged, "trial \(trial): the file holds step \(loaded.step), the child had saved \(acknowledged)")
            #expect(loaded.step <= steps)
            guard loaded.step <= steps else { continue }
            #expect(loaded.values == states[loaded.step].values, "trial \(trial): parameters differ from step \(loaded.step)")
            #expect(loaded.snapshot == states[loaded.step].snapshot, "trial \(trial): optimizer state differs from step \(loaded.step)")
            reached.append(loaded.step)
            if loaded.step < target { killedBeforeRename += 1 }
            // A temporary file left beside the checkpoint means the kill landed inside a save.
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0 != "state.safetensors" }
            if !leftovers.isEmpty { killedMidSave += 1 }
            for leftover in leftovers { try FileManager.default.removeItem(at: folder.appendingPathComponent(leftover)) }
        }
        print("kill test: steps on disk \(reached); \(killedBeforeRename) of 25 kills landed inside the announced save (before its rename), \(killedMidSave) while its temporary file existed")
        #expect(Set(reached).count >= 3, "steps reached: \(reached)")
    }
}
