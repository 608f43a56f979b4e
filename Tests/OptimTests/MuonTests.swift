import Foundation
import Optim
import OptimFixtures
import Testing

/// Muon takes 2-D parameters only, so it has this suite over matrices in place of the generic
/// tests over vectors (``vectorOptimizers``): fixtures at stated tolerances, refusal of other
/// shapes, and the properties every optimizer keeps.
@Suite struct MuonTests {
    static let fixtures = Paths.jsonFiles(in: Paths.referenceFixtures).filter { URL(fileURLWithPath: $0).lastPathComponent.hasPrefix("muon-") }

    /// The float32 mode replays the float32-Newton–Schulz references at the format's default
    /// tolerance (rtol 1e-5, atol 1e-6), whatever looser tolerance the files allow.
    @Test(arguments: fixtures.filter { $0.contains("muon-f32-") })
    func float32ModeMeetsTheDefaultTolerance(path: String) throws {
        var fixture = try Fixture(contentsOf: URL(fileURLWithPath: path))
        #expect(fixture.configuration.hyperparameters["ns_dtype"] == .string("float32"))
        fixture.relativeTolerance = 1e-5
        fixture.absoluteTolerance = 1e-6
        let result = try fixture.replay(file: path)
        #expect(result.passed, "\(result.name): \(result.firstMismatch ?? "")")
    }

    /// The bfloat16 mode replays torch's own (bfloat16) trajectories within atol 2e-5, rtol 1e-5:
    /// every stored value is rounded to bfloat16 as torch rounds it, and what remains is a
    /// float32 sum that lands the other side of a bfloat16 rounding boundary (the GEMMs add in
    /// another order) — one bfloat16 step, 2⁻⁸ of an orthogonalised entry, times a learning rate
    /// of the fixtures' (≤ 0.02): measured at most 9.7e-6 over the fifteen files.
    @Test(arguments: fixtures.filter { !$0.contains("muon-f32-") })
    func bfloat16ModeTracksTorch(path: String) throws {
        var fixture = try Fixture(contentsOf: URL(fileURLWithPath: path))
        #expect(fixture.configuration.hyperparameters["ns_dtype"] == nil)
        fixture.relativeTolerance = 1e-5
        fixture.absoluteTolerance = 2e-5
        let result = try fixture.replay(file: path)
        #expect(result.passed, "\(result.name): \(result.firstMismatch ?? "")")
    }

    func matrices(seed: UInt64 = 3) throws -> [Parameter] {
        var random = SplitMix(seed: seed)
        return [try Parameter(name: "a", shape: [12, 7], values: random.floats(84)),
                try Parameter(name: "b", shape: [5, 9], values: random.floats(45))]
    }

    func setGradients(_ parameters: [Parameter], _ random: inout SplitMix) throws {
        for parameter in parameters { try parameter.setGradient(random.floats(parameter.count)) }
    }

    @Test func otherShapesAreRefusedNamingTheParameter() throws {
        let bias = try Parameter(name: "fc.bias", shape: [7])
        let weight = try Parameter(name: "fc.weight", shape: [7, 3])
        do {
            _ = try Muon([weight, bias], hyperparameters: .init())
            Issue.record("a 1-D parameter was accepted")
        } catch {
            #expect("\(error)".contains("'fc.bias'") && "\(error)".contains("2-D"))
        }
        #expect(throws: OptimError.self) { try Muon([try Parameter(name: "conv", shape: [2, 3, 4])], hyperparameters: .init()) }
        #expect(throws: OptimError.self) {
            try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "muon", hyperparameters: ["adjust_lr_fn": .string("linear")]), parameters: [weight])
        }
        #expect(throws: OptimError.self) {
            try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "muon", hyperparameters: ["ns_steps": .number(2.5)]), parameters: [weight])
        }
    }

    @Test(arguments: ["bfloat16", "float32"])
    func oneAndTwoThreadsGiveTheSameBits(precision: String) throws {
        var results: [[UInt32]] = []
        for threads in [1, 2] {
            let parameters = try matrices()
            var random = SplitMix(seed: 5)
            let optimizer = try OptimizerRegistry.makeOptimizer(
                OptimizerConfiguration(name: "muon", hyperparameters: ["ns_dtype": .string(precision)]), parameters: parameters,
                threadPool: ThreadPool(threadCount: threads))
            for _ in 0..<3 {
                try setGradients(parameters, &random)
                try optimizer.step()
            }
            results.append(parameters.flatMap { bits($0.valueArray) })
        }
        #expect(results[0] == results[1])
    }

    @Test func missingGradientLeavesParameterAndStateUntouched() throws {
        let parameters = try matrices()
        var random = SplitMix(seed: 6)
        let optimizer = try Muon(parameters, hyperparameters: .init(learningRate: 0.02))
        try setGradients(parameters, &random)
        try optimizer.step()
        let values = parameters[0].valueArray, state = try optimizer.state(of: parameters[0])
        parameters[0].zeroGradient()
        try parameters[1].setGradient(random.floats(45))
        try optimizer.step()
        #expect(bits(parameters[0].valueArray) == bits(values))
        #expect(try optimizer.state(of: parameters[0]).mapValues(bits) == state.mapValues(bits))
        #expect(try optimizer.stepCount(of: parameters[0]) == 1 && optimizer.stepCount(of: parameters[1]) == 2)
    }

    @Test func checkpointResumeIsBitExact() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("muon-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("muon.safetensors")
        var random = SplitMix(seed: 8)
        let gradients = (0..<6).map { _ in [random.floats(84), random.floats(45)] }
        func run(_ parameters: [Parameter], _ optimizer: any Optimizer, _ steps: Range<Int>) throws {
            for step in steps {
                for (parameter, gradient) in zip(parameters, gradients[step]) { try parameter.setGradient(gradient) }
                try optimizer.step()
            }
        }
        let straight = try matrices(), first = try Muon(straight, hyperparameters: .init(learningRate: 0.02))
        try run(straight, first, 0..<6)
        let resumedParameters = try matrices(), before = try Muon(resumedParameters, hyperparameters: .init(learningRate: 0.02))
        try run(resumedParameters, before, 0..<3)
        try Checkpoint.save(before, to: file)
        let fresh = try matrices(seed: 99), after = try Muon(fresh, hyperparameters: .init(learningRate: 0.02))
        try Checkpoint.load(from: file, into: after)
        try run(fresh, after, 3..<6)
        #expect(fresh.flatMap { bits($0.valueArray) } == straight.flatMap { bits($0.valueArray) })
        #expect(after.snapshot() == first.snapshot())
    }

    @Test func nonFinitePoliciesAndFoldedClipping() throws {
        let parameters = try matrices()
        let optimizer = try Muon(parameters, hyperparameters: .init(learningRate: 0.02))
        var gradient = [Float](repeating: 0.1, count: 84)
        gradient[5] = .nan
        try parameters[0].setGradient(gradient)
        try parameters[1].setGradient([Float](repeating: 0.1, count: 45))
        optimizer.nonFinitePolicy = .skipStep
        let values = parameters.map(\.valueArray)
        try optimizer.step()
        #expect(parameters.map { bits($0.valueArray) } == values.map(bits) && optimizer.skippedSteps == 1)
        optimizer.nonFinitePolicy = .throw
        #expect(throws: OptimError.nonFiniteGradient(parameter: "a")) { try optimizer.step() }

        // A pending gradient factor equals scaling the gradient first.
        let scaled = try matrices(), plain = try matrices()
        let a = try Muon(scaled, hyperparameters: .init(learningRate: 0.02)), b = try Muon(plain, hyperparameters: .init(learningRate: 0.02))
        var random = SplitMix(seed: 4)
        for (x, y) in zip(scaled, plain) {
            let g = random.floats(x.count)
            try x.setGradient(g)
            try y.setGradient(g.map { $0 * 0.25 })
            try a.scaleNextGradient(of: x, by: 0.25)
        }
        try a.step()
        try b.step()
        #expect(scaled.flatMap { bits($0.valueArray) } == plain.flatMap { bits($0.valueArray) })
    }

    @Test func minimisesAMatrixQuadratic() throws {
        // f(W) = ½‖W − T‖², from W = 0, the learning rate decaying linearly over 500 steps.
        var random = SplitMix(seed: 12)
        let target = random.floats(8 * 5)
        let w = try Parameter(name: "w", shape: [8, 5], values: [Float](repeating: 0, count: 40))
        let optimizer = try Muon([w], hyperparameters: .init(learningRate: 0.1, weightDecay: 0))
        func loss() -> Double { zip(w.valueArray, target).reduce(0) { $0 + 0.5 * Double(($1.0 - $1.1) * ($1.0 - $1.1)) } }
        let initial = loss()
        for step in 0..<500 {
            try optimizer.scaleLearningRates(by: max(1 - Double(step) / 500, 1e-3))
            try w.setGradient(zip(w.valueArray, target).map { $0 - $1 })
            try optimizer.step()
        }
        #expect(loss() < 1e-3 * initial, "loss \(initial) → \(loss())")
    }
}
