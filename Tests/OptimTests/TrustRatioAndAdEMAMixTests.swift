import Optim
import Testing

/// What the generic suites do not cover for AdEMAMix, LAMB and LARS: their own hyperparameter
/// checks, AdEMAMix's "0 = off" warm-ups, and the trust-ratio passes on several threads.
@Suite struct TrustRatioAndAdEMAMixTests {
    func expectInvalid(_ name: String, _ hyperparameters: HyperparameterDictionary, mentions: [String],
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let w = try Parameter(name: "w", shape: [2], values: [1, 2])
        do {
            _ = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: name, hyperparameters: hyperparameters), parameters: [w])
            Issue.record("\(name) accepted \(hyperparameters)", sourceLocation: sourceLocation)
        } catch {
            for text in mentions {
                #expect("\(error)".contains(text), "'\(error)' does not mention '\(text)'", sourceLocation: sourceLocation)
            }
        }
    }

    @Test func invalidHyperparametersAreRefusedByName() throws {
        try expectInvalid("ademamix", ["betas": .numbers([0.9, 0.999, 1])], mentions: ["betas[2]", "[0, 1)"])
        try expectInvalid("ademamix", ["betas": .numbers([-0.1, 0.999, 0.9999])], mentions: ["betas[0]", "[0, 1)"])
        try expectInvalid("ademamix", ["betas": .numbers([0.9, 0.999])], mentions: ["betas", "3 numbers"])
        try expectInvalid("ademamix", ["alpha": .number(-1)], mentions: ["alpha", ">= 0"])
        try expectInvalid("ademamix", ["t_alpha": .number(-5)], mentions: ["t_alpha", ">= 0"])
        try expectInvalid("ademamix", ["t_beta3": .bool(true)], mentions: ["t_beta3", "a number or null"])
        try expectInvalid("lamb", ["b1": .number(1)], mentions: ["b1", "[0, 1)"])
        try expectInvalid("lamb", ["b2": .number(-0.5)], mentions: ["b2", "[0, 1)"])
        try expectInvalid("lamb", ["eps_root": .number(-1e-8)], mentions: ["eps_root", ">= 0"])
        try expectInvalid("lamb", ["betas": .numbers([0.9, 0.999])], mentions: ["unknown hyperparameter 'betas'"])
        try expectInvalid("lars", ["momentum": .number(1.5)], mentions: ["momentum", "[0, 1)"])
        try expectInvalid("lars", ["trust_coefficient": .number(0)], mentions: ["trust_coefficient", "> 0"])
        try expectInvalid("lars", ["eps": .number(-1)], mentions: ["eps", ">= 0"])
        try expectInvalid("lars", ["nesterov": .number(1)], mentions: ["nesterov", "must be a boolean"])
    }

    /// bitsandbytes switches a warm-up off for `None` and for 0 alike; 0 stays 0 in the dictionary.
    @Test func ademamixWarmupsOfZeroAreOff() throws {
        var random = SplitMix(seed: 5)
        let start = random.floats(37), gradients = (0..<6).map { _ in random.floats(37) }
        var results: [[Float]] = []
        for warmups in [HyperparameterDictionary(), ["t_alpha": .number(0), "t_beta3": .number(0)], ["t_alpha": .number(4), "t_beta3": .number(4)]] {
            let w = try Parameter(name: "w", shape: [37], values: start)
            let optimizer = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "ademamix", hyperparameters: warmups.merging(["lr": .number(0.01)]) { $1 }),
                                                                parameters: [w])
            if let value = warmups["t_alpha"] { #expect(try optimizer.hyperparameters(group: 0)["t_alpha"] == value) }
            for gradient in gradients {
                try w.setGradient(gradient)
                try optimizer.step()
            }
            results.append(w.valueArray)
        }
        #expect(bits(results[0]) == bits(results[1]), "t_alpha = t_beta3 = 0 differs from null")
        #expect(results[0] != results[2], "the warm-ups changed nothing")
    }

    /// The norms are summed over fixed chunks in chunk order: a tensor of several chunks gives the
    /// same bits, and the same metrics, on 1, 2 and 3 threads.
    @Test(arguments: ["lamb", "lars"])
    func trustRatioDoesNotDependOnTheThreadCount(name: String) throws {
        var random = SplitMix(seed: 17)
        let count = 100_003
        let start = random.floats(count), gradients = (0..<3).map { _ in random.floats(count) }
        var results: [[Float]] = [], norms: [Double] = []
        for threads in [1, 2, 3] {
            let w = try Parameter(name: "w", shape: [count], values: start)
            let optimizer = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: name, hyperparameters: ["weight_decay": .number(0.01)]),
                                                                parameters: [w], threadPool: ThreadPool(threadCount: threads))
            var metrics: OptimizerMetrics?
            for gradient in gradients {
                try w.setGradient(gradient)
                metrics = try optimizer.step(collectingMetrics: true)
            }
            results.append(w.valueArray)
            norms.append(try #require(metrics?.values["l2_norm/update/w"]))
        }
        #expect(bits(results[0]) == bits(results[1]) && bits(results[0]) == bits(results[2]), "\(name)")
        #expect(norms[0] == norms[1] && norms[0] == norms[2], "\(name): \(norms)")
        #expect(results[0] != start, "\(name) did not move")
    }

    /// A zero parameter (or a zero update) takes the trust ratio 1: the first LAMB step from zeros
    /// is Adam's, `−lr·g/(|g| + eps)` ≈ `−lr·sign(g)` (within 1e-5 for |g| ≥ 0.1).
    @Test func lambFromZerosStepsAsAdam() throws {
        let w = try Parameter(name: "w", shape: [4], values: [0, 0, 0, 0])
        let optimizer = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "lamb", hyperparameters: ["lr": .number(0.1)]), parameters: [w])
        try w.setGradient([0.5, -0.25, 1, -0.1])
        try optimizer.step()
        for (value, expected) in zip(w.valueArray, [-0.1, 0.1, -0.1, 0.1] as [Float]) {
            #expect(abs(value - expected) < 1e-5, "\(w.valueArray)")
        }
    }
}
