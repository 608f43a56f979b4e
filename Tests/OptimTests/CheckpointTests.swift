import Foundation
import Optim
import Testing

@Suite struct CheckpointTests {
    static func temporaryFile() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-checkpoint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder.appendingPathComponent("state.safetensors")
    }

    struct Run {
        var parameters: [Parameter]
        var optimizer: any Optimizer
        var scheduler: LearningRateScheduler
    }

    /// A model of two groups, an optimizer from the registry and a warm-up–cosine schedule.
    static func build(_ name: String, seed: UInt64) throws -> Run {
        var random = SplitMix(seed: seed)
        let parameters = try [("w", [7, 9]), ("b", [9]), ("s", [])].map { try Parameter(name: $0.0, shape: $0.1, values: random.floats($0.1.reduce(1, *))) }
        let groups = [ParameterGroupConfiguration([parameters[0]]), ParameterGroupConfiguration([parameters[1], parameters[2]], overrides: Self.overrides(name))]
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, name == "lookahead" ? ["k": .number(3)] : ["lr": .number(0.01)]), groups: groups)
        let scheduler = try LearningRateScheduler(optimizer, schedule: SequentialSchedule.warmupCosine(warmupSteps: 3, totalSteps: 12, floor: 0.1))
        return Run(parameters: parameters, optimizer: optimizer, scheduler: scheduler)
    }

    /// The second group's own settings: its learning rate (prodigy's groups share the largest lr
    /// or have 0, so it differs there in decay and eps instead).
    static func overrides(_ name: String) -> HyperparameterDictionary {
        switch name {
        case "lookahead": return [:]
        case "prodigy": return ["weight_decay": .number(0.05), "eps": .number(1e-6)]
        default: return ["lr": .number(0.003)]
        }
    }

    static func train(_ run: Run, steps: Range<Int>) throws {
        for step in steps {
            var random = SplitMix(seed: UInt64(1000 + step))
            for (index, parameter) in run.parameters.enumerated() where !(index == 2 && step % 3 == 1) {  // "s" misses some steps
                try parameter.setGradient(random.floats(parameter.count).map { $0 * 3 })
            }
            if run.parameters[2].gradient != nil, step % 3 == 1 { run.parameters[2].zeroGradient() }
            try run.optimizer.clipGradientNorm(maxNorm: 2)
            try run.optimizer.step()
            try run.scheduler.step()
        }
    }

    static func state(_ run: Run) throws -> [String: [UInt32]] {
        var result: [String: [UInt32]] = [:]
        for parameter in run.parameters {
            result[parameter.name] = bits(parameter.valueArray)
            for (buffer, values) in try run.optimizer.state(of: parameter) { result["\(parameter.name)/\(buffer)"] = bits(values) }
            result["\(parameter.name)/steps"] = [UInt32(try run.optimizer.stepCount(of: parameter))]
        }
        result["lr"] = try (0..<run.optimizer.groupCount).map { UInt32(truncatingIfNeeded: try run.optimizer.learningRate(group: $0).bitPattern) }
        return result
    }

    @Test(arguments: vectorOptimizers)
    func resumeIsBitExact(name: String) throws {
        let straight = try Self.build(name, seed: 1)
        try Self.train(straight, steps: 0..<10)

        let first = try Self.build(name, seed: 1)
        try Self.train(first, steps: 0..<4)
        let url = try Self.temporaryFile()
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        try Checkpoint.save(first.optimizer, scheduler: first.scheduler, to: url, metadata: ["run": "test"])

        let resumed = try Self.build(name, seed: 99)  // other initial values: all must come from the file
        let metadata = try Checkpoint.load(from: url, into: resumed.optimizer, scheduler: resumed.scheduler)
        #expect(metadata["run"] == "test")
        #expect(resumed.scheduler.stepCount == 4)
        try Self.train(resumed, steps: 4..<10)
        #expect(try Self.state(resumed) == Self.state(straight))
    }

    @Test func refusedLoadsChangeNothing() throws {
        let source = try Self.build("adamw", seed: 1)
        try Self.train(source, steps: 0..<3)
        let url = try Self.temporaryFile()
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        try Checkpoint.save(source.optimizer, scheduler: source.scheduler, to: url)

        func expectRefused(_ target: Run, mentioning text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            try Self.train(target, steps: 0..<2)
            let before = try Self.state(target)
            do {
                try Checkpoint.load(from: url, into: target.optimizer, scheduler: target.scheduler)
                Issue.record("load was accepted", sourceLocation: sourceLocation)
            } catch {
                #expect("\(error)".contains(text), "\(error)", sourceLocation: sourceLocation)
            }
            #expect(try Self.state(target) == before, "a refused load changed the optimizer", sourceLocation: sourceLocation)
        }
        // Another optimizer.
        try expectRefused(try Self.build("adam", seed: 2), mentioning: "'adamw', not 'adam'")
        // Another shape.
        var random = SplitMix(seed: 3)
        let reshaped = try [("w", [9, 7]), ("b", [9]), ("s", [])].map { try Parameter(name: $0.0, shape: $0.1, values: random.floats($0.1.reduce(1, *))) }
        let optimizerReshaped = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw"), groups: [.init([reshaped[0]]), .init([reshaped[1], reshaped[2]])])
        try expectRefused(Run(parameters: reshaped, optimizer: optimizerReshaped, scheduler: try LearningRateScheduler(optimizerReshaped, schedule: ConstantSchedule())),
                          mentioning: "F32 [9, 7] here")
        // A missing parameter and an extra one.
        let renamed = try [("w", [7, 9]), ("b", [9]), ("t", [])].map { try Parameter(name: $0.0, shape: $0.1, values: random.floats($0.1.reduce(1, *))) }
        let optimizerRenamed = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw"), groups: [.init([renamed[0]]), .init([renamed[1], renamed[2]])])
        try expectRefused(Run(parameters: renamed, optimizer: optimizerRenamed, scheduler: try LearningRateScheduler(optimizerRenamed, schedule: ConstantSchedule())),
                          mentioning: "'t'")
        // Other groups.
        let regrouped = try Self.build("adamw", seed: 4)
        let optimizerRegrouped = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw"), parameters: regrouped.parameters)
        try expectRefused(Run(parameters: regrouped.parameters, optimizer: optimizerRegrouped, scheduler: try LearningRateScheduler(optimizerRegrouped, schedule: ConstantSchedule())),
                          mentioning: "group")
        // Not a checkpoint at all.
        try Data("garbage".utf8).write(to: url)
        try expectRefused(try Self.build("adamw", seed: 5), mentioning: "truncated")
    }
}
