import Foundation
import Optim
import OptimDistributed
import Testing

/// Prodigy is its own class (a global step size `d` between two passes), so beside the generic
/// suites it has these: the learning-rate rule, first-group-only keys, `growth_rate`'s infinity,
/// the early return, checkpoints resumed bit for bit over groups, refused restores, ZeRO-1.
@Suite struct ProdigyTests {
    static func model(seed: UInt64) throws -> [Parameter] {
        var random = SplitMix(seed: seed)
        return try [("w", [6, 5]), ("b", [5]), ("s", []), ("t", [2, 3, 4])].map {
            try Parameter(name: $0.0, shape: $0.1, values: random.floats($0.1.reduce(1, *)))
        }
    }

    /// Three groups: the defaults at lr 1 with d0 1e-3; own decay, eps and safeguard; lr 0 with its own d0 and slice_p.
    static func optimizer(_ parameters: [Parameter], _ extra: HyperparameterDictionary = [:]) throws -> Prodigy {
        let configuration = OptimizerConfiguration(name: "prodigy", hyperparameters: ["d0": .number(1e-3)].merging(extra) { $1 })
        let groups = [ParameterGroupConfiguration([parameters[0]]),
                      ParameterGroupConfiguration([parameters[1], parameters[2]],
                                                  overrides: ["weight_decay": .number(0.05), "eps": .number(1e-6), "safeguard_warmup": .bool(true)]),
                      ParameterGroupConfiguration([parameters[3]], overrides: ["lr": .number(0), "d0": .number(1e-2), "slice_p": .number(2)])]
        return try #require(try OptimizerRegistry.makeOptimizer(configuration, groups: groups) as? Prodigy)
    }

    static func train(_ optimizer: Prodigy, _ parameters: [Parameter], steps: Range<Int>) throws {
        for step in steps {
            var random = SplitMix(seed: UInt64(500 + step))
            for (index, parameter) in parameters.enumerated() {
                // A quadratic pull towards 0.3 with noise, so that d grows; `b` misses some steps.
                if index == 1 && step % 4 == 2 {
                    parameter.zeroGradient()
                } else {
                    try parameter.setGradient(zip(parameter.valueArray, random.floats(parameter.count)).map { $0 - 0.3 + 0.1 * $1 })
                }
            }
            try optimizer.step()
        }
    }

    static func state(_ optimizer: Prodigy, _ parameters: [Parameter]) throws -> [String: [UInt32]] {
        var result: [String: [UInt32]] = ["d": [UInt32(truncatingIfNeeded: optimizer.d.bitPattern), UInt32(optimizer.d.bitPattern >> 32)],
                                          "k": [UInt32(optimizer.k)]]
        for parameter in parameters {
            result[parameter.name] = bits(parameter.valueArray)
            for (name, values) in try optimizer.state(of: parameter) { result["\(parameter.name)/\(name)"] = bits(values) }
            result["\(parameter.name)/steps"] = [UInt32(try optimizer.stepCount(of: parameter))]
        }
        return result
    }

    @Test(arguments: [[:], ["betas": .numbers([0, 0.99]), "decouple": .bool(false), "weight_decay": .number(0.1)],
                      ["use_bias_correction": .bool(true), "growth_rate": .number(1.05), "beta3": .number(0.9)]] as [HyperparameterDictionary])
    func checkpointResumesBitForBit(extra: HyperparameterDictionary) throws {
        let straightParameters = try Self.model(seed: 1)
        let straight = try Self.optimizer(straightParameters, extra)
        try Self.train(straight, straightParameters, steps: 0..<12)
        #expect(straight.k == 12 && straight.d != 1e-3, "d must have moved")

        let firstParameters = try Self.model(seed: 1)
        let first = try Self.optimizer(firstParameters, extra)
        try Self.train(first, firstParameters, steps: 0..<5)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-prodigy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("state.safetensors")
        try Checkpoint.save(first, to: url)

        // Other values everywhere: everything must come from the file (parameter values as a model would load them).
        let resumedParameters = try Self.model(seed: 99)
        let resumed = try Self.optimizer(resumedParameters, extra)
        try Self.train(resumed, resumedParameters, steps: 0..<2)
        for (target, source) in zip(resumedParameters, firstParameters) { try target.setValues(source.valueArray) }
        try Checkpoint.load(from: url, into: resumed)
        #expect(resumed.d == first.d && resumed.dMax == first.dMax && resumed.dNumerator == first.dNumerator && resumed.k == 5)
        try Self.train(resumed, resumedParameters, steps: 5..<12)
        #expect(try Self.state(resumed, resumedParameters) == Self.state(straight, straightParameters))
    }

    @Test func refusedRestoresChangeNothing() throws {
        let parameters = try Self.model(seed: 2)
        let optimizer = try Self.optimizer(parameters)
        try Self.train(optimizer, parameters, steps: 0..<3)
        let good = optimizer.snapshot()
        let before = try Self.state(optimizer, parameters)
        var variants: [(String, OptimizerSnapshot)] = []
        var snapshot = good
        snapshot.wrapper["d"] = nil
        variants.append(("'d'", snapshot))
        snapshot = good
        snapshot.wrapper["k"] = 2.5
        variants.append(("global state", snapshot))
        snapshot = good
        snapshot.parameters["w"]!.buffers["exp_avg"] = [1, 2]
        variants.append(("'exp_avg' holds 2 values", snapshot))
        snapshot = good
        snapshot.parameters["t"]!.buffers["s"] = nil
        variants.append(("state buffers", snapshot))
        snapshot = good
        snapshot.groups[1].hyperparameters["betas"] = .numbers([0.5, 0.9])
        variants.append(("first-group-only", snapshot))
        snapshot = good
        snapshot.optimizer = "adamw"
        variants.append(("not 'prodigy'", snapshot))
        for (text, bad) in variants {
            do {
                try optimizer.restore(bad)
                Issue.record("accepted a snapshot with bad \(text)")
            } catch {
                #expect("\(error)".contains(text), "\(error)")
            }
            #expect(try Self.state(optimizer, parameters) == before, "a refused restore changed the optimizer (\(text))")
        }
        try optimizer.restore(good)
        #expect(try Self.state(optimizer, parameters) == before)
    }

    @Test func learningRateRuleIsCheckedWhenBuildingAndStepping() throws {
        let parameters = try Self.model(seed: 3)
        // Building: a group's lr other than the largest or 0.
        let groups = [ParameterGroupConfiguration([parameters[0]]), ParameterGroupConfiguration([parameters[1]], overrides: ["lr": .number(0.3)])]
        #expect { try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "prodigy"), groups: groups) } throws: { error in
            "\(error)".contains("group 1 has lr 0.3") && "\(error)".contains("largest one (1) or 0")
        }
        // The constructor's lr must be > 0, as prodigyopt's; all groups at 0 is refused too.
        #expect(throws: OptimError.self) { try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "prodigy", hyperparameters: ["lr": .number(0)]), parameters: [parameters[0]]) }
        #expect(throws: OptimError.self) { try Prodigy([parameters[0]], hyperparameters: .init(learningRate: 0)) }

        // Stepping: a scheduler may set groups one by one, but a step with mixed rates throws and changes nothing.
        let optimizer = try Self.optimizer(parameters)
        try Self.train(optimizer, parameters, steps: 0..<2)
        try optimizer.setLearningRate(0.5, group: 0)
        let before = try Self.state(optimizer, parameters)
        for parameter in parameters { try parameter.setGradient([Float](repeating: 0.25, count: parameter.count)) }
        #expect { try optimizer.step() } throws: { "\($0)".contains("group 0 has lr 0.5") }
        #expect(try Self.state(optimizer, parameters) == before)
        try optimizer.setLearningRate(0.5, group: 1)
        try optimizer.step()
        #expect(optimizer.k == 3)
        #expect(throws: OptimError.self) { try optimizer.setLearningRate(-1, group: 0) }
        #expect(throws: OptimError.self) { try optimizer.setLearningRate(.nan, group: 0) }
    }

    @Test func firstGroupOnlyKeysAndBadValuesAreRefused() throws {
        let parameters = try Self.model(seed: 4)
        for key in Prodigy.globalKeys {
            let value: HyperparameterValue = switch key {
            case "betas": .numbers([0.8, 0.99])
            case "decouple", "use_bias_correction", "fsdp_in_use": .bool(false)
            default: .number(2)
            }
            let groups = [ParameterGroupConfiguration([parameters[0]]), ParameterGroupConfiguration([parameters[1]], overrides: [key: value])]
            #expect { try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "prodigy"), groups: groups) } throws: { error in
                "\(error)".contains("'\(key)'") && "\(error)".contains("first group only")
            }
        }
        // The typed initializer: a group that differs in a first-group-only value.
        #expect { try Prodigy(groups: [.init([parameters[0]], .init()), .init([parameters[1]], .init(dCoef: 2))]) } throws: { error in
            "\(error)".contains("d_coef") && "\(error)".contains("first group only")
        }
        func refused(_ dictionary: HyperparameterDictionary, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(sourceLocation: sourceLocation) {
                try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "prodigy", hyperparameters: dictionary), parameters: [parameters[0]])
            } throws: { "\($0)".contains(text) }
        }
        refused(["fsdp_in_use": .bool(true)], "fsdp_in_use")
        refused(["slice_p": .number(0)], "slice_p")
        refused(["slice_p": .number(1.5)], "slice_p")
        refused(["d0": .number(0)], "d0")
        refused(["d_coef": .number(-1)], "d_coef")
        refused(["eps": .number(0)], "eps")
        refused(["growth_rate": .number(0)], "growth_rate")
        refused(["betas": .numbers([0.9, 1])], "betas[1]")
        refused(["beta3": .number(1.5)], "beta3")
        refused(["decouple": .number(1)], "decouple")
        refused(["momentum": .number(0.9)], "momentum")
    }

    @Test func growthRateInfinityIsOmittedOrNull() throws {
        let w = try Parameter(name: "w", shape: [2], values: [1, 2])
        for dictionary: HyperparameterDictionary in [[:], ["growth_rate": .null]] {
            let optimizer = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "prodigy", hyperparameters: dictionary), parameters: [w])
            let hyperparameters = try optimizer.hyperparameters(group: 0)
            #expect(hyperparameters["growth_rate"] == nil)
            #expect(try Prodigy.Hyperparameters(hyperparameters).growthRate == .infinity)
        }
        let limited = try Prodigy.Hyperparameters(["growth_rate": .number(1.02)])
        #expect(limited.growthRate == 1.02 && limited.dictionary["growth_rate"] == .number(1.02))
        #expect(Prodigy.info.defaults["growth_rate"] == nil && Prodigy.info.defaults["fsdp_in_use"] == .bool(false))
    }

    @Test func allZeroGradientsReturnEarlyButKeepTheMoments() throws {
        // prodigyopt returns before the update when Σ|s| = 0: nothing moves, k and d stay, no step counts.
        let parameters = try Self.model(seed: 5)
        let optimizer = try Self.optimizer(parameters)
        let start = parameters.map(\.valueArray)
        for parameter in parameters { try parameter.setGradient([Float](repeating: 0, count: parameter.count)) }
        try optimizer.step()
        #expect(parameters.map(\.valueArray) == start)
        #expect(optimizer.k == 0 && optimizer.d == 1e-3)
        #expect(try optimizer.stepCount(of: parameters[0]) == 0)
        #expect(try optimizer.state(of: parameters[0])["p0"] == start[0])
        // Then a real gradient: the first step moves the parameters of lr > 0 groups.
        try Self.train(optimizer, parameters, steps: 0..<1)
        #expect(optimizer.k == 1 && parameters[0].valueArray != start[0])
        #expect(try optimizer.stepCount(of: parameters[0]) == 1)
    }

    /// ZeRO-1: the shards all-reduce the exact sums, so a sharded run equals the unsharded one bit
    /// for bit — parameters, gathered state and d — also with slice_p cutting across shard
    /// boundaries, an lr-0 group and β1 = 0 with coupled decay.
    @Test(arguments: [["d0": .number(1e-3), "slice_p": .number(3), "lr": .number(1)],
                      ["d0": .number(1e-3), "betas": .numbers([0, 0.99]), "decouple": .bool(false), "growth_rate": .number(1.1)]] as [HyperparameterDictionary],
          [2, 3, 7])
    func shardedEqualsUnsharded(hyperparameters: HyperparameterDictionary, ranks: Int) throws {
        var scenario = DistributedTests.Scenario("prodigy")
        scenario.configuration = OptimizerConfiguration(name: "prodigy", hyperparameters: hyperparameters)
        let want = try DistributedTests.reference(scenario, ranks: ranks)
        let outcomes = try DistributedTests.distributed(scenario, ranks: ranks, sharded: true)
        for (rank, got) in outcomes.enumerated() { DistributedTests.expectEqual(got, want, "prodigy sharded, rank \(rank) of \(ranks)") }
        // The all-reduced sums were used: d̂ (compared bit for bit with the rest of the state) is theirs.
        let numerator = try #require(want.snapshot.wrapper["d_numerator"]), denominator = try #require(want.snapshot.wrapper["d_denom"])
        #expect(numerator != 0 && denominator > 0 && want.snapshot.wrapper["d_hat"] == 1 * numerator / denominator)
    }

    @Test func shardedCheckpointsMoveBetweenWorldSizes() throws {
        // Saved by 3 sharded ranks, restored by 2 and by one unsharded optimizer: the same state.
        var scenario = DistributedTests.Scenario("prodigy")
        scenario.configuration = OptimizerConfiguration(name: "prodigy", hyperparameters: ["d0": .number(1e-3), "slice_p": .number(2)])
        let full = try DistributedTests.distributed(scenario, ranks: 3, sharded: true)[0].snapshot
        let parameters = try scenario.makeParameters(rank: 0)
        let unsharded = try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(parameters))
        try unsharded.restore(full)
        #expect(unsharded.snapshot() == full)
        let fixed = scenario
        let regathered = try LocalCommunicatorGroup(size: 2, timeout: 60).run { communicator in
            let parameters = try fixed.makeParameters(rank: 0)
            let sharded = try ShardedOptimizer(fixed.configuration, groups: fixed.groups(parameters), communicator: communicator)
            try sharded.restore(full)
            return try sharded.gatherSnapshot()
        }
        for snapshot in regathered { #expect(try snapshot.get() == full) }
    }

    @Test func stateBytesFollowSliceP() throws {
        let w = try Parameter(name: "w", shape: [12], values: (0..<12).map(Float.init))
        let optimizer = try Prodigy([w], hyperparameters: .init(sliceP: 3))
        try w.setGradient([Float](repeating: 1, count: 12))
        try optimizer.step()
        #expect(optimizer.optimizerStateBytes == 4 * (12 + 12 + 4 + 4))
        #expect(try optimizer.state(of: w)["p0"] == [0, 3, 6, 9])
    }
}
