import Optim
import Testing

@Suite struct ClippingTests {
    func sgd(_ parameters: [Parameter]) throws -> SGD { try SGD(parameters, hyperparameters: .init(learningRate: 1)) }

    @Test func globalNormIsHandComputedAndFoldedIntoTheStep() throws {
        let a = try Parameter(name: "a", shape: [2], values: [1, 1])
        let b = try Parameter(name: "b", shape: [1], values: [1])
        let c = try Parameter(name: "c", shape: [1], values: [1])  // no gradient: not counted
        let optimizer = try sgd([a, b, c])
        try a.setGradient([3, 4])
        try b.setGradient([12])
        let norm = try optimizer.clipGradientNorm(maxNorm: 6.5)
        #expect(norm == 13)  // √(9 + 16 + 144)
        #expect(a.gradientArray == [3, 4], "the gradient itself is not rewritten")
        try optimizer.step()
        let coefficient = Float(6.5) / (Float(13) + 1e-6)
        #expect(a.valueArray == [1 - 3 * coefficient, 1 - 4 * coefficient])
        #expect(b.valueArray == [1 - 12 * coefficient])
        // The factor was consumed: the next step uses the raw gradient.
        try optimizer.step()
        #expect(b.valueArray == [(1 - 12 * coefficient) - 12])
    }

    @Test func normBelowTheLimitLeavesGradientsAlone() throws {
        let a = try Parameter(name: "a", shape: [2], values: [0, 0])
        let optimizer = try sgd([a])
        try a.setGradient([0.3, 0.4])
        #expect(abs(try optimizer.clipGradientNorm(maxNorm: 1) - 0.5) < 1e-7)
        try optimizer.step()
        #expect(a.valueArray == [-0.3, -0.4])
    }

    @Test func perParameterNorms() throws {
        let a = try Parameter(name: "a", shape: [2], values: [0, 0])
        let b = try Parameter(name: "b", shape: [2], values: [0, 0])
        let optimizer = try sgd([a, b])
        try a.setGradient([3, 4])
        try b.setGradient([0.3, 0.4])
        let norms = try optimizer.clipGradientNormPerParameter(maxNorm: 1)
        #expect(norms["a"] == 5)
        #expect(abs(norms["b"]! - 0.5) < 1e-7)
        try optimizer.step()
        let coefficient = Float(1) / (Float(5) + 1e-6)
        #expect(a.valueArray == [-3 * coefficient, -4 * coefficient])
        #expect(b.valueArray == [-0.3, -0.4])
    }

    @Test(arguments: vectorOptimizers)
    func foldedScaleEqualsScalingTheGradientFirst(name: String) throws {
        var random = SplitMix(seed: 21)
        let start = random.floats(100_000), gradients = [random.floats(100_000).map { $0 * 10 }, random.floats(100_000).map { $0 * 10 }]
        var results: [[Float]] = []
        for folded in [true, false] {
            let w = try Parameter(name: "w", shape: [100_000], values: start)
            let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, name == "lookahead" ? ["k": .number(2)] : [:]), parameters: [w])
            for gradient in gradients {
                try w.setGradient(gradient)
                if folded {
                    try optimizer.clipGradientNorm(maxNorm: 1)
                } else {
                    let norm = GradientNorms.sumsOfSquares([UnsafeBufferPointer(w.gradient!)])[0].squareRoot()
                    let coefficient = Float(1) / (Float(norm) + 1e-6)
                    try w.setGradient(gradient.map { $0 * coefficient })
                }
                try optimizer.step()
            }
            results.append(w.valueArray)
        }
        let differing = zip(results[0], results[1]).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(differing == 0, "\(name): \(differing) elements differ")
    }

    @Test func clipByValue() throws {
        let a = try Parameter(name: "a", shape: [4], values: [0, 0, 0, 0])
        try a.setGradient([-3, -0.5, 0.5, 3])
        try GradientClipping.clipByValue([a], maxValue: 1)
        #expect(a.gradientArray == [-1, -0.5, 0.5, 1])
        #expect(throws: OptimError.self) { try GradientClipping.clipByValue([a], maxValue: 0) }
    }

    @Test func adaptiveClippingIsUnitWise() throws {
        // Rows [3, 4] (norm 5) and [0, 0] (norm → eps). clipping 0.1: limits 0.5 and 0.1·eps.
        let w = try Parameter(name: "w", shape: [2, 2], values: [3, 4, 0, 0])
        try w.setGradient([0.3, 0.4, 6, 8])
        try GradientClipping.clipAdaptively([w], clipping: 0.1, eps: 1e-3)
        let g = w.gradientArray!
        // Row 0: ‖g‖ = 0.5 reaches the limit 0.5 → scaled by 0.5/0.5 (unchanged values).
        #expect(abs(g[0] - 0.3) < 1e-7 && abs(g[1] - 0.4) < 1e-7)
        // Row 1: ‖g‖ = 10 > 1e-4 → scaled to norm 1e-4.
        #expect(abs(g[2] - 6e-5) < 1e-10 && abs(g[3] - 8e-5) < 1e-10)
        // A 1-D parameter is one unit.
        let b = try Parameter(name: "b", shape: [2], values: [0.6, 0.8])
        try b.setGradient([1, 0])
        try GradientClipping.clipAdaptively([b], clipping: 0.5)
        #expect(abs(b.gradientArray![0] - 0.5) < 1e-7)
    }

    @Test func limitsAreValidated() throws {
        let optimizer = try sgd([try Parameter(name: "w", shape: [1], values: [1])])
        for bad in [0, -1, Double.nan, .infinity] {
            #expect(throws: OptimError.self) { try optimizer.clipGradientNorm(maxNorm: bad) }
        }
    }
}

@Suite struct NonFiniteGradientTests {
    static let poisons: [Float] = [.nan, .infinity, -.infinity]

    func setUp(_ name: String) throws -> (any Optimizer, Parameter, Parameter) {
        var random = SplitMix(seed: 9)
        let a = try Parameter(name: "a", shape: [40], values: random.floats(40))
        let b = try Parameter(name: "b", shape: [3], values: random.floats(3))
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, name == "lookahead" ? ["k": .number(2)] : ["lr": .number(0.01)]), parameters: [a, b])
        for _ in 0..<3 {
            try a.setGradient(random.floats(40))
            try b.setGradient(random.floats(3))
            try optimizer.step()
        }
        return (optimizer, a, b)
    }

    @Test(arguments: vectorOptimizers, poisons)
    func skipStepLeavesEverythingUntouched(name: String, poison: Float) throws {
        let (optimizer, a, b) = try setUp(name)
        optimizer.nonFinitePolicy = .skipStep
        let before = (bits(a.valueArray), bits(b.valueArray), try optimizer.state(of: a).mapValues(bits), try optimizer.stepCount(of: a))
        var gradient = [Float](repeating: 0.5, count: 40)
        gradient[17] = poison
        try a.setGradient(gradient)
        try b.setGradient([0.1, 0.2, 0.3])
        try optimizer.clipGradientNorm(maxNorm: 1)
        try optimizer.step()
        #expect(optimizer.skippedSteps == 1)
        #expect(bits(a.valueArray) == before.0 && bits(b.valueArray) == before.1)
        #expect(try optimizer.state(of: a).mapValues(bits) == before.2)
        #expect(try optimizer.stepCount(of: a) == before.3)
        // The next finite step goes ahead, without the pending clipping factor of the skipped one.
        try a.setGradient([Float](repeating: 0.5, count: 40))
        try optimizer.step()
        #expect(optimizer.skippedSteps == 1)
        #expect(try optimizer.stepCount(of: a) == before.3 + 1)
        let finite = a.valueArray.allSatisfy { $0.isFinite }
        #expect(finite)
    }

    @Test(arguments: vectorOptimizers, poisons)
    func throwNamesTheParameterAndChangesNothing(name: String, poison: Float) throws {
        let (optimizer, a, b) = try setUp(name)
        optimizer.nonFinitePolicy = .throw
        let before = (bits(a.valueArray), bits(b.valueArray))
        try a.setGradient([Float](repeating: 0.5, count: 40))
        try b.setGradient([0.1, poison, 0.3])
        #expect(throws: OptimError.nonFiniteGradient(parameter: "b")) { try optimizer.step() }
        #expect(bits(a.valueArray) == before.0 && bits(b.valueArray) == before.1)
    }

    @Test(arguments: vectorOptimizers)
    func propagateLetsTheValuesThrough(name: String) throws {
        let (optimizer, a, _) = try setUp(name)
        var gradient = [Float](repeating: 0.5, count: 40)
        gradient[3] = .nan
        try a.setGradient(gradient)
        try optimizer.step()
        func allFinite() throws -> Bool { (a.valueArray + (try optimizer.state(of: a).values.joined())).allSatisfy { $0.isFinite } }
        let finiteAfterFirst = try allFinite()
        // Some optimizers need a second step to carry it into the parameter (ADOPT's v, Lion's
        // sign(NaN) = 0); Rprop, as torch's, keeps the NaN only in `prev` until the next gradient.
        try a.setGradient([Float](repeating: 0.5, count: 40))
        try optimizer.step()
        let finiteAfterSecond = try allFinite()
        #expect(!(finiteAfterFirst && finiteAfterSecond), "\(name)")
        #expect(optimizer.skippedSteps == 0)
    }
}
