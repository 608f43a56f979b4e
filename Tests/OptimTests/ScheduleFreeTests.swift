import Foundation
import Optim
import Testing

/// Schedule-free's train/eval switch: what the fixtures (which replay schedulefree's own
/// `train()`/`eval()` calls) cannot show — refusals, idempotence, checkpoints in either mode.
@Suite struct ScheduleFreeTests {
    static let names = ["schedule_free_adamw", "schedule_free_sgd"]

    func makeRun(_ name: String) throws -> (any Optimizer, [Parameter]) {
        var random = SplitMix(seed: 5)
        let parameters = [try Parameter(name: "w", shape: [3, 4], values: random.floats(12)),
                          try Parameter(name: "b", shape: [4], values: random.floats(4))]
        let optimizer = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: name, hyperparameters: ["lr": .number(0.01)]),
                                                            parameters: parameters)
        return (optimizer, parameters)
    }

    func step(_ optimizer: any Optimizer, _ parameters: [Parameter], seed: UInt64) throws {
        var random = SplitMix(seed: seed)
        for parameter in parameters { try parameter.setGradient(random.floats(parameter.count)) }
        try optimizer.step()
    }

    @Test(arguments: names)
    func stepInEvalModeThrowsAndChangesNothing(name: String) throws {
        let (optimizer, parameters) = try makeRun(name)
        try step(optimizer, parameters, seed: 1)
        try step(optimizer, parameters, seed: 2)
        try optimizer.eval()
        let before = parameters.map { bits($0.valueArray) }, snapshot = optimizer.snapshot()
        var random = SplitMix(seed: 3)
        for parameter in parameters { try parameter.setGradient(random.floats(parameter.count)) }
        #expect(throws: OptimError.stepInEvalMode(optimizer: name)) { try optimizer.step() }
        #expect(parameters.map { bits($0.valueArray) } == before)
        #expect(optimizer.snapshot() == snapshot)
        try optimizer.train()
        try optimizer.step()
        #expect(parameters.map { bits($0.valueArray) } != before)
    }

    @Test(arguments: names)
    func modeSwitchesAreIdempotentAndMoveTheParameters(name: String) throws {
        let (optimizer, parameters) = try makeRun(name)
        try optimizer.eval()  // before any state: nothing to move
        try optimizer.train()
        for seed: UInt64 in 1...4 { try step(optimizer, parameters, seed: seed) }
        let y = parameters.map(\.valueArray)
        try optimizer.eval()
        let x = parameters.map(\.valueArray)
        #expect(x != y)
        try optimizer.eval()
        #expect(parameters.map(\.valueArray) == x)
        try optimizer.train()
        try optimizer.train()
        // Back at y up to the rounding of two interpolations.
        for (got, want) in zip(parameters.map(\.valueArray), y) {
            for (g, w) in zip(got, want) { #expect(abs(g - w) <= 1e-6 * max(1, abs(w))) }
        }
    }

    /// A checkpoint saved in either mode restores that mode, and the run continues bit for bit.
    @Test(arguments: names)
    func checkpointInEitherModeResumesBitExact(name: String) throws {
        for saveInEval in [false, true] {
            let (reference, referenceParameters) = try makeRun(name)
            for seed: UInt64 in 1...3 { try step(reference, referenceParameters, seed: seed) }
            if saveInEval { try reference.eval() }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("optim-sf-\(UUID().uuidString).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try Checkpoint.save(reference, to: url)

            let (resumed, resumedParameters) = try makeRun(name)
            try step(resumed, resumedParameters, seed: 99)  // different state, all overwritten by the load
            try Checkpoint.load(from: url, into: resumed)
            #expect(resumed.snapshot() == reference.snapshot())
            #expect(resumedParameters.map { bits($0.valueArray) } == referenceParameters.map { bits($0.valueArray) })
            if saveInEval {
                #expect(throws: OptimError.stepInEvalMode(optimizer: name)) { try step(resumed, resumedParameters, seed: 4) }
                try reference.train()
                try resumed.train()
            }
            for seed: UInt64 in 4...6 {
                try step(reference, referenceParameters, seed: seed)
                try step(resumed, resumedParameters, seed: seed)
            }
            #expect(resumedParameters.map { bits($0.valueArray) } == referenceParameters.map { bits($0.valueArray) })
        }
    }

    /// The averaging counters advance once per step for a group even when none of its parameters
    /// has a gradient, as schedulefree's per-group `k` does.
    @Test func groupCountersAdvanceWithoutGradients() throws {
        let (optimizer, parameters) = try makeRun("schedule_free_sgd")
        try step(optimizer, parameters, seed: 1)
        for parameter in parameters { parameter.zeroGradient(setToNone: true) }
        try optimizer.step()
        try optimizer.step()
        #expect(optimizer.snapshot().groups[0].state["k"] == 3)
        #expect(try optimizer.stepCount(of: parameters[0]) == 1)
    }

    @Test func invalidHyperparametersAreRefused() {
        #expect(throws: OptimError.self) { try ScheduleFreeSGD([try Parameter(name: "x", shape: [2], values: [1, 2])],
                                                                 hyperparameters: .init(momentum: 0)) }
        #expect(throws: OptimError.self) { try ScheduleFreeAdamW([try Parameter(name: "x", shape: [2], values: [1, 2])],
                                                                   hyperparameters: .init(betas: .init(0, 0.999))) }
        #expect(throws: OptimError.self) { try ScheduleFreeAdamW([try Parameter(name: "x", shape: [2], values: [1, 2])],
                                                                   hyperparameters: .init(warmupSteps: -1)) }
        #expect(throws: OptimError.self) {
            try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "schedule_free_adamw", hyperparameters: ["warmup_steps": .number(2.5)]),
                                                parameters: [try Parameter(name: "x", shape: [2], values: [1, 2])])
        }
    }
}
