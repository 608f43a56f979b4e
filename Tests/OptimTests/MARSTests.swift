import Foundation
import Optim
import Testing

/// MARS's own behaviour beyond its fixtures: the per-group step that sets every bias correction,
/// the cautious mask, the ‖c‖ clip, the paths chosen by shape, the 1-D learning rate's factor,
/// and the refusals.
@Suite struct MARSTests {
    func make(_ hyperparameters: HyperparameterDictionary, _ parameters: [Parameter]) throws -> any Optimizer {
        try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "mars", hyperparameters: hyperparameters), parameters: parameters)
    }

    /// A parameter without a gradient still advances its group's step: its first update, two
    /// steps late, is bias-corrected with t = 2, `u = (1 − β1)·g / (√(1 − β2)·|g| / √(1 − β2²) · (1 − β1²))`
    /// = `sign(g)·√(1 + β2)/(1 + β1)`, not the `sign(g)` of t = 1.
    @Test func groupStepAdvancesForAParameterWithoutGradient() throws {
        let settings: HyperparameterDictionary = ["lr": .number(0.01), "lr_1d": .number(0.01), "weight_decay_1d": .number(0)]
        func firstMove(late: Bool) throws -> [Double] {
            let w = try Parameter(name: "w", shape: [3], values: [0.5, -0.25, 1])
            let m = try Parameter(name: "m", shape: [2, 2], values: [1, 2, 3, 4])
            let optimizer = try make(settings, [w, m])
            if late {
                try m.setGradient([0.1, 0.2, 0.3, 0.4])
                try optimizer.step()
                #expect(optimizer.snapshot().groups[0].state["step"] == 1)
                #expect(try optimizer.stepCount(of: w) == 0)
            }
            try m.setGradient([0.1, 0.2, 0.3, 0.4])
            try w.setGradient([2, -3, 0.5])
            try optimizer.step()
            #expect(optimizer.snapshot().groups[0].state["step"] == (late ? 2 : 1))
            return zip([0.5, -0.25, 1.0], w.valueArray).map { Double($1) - $0 }
        }
        let onTime = try firstMove(late: false), late = try firstMove(late: true)
        let (beta1, beta2) = (0.9, 0.95)
        let lateFactor = (1 + beta2).squareRoot() / (1 + beta1)
        for (index, sign) in [-1.0, 1, -1].enumerated() {
            #expect(abs(onTime[index] - sign * 0.01) < 1e-6, "t = 1: \(onTime[index])")
            #expect(abs(late[index] - sign * 0.01 * lateFactor) < 1e-6, "t = 2: \(late[index])")
        }
    }

    /// Cautious: where the new momentum disagrees in sign with the gradient the element does not
    /// move; the others move by numel/(agreeing + 1) times their plain update (here 4/4 = 1).
    @Test(arguments: [false, true])
    func cautiousMasksDisagreeingElements(optimize1D: Bool) throws {
        func run(cautious: Bool) throws -> (first: [Float], second: [Float]) {
            let w = try Parameter(name: "w", shape: [4], values: [0.1, 0.2, 0.3, 0.4])
            let optimizer = try make(["lr": .number(0.01), "lr_1d": .number(0.01), "weight_decay_1d": .number(0),
                                      "optimize_1d": .bool(optimize1D), "cautious": .bool(cautious)], [w])
            // A zero gradient never agrees: the first step's scale is 4/(3 + 1) = 1 too.
            try w.setGradient([0.2, 0.2, 0.2, 0])
            try optimizer.step()
            let first = w.valueArray
            try w.setGradient([-0.001, 0.2, 0.2, 0.2])
            try optimizer.step()
            return (first, w.valueArray)
        }
        let plain = try run(cautious: false), cautious = try run(cautious: true)
        #expect(bits(cautious.first) == bits(plain.first))
        #expect(plain.second[0] != plain.first[0])
        #expect(cautious.second[0] == cautious.first[0], "the disagreeing element moved")
        #expect(bits(Array(cautious.second[1...])) == bits(Array(plain.second[1...])))
    }

    /// On the MARS path the corrected gradient is scaled to norm 1 when longer: after one step
    /// with a huge gradient, ‖exp_avg‖ = 1 − β1.
    @Test func correctedGradientIsClippedToNormOne() throws {
        let m = try Parameter(name: "m", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let optimizer = try make([:], [m])
        try m.setGradient([300, -400, 0, 1200, 0, 0])
        try optimizer.step()
        let state = try optimizer.state(of: m)
        let average = try #require(state["exp_avg"]).map(Double.init)
        let norm = average.reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(abs(norm - 0.05) < 1e-7, "‖exp_avg‖ = \(norm)")
        #expect(try #require(state["last_grad"]) == [300, -400, 0, 1200, 0, 0])
        #expect(state["max_exp_avg_sq"] == nil)
    }

    /// "shampoo" orthogonalises matrices only: a vector on the MARS path (optimize_1d) takes the
    /// "adamw" update, bit for bit; without optimize_1d every vector takes the AdamW path, whatever
    /// the type.
    @Test func typesAffectOnlyWhatTheyShould() throws {
        func run(_ settings: HyperparameterDictionary, shape: [Int]) throws -> [UInt32] {
            var random = SplitMix(seed: 11)
            let w = try Parameter(name: "w", shape: shape, values: random.floats(6))
            let optimizer = try make(settings, [w])
            for _ in 0..<4 {
                try w.setGradient(random.floats(6))
                try optimizer.step()
            }
            return bits(w.valueArray)
        }
        let vectorAdamW = try run(["optimize_1d": .bool(true)], shape: [6])
        #expect(try run(["optimize_1d": .bool(true), "mars_type": .string("shampoo")], shape: [6]) == vectorAdamW)
        #expect(try run(["optimize_1d": .bool(true), "mars_type": .string("lion")], shape: [6]) != vectorAdamW)
        let oneD = try run([:], shape: [6])
        #expect(oneD != vectorAdamW)
        #expect(try run(["mars_type": .string("lion")], shape: [6]) == oneD)
        #expect(try run(["mars_type": .string("shampoo")], shape: [6]) == oneD)
        let matrixAdamW = try run([:], shape: [2, 3])
        #expect(try run(["mars_type": .string("shampoo")], shape: [2, 3]) != matrixAdamW)
    }

    /// The 1-D learning rate is `lr·(lr_1d/lr)` with the constructor's factor: a group that
    /// overrides `lr` gets the factor, not the constructor's `lr_1d`; overriding `lr_1d` in a
    /// group is refused (the reference would ignore it).
    @Test func oneDimensionalLearningRateFollowsTheConstructorFactor() throws {
        let a = try Parameter(name: "a", shape: [2], values: [1, 2]), b = try Parameter(name: "b", shape: [2], values: [1, 2])
        let configuration = OptimizerConfiguration(name: "mars", hyperparameters: ["lr": .number(0.004), "lr_1d": .number(0.003)])
        let optimizer = try OptimizerRegistry.makeOptimizer(configuration, groups: [.init([a]), .init([b], overrides: ["lr": .number(0.01)])])
        #expect(try optimizer.hyperparameters(group: 0)["lr_1d"] == .number(0.003))
        guard case let .number(groupRate)? = try optimizer.hyperparameters(group: 1)["lr_1d"] else {
            Issue.record("no lr_1d")
            return
        }
        #expect(abs(groupRate - 0.0075) < 1e-15)
        #expect(throws: OptimError.self) {
            try OptimizerRegistry.makeOptimizer(configuration, groups: [.init([a]), .init([b], overrides: ["lr_1d": .number(0.01)])])
        }
        // An lr change scales the 1-D step: twice the lr, twice the first move (t = 1: |u| = 1).
        func firstMove(_ rate: Double) throws -> Float {
            let w = try Parameter(name: "w", shape: [1], values: [1])
            let optimizer = try make(["lr": .number(0.004), "lr_1d": .number(0.003), "weight_decay_1d": .number(0)], [w])
            try optimizer.setLearningRate(rate, group: 0)
            try w.setGradient([1])
            try optimizer.step()
            return 1 - w.valueArray[0]
        }
        #expect(abs(try firstMove(0.004) - 0.003) < 1e-7)
        #expect(abs(try firstMove(0.008) - 0.006) < 1e-7)
    }

    @Test func invalidHyperparametersAreRefused() throws {
        let w = try Parameter(name: "w", shape: [2], values: [1, 2])
        for bad: HyperparameterDictionary in [
            ["mars_type": .string("sgd")], ["mars_type": .number(1)], ["gamma": .bool(true)], ["gamma": .number(-0.1)],
            ["betas": .numbers([0.9, 1])], ["betas_1d": .numbers([-0.1, 0.9])], ["lr_1d": .number(-1)],
            ["weight_decay_1d": .number(-1)], ["eps": .number(-1)], ["lr": .number(0)], ["lr_1d_factor": .number(2)],
            ["foreach": .bool(true)], ["optimize_1d": .number(1)],
        ] {
            #expect(throws: OptimError.self, "\(bad)") { try make(bad, [w]) }
        }
        do {
            _ = try make(["mars_type": .string("muon")], [w])
        } catch {
            #expect("\(error)".contains("mars_type") && "\(error)".contains("shampoo"), "\(error)")
        }
    }
}
