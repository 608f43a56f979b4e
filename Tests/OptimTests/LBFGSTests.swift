import Foundation
import Optim
import OptimFixtures
import Testing

/// L-BFGS evaluates its closure several times per step, so it has this suite in place of the
/// generic tests: torch's evaluation counts on Rosenbrock (the fixtures also check them at every
/// step), refusals that change nothing, checkpoints and the non-finite policies.
@Suite struct LBFGSTests {
    /// The closure of a fixture's objective over `parameters`, counting its calls.
    final class Closure {
        let objective: Objective
        let parameters: [Parameter]
        var calls = 0
        init(_ objective: Objective, _ parameters: [Parameter]) {
            self.objective = objective
            self.parameters = parameters
        }
        func callAsFunction() throws -> Float {
            calls += 1
            let x = parameters.flatMap(\.valueArray)
            var gradient = [Float](repeating: 0, count: x.count)
            let loss = objective.evaluate(x, gradient: &gradient)
            var offset = 0
            for parameter in parameters {
                try parameter.setGradient(Array(gradient[offset..<(offset + parameter.count)]))
                offset += parameter.count
            }
            return loss
        }
    }

    /// From torch's usual start (1.5, 1.5), with and without strong Wolfe: the same closure
    /// evaluations as torch 2.15 at every step and the same point, bit for bit.
    @Test(arguments: ["lbfgs-rosenbrock", "lbfgs-rosenbrock-strong-wolfe"])
    func rosenbrockMatchesTorchEvaluationForEvaluation(name: String) throws {
        let fixture = try Fixture(contentsOf: Paths.referenceFixtures.appendingPathComponent(name + ".json"))
        let x = try Parameter(name: "x", shape: [2], values: fixture.parameters[0].data)
        let optimizer = try OptimizerRegistry.makeOptimizer(fixture.configuration, parameters: [x])
        let closure = Closure(fixture.objective!, [x])
        for step in fixture.steps {
            try optimizer.step(closure: closure.callAsFunction)
            #expect(closure.calls == step.evaluations)
        }
        #expect(bits(x.valueArray) == bits(fixture.expected["x"]!))
    }

    @Test func aStepWithoutAClosureAndBadConfigurationsAreRefusedAndChangeNothing() throws {
        let x = try Parameter(name: "x", shape: [2], values: [1.5, 1.5])
        let optimizer = try LBFGS([x])
        try x.setGradient([1, 1])
        #expect(throws: OptimError.closureRequired(optimizer: "lbfgs")) { try optimizer.step() }
        #expect(x.valueArray == [1.5, 1.5] && optimizer.evaluations == 0)
        #expect("\(OptimError.closureRequired(optimizer: "lbfgs"))".contains("step(closure:)"))
        let y = try Parameter(name: "y", shape: [1])
        #expect(throws: OptimError.self) { try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "lbfgs"), groups: [.init([x]), .init([y])]) }
        #expect(throws: OptimError.self) {
            try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "lbfgs", hyperparameters: ["line_search_fn": .string("backtracking")]), parameters: [x])
        }
        #expect(throws: OptimError.self) {
            try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "lbfgs", hyperparameters: ["history_size": .number(2.5)]), parameters: [x])
        }
        #expect(throws: OptimError.self) { try optimizer.scaleNextGradient(of: x, by: 0.5) }
    }

    @Test(arguments: [false, true])
    func checkpointResumeIsBitExact(strongWolfe: Bool) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lbfgs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("lbfgs.safetensors")
        let hyperparameters = LBFGS.Hyperparameters(learningRate: strongWolfe ? 1 : 0.1, maxIterations: 4, historySize: 3, strongWolfe: strongWolfe)
        func makeRun() throws -> (Parameter, LBFGS, Closure) {
            let x = try Parameter(name: "x", shape: [4], values: [-1.2, 1, -1.2, 1])
            return (x, try LBFGS([x], hyperparameters: hyperparameters), Closure(.rosenbrock, [x]))
        }
        let (straight, first, closure) = try makeRun()
        for _ in 0..<6 { try first.step(closure: closure.callAsFunction) }
        let (resumed, before, closureBefore) = try makeRun()
        for _ in 0..<3 { try before.step(closure: closureBefore.callAsFunction) }
        try Checkpoint.save(before, to: file)
        let (fresh, after, closureAfter) = try makeRun()
        try fresh.setValues([0, 0, 0, 0])
        try Checkpoint.load(from: file, into: after)
        #expect(fresh.valueArray == resumed.valueArray)
        for _ in 3..<6 { try after.step(closure: closureAfter.callAsFunction) }
        #expect(bits(fresh.valueArray) == bits(straight.valueArray))
        #expect(after.snapshot() == first.snapshot())
        #expect(after.evaluations == first.evaluations)
    }

    @Test func nonFiniteGradientsPutTheParametersBack() throws {
        let x = try Parameter(name: "x", shape: [2], values: [1.5, 1.5])
        let optimizer = try LBFGS([x], hyperparameters: .init(strongWolfe: true))
        var calls = 0
        let poisoned = { () throws -> Float in
            calls += 1
            try x.setGradient(calls == 3 ? [.nan, 1] : [x.valueArray[0] - 1, x.valueArray[1] - 1])
            return 1
        }
        optimizer.nonFinitePolicy = .skipStep
        try optimizer.step(closure: poisoned)
        #expect(x.valueArray == [1.5, 1.5] && optimizer.skippedSteps == 1 && optimizer.evaluations == 0)
        calls = 0
        optimizer.nonFinitePolicy = .throw
        #expect(throws: OptimError.nonFiniteGradient(parameter: "x")) { try optimizer.step(closure: poisoned) }
        #expect(x.valueArray == [1.5, 1.5])
    }
}
