import Dispatch
import InMemoryLogging
import Logging
import Optim
import Testing

@Suite struct PropertyTests {
    @Test func lionMovesEveryElementByExactlyTheLearningRate() throws {
        // Values on a 2⁻¹² grid and lr = 2⁻¹⁰, so p ± lr is exact in Float32.
        var random = SplitMix(seed: 3)
        let learningRate = 1.0 / 1024
        for name in ["lion", "decoupled_lionw"] {
            let start = (0..<257).map { _ in Float(Int.random(in: -2048...2048, using: &random)) / 4096 }
            let w = try Parameter(name: "w", shape: [257], values: start)
            let optimizer = try OptimizerRegistry.makeOptimizer(
                OptimizerConfiguration(name: name, hyperparameters: ["lr": .number(learningRate)]), parameters: [w])
            for _ in 0..<10 {
                let before = w.valueArray
                // Gradients bounded away from zero, so the interpolation's sign is never 0.
                try w.setGradient(random.floats(257).map { $0 < 0 ? $0 - 0.5 : $0 + 0.5 })
                try optimizer.step()
                for (old, new) in zip(before, w.valueArray) {
                    #expect(abs(new - old) == Float(learningRate), "\(name): \(old) → \(new)")
                }
            }
        }
    }

    @Test(arguments: vectorOptimizers)
    func missingGradientLeavesParameterAndStateUntouched(name: String) throws {
        var random = SplitMix(seed: 5)
        let a = try Parameter(name: "a", shape: [3, 5], values: random.floats(15))
        let b = try Parameter(name: "b", shape: [7], values: random.floats(7))
        // Lookahead synchronises every parameter on its k-th step; keep k out of reach here.
        let configuration = defaultConfiguration(name, name == "lookahead" ? ["k": .number(1000)] : ["lr": .number(0.01)])
        let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: [a, b])
        for _ in 0..<3 {
            try a.setGradient(random.floats(15))
            try b.setGradient(random.floats(7))
            try optimizer.step()
        }
        let values = a.valueArray, state = try optimizer.state(of: a), steps = try optimizer.stepCount(of: a)
        #expect(steps == 3)
        for _ in 0..<4 {
            a.zeroGradient()
            try b.setGradient(random.floats(7))
            try optimizer.step()
        }
        #expect(bits(a.valueArray) == bits(values))
        #expect(try optimizer.state(of: a).mapValues(bits) == state.mapValues(bits))
        #expect(try optimizer.stepCount(of: a) == 3)
        #expect(try optimizer.stepCount(of: b) == 7)
    }

    @Test(arguments: vectorOptimizers)
    func stepWithClosureReturnsTheLossAndUsesItsGradient(name: String) throws {
        let w = try Parameter(name: "w", shape: [4], values: [1, -2, 3, -4])
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, name == "lookahead" ? [:] : ["lr": .number(0.1)]), parameters: [w])
        // Some first steps only initialise state (ADOPT's second moment): take those first.
        let steps = 1 + (try OptimizerRegistry.info(named: name).samples.warmupSteps)
        var loss: Float = 0
        for _ in 0..<steps {
            loss = try optimizer.step {
                let x = w.valueArray
                try w.setGradient(x)  // f = ½‖x‖², ∇f = x
                return x.reduce(0) { $0 + 0.5 * $1 * $1 }
            }
        }
        #expect(loss > 0)
        let norm = w.valueArray.reduce(0) { $0 + 0.5 * $1 * $1 }
        #expect(norm < 15, "\(name) did not descend: \(w.valueArray)")
    }

    @Test func zeroGradSetsToNoneOrZeroes() throws {
        let w = try Parameter(name: "w", shape: [2], values: [1, 2])
        let optimizer = try SGD([w], hyperparameters: .init(learningRate: 0.1))
        try w.setGradient([3, 4])
        optimizer.zeroGradients(setToNone: false)
        #expect(w.gradientArray == [0, 0])
        optimizer.zeroGradients()
        #expect(w.gradientArray == nil)
        try optimizer.step()
        #expect(w.valueArray == [1, 2])
    }

    @Test func borrowedStorageIsUpdatedInPlace() throws {
        var values: [Float] = [1, 2, 3]
        var gradient: [Float] = [1, 1, -1]
        try values.withUnsafeMutableBufferPointer { storage in
            try gradient.withUnsafeMutableBufferPointer { gradientStorage in
                let w = try Parameter(name: "w", shape: [3], borrowing: storage)
                try w.setGradient(borrowing: gradientStorage)
                try SGD([w], hyperparameters: .init(learningRate: 0.5)).step()
            }
        }
        #expect(values == [0.5, 1.5, 3.5])
    }

    @Test func groupsKeepTheirOwnHyperparametersAndInitialLearningRates() throws {
        let a = try Parameter(name: "a", shape: [1], values: [1])
        let b = try Parameter(name: "b", shape: [1], values: [1])
        let optimizer = try DecoupledLionW(groups: [
            ParameterGroup([a], .init(learningRate: 0.1, weightDecay: 1e-4)),
            ParameterGroup([b], .init(learningRate: 0.01, weightDecay: 1e-4)),
        ])
        try optimizer.setLearningRate(0.05, group: 0)
        #expect(try optimizer.initialLearningRate(group: 0) == 0.1)
        #expect(try optimizer.learningRate(group: 0) == 0.05)
        #expect(try optimizer.initialLearningRate(group: 1) == 0.01)
        try a.setGradient([1])
        try b.setGradient([1])
        try optimizer.step()
        // a: 1·(1 − 0.5·1e-4) − 0.05;  b: 1·(1 − 1·1e-4) − 0.01
        #expect(a.valueArray == [Float(1 - 0.5 * 1e-4) - Float(0.05)])
        #expect(b.valueArray == [Float(1 - 1e-4) - Float(0.01)])
    }

    @Test func decoupledOptimizersWarnAboutLargeWeightDecay() throws {
        let handler = InMemoryLogHandler()
        let logger = Logger(label: "test") { _ in handler }
        let w = try Parameter(name: "w", shape: [1], values: [1])
        try OptimLogging.$logger.withValue(logger) {
            _ = try DecoupledLionW([w], hyperparameters: .init(weightDecay: 1e-4))
            _ = try DecoupledAdamW([w], hyperparameters: .init(weightDecay: 1e-5))
            #expect(handler.entries.isEmpty)
            _ = try DecoupledLionW([w], hyperparameters: .init(weightDecay: 1e-3))
            _ = try DecoupledAdamW([w], hyperparameters: .init(weightDecay: 0.1))
        }
        let messages = handler.entries.map { "\($0.message)" }
        #expect(handler.entries.count == 2)
        #expect(handler.entries.allSatisfy { $0.level == .warning })
        #expect(messages[0].contains("weight_decay=0.001") && messages[0].contains("DecoupledLionW"))
        #expect(messages[1].contains("weight_decay=0.1") && messages[1].contains("multiplied by 0.9"))
    }
}

@Suite struct ConcurrencyTests {
    @Test func optimizersSteppingConcurrentlyOnTheSharedPoolMatchSequentialSteps() throws {
        var random = SplitMix(seed: 77)
        let count = 200_000  // above the parallel threshold: each step wants the whole pool
        let starts = (0..<4).map { _ in random.floats(count) }, gradient = random.floats(count)
        @Sendable func train(_ index: Int) throws -> [Float] {
            let w = try Parameter(name: "w", shape: [count], values: starts[index])
            let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(vectorOptimizers[index]), parameters: [w])
            for _ in 0..<20 {
                try w.setGradient(gradient)
                try optimizer.step()
            }
            return w.valueArray
        }
        let sequential = try (0..<4).map(train)
        let results = UnsafeMutableBufferPointer<[Float]>.allocate(capacity: 4)
        defer { results.deallocate() }
        nonisolated(unsafe) let pointer = results.baseAddress!
        DispatchQueue.concurrentPerform(iterations: 4) { index in (pointer + index).initialize(to: (try? train(index)) ?? []) }
        for index in 0..<4 {
            #expect(bits(results[index]) == bits(sequential[index]), "\(vectorOptimizers[index])")
        }
    }
}
