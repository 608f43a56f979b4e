import Foundation
import Optim
import OptimDistributed
import Testing

/// Data-parallel and sharded (ZeRO-1) training over an in-process group of ranks, each a thread,
/// against a single process that averages every rank's gradients itself. The in-process group
/// adds in rank order, as the reference does, so parameters and state must match bit for bit.
@Suite struct DistributedTests {
    // MARK: the scenario

    /// A small model of two groups (weights with decay, the rest without) whose 67 elements
    /// split unevenly over 2 and 3 ranks, synthetic gradients per (step, rank, element), a
    /// parameter some ranks have no gradient for, a step where one has none anywhere, global
    /// clipping and a schedule.
    struct Scenario: Sendable {
        var configuration: OptimizerConfiguration
        var shapes: [(name: String, shape: [Int])] = [("w1", [7, 5]), ("b1", [7]), ("w2", [3, 7]), ("b2", [3]), ("scale", [])]
        var steps = 20
        var bucketBytes = 40  // 10 floats: many buckets, presence flags and tensors across bucket edges
        var maxNorm: Double? = 0.5
        var metricsSteps: Set<Int> = [9, 19]
        var nonFinite: (step: Int, rank: Int)?
        var policy = NonFinitePolicy.propagate
        /// Switch to eval mode after the last step (schedule-free: the parameters move to x).
        var evaluateAtEnd = false

        init(_ name: String) {
            configuration = defaultConfiguration(name, name == "lookahead" ? ["k": .number(3)] : ["lr": .number(0.01)])
        }

        func makeParameters(rank: Int) throws -> [Parameter] {
            var random = SplitMix(seed: 7 + UInt64(rank))  // ranks start apart; the broadcast aligns them
            return try shapes.map { try Parameter(name: $0.name, shape: $0.shape, values: random.floats($0.shape.reduce(1, *))) }
        }

        func groups(_ parameters: [Parameter]) -> [ParameterGroupConfiguration] {
            // composer's decoupled decay is not scaled by lr (and warns from 1e-3 on).
            (try? ParameterGrouping.decaysWeights(configuration)) != true
            ? [ParameterGroupConfiguration(parameters)]
            : ParameterGrouping.weightDecayGroups(parameters, weightDecay: configuration.name.hasPrefix("decoupled") ? 5e-4 : 0.05)
        }

        /// Rank `rank`'s gradient of parameter `index` at `step`, or nil when it has none.
        func gradient(step: Int, rank: Int, index: Int, count: Int) -> [Float]? {
            if index == 3, rank == 1, step % 3 == 1 { return nil }  // b2: missing on rank 1 now and then
            if index == 4, step == 5 { return nil }                 // scale: missing everywhere once
            if count == 0, rank == 0 { return nil }                 // an empty tensor: missing on rank 0
            var values = (0..<count).map { Float(sin(Double(step * 131 + rank * 17 + index * 7 + $0) * 0.37)) * (1 + Float(rank)) }
            if let nonFinite, nonFinite.step == step, nonFinite.rank == rank, index == 2 { values[count / 2] = .nan }
            return values
        }

        func setGradients(_ parameters: [Parameter], step: Int, rank: Int) throws {
            for (index, parameter) in parameters.enumerated() {
                if let gradient = gradient(step: step, rank: rank, index: index, count: parameter.count) {
                    try parameter.setGradient(gradient)
                } else {
                    parameter.zeroGradient()
                }
            }
        }

        func schedule() -> any LearningRateSchedule { SequentialSchedule.warmupCosine(warmupSteps: 3, totalSteps: steps, floor: 0.1) }
    }

    /// What a run ends with, on one rank.
    struct Outcome: Sendable {
        var values: [[Float]]
        var snapshot: OptimizerSnapshot
        var metrics: [Int: OptimizerMetrics] = [:]
        var norms: [Double] = []
        var stateBytes: Int?
    }

    /// One process over the global batch: the mean of every rank's gradients, added in rank order.
    static func reference(_ scenario: Scenario, ranks: Int) throws -> Outcome {
        let parameters = try scenario.makeParameters(rank: 0)
        let optimizer = try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(parameters))
        optimizer.nonFinitePolicy = scenario.policy
        let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
        var outcome = Outcome(values: [], snapshot: optimizer.snapshot())
        for step in 0..<scenario.steps {
            for (index, parameter) in parameters.enumerated() {
                let gradients = (0..<ranks).map { scenario.gradient(step: step, rank: $0, index: index, count: parameter.count) }
                guard gradients.contains(where: { $0 != nil }) else {
                    parameter.zeroGradient()
                    continue
                }
                var sum = gradients[0] ?? Array(repeating: 0, count: parameter.count)
                for rank in 1..<ranks {
                    let term = gradients[rank] ?? Array(repeating: 0, count: parameter.count)
                    for element in sum.indices { sum[element] += term[element] }
                }
                try parameter.setGradient(sum.map { $0 / Float(ranks) })
            }
            if let maxNorm = scenario.maxNorm { outcome.norms.append(try optimizer.clipGradientNorm(maxNorm: maxNorm)) }
            if let metrics = try optimizer.step(collectingMetrics: scenario.metricsSteps.contains(step)) { outcome.metrics[step] = metrics }
            try scheduler.step()
        }
        if scenario.evaluateAtEnd { try optimizer.eval() }
        outcome.values = parameters.map(\.valueArray)
        outcome.snapshot = optimizer.snapshot()
        outcome.stateBytes = optimizer.optimizerStateBytes
        return outcome
    }

    /// The same run on `ranks` in-process ranks, data parallel, with sharded state or not.
    static func distributed(_ scenario: Scenario, ranks: Int, sharded: Bool) throws -> [Outcome] {
        let group = try LocalCommunicatorGroup(size: ranks, timeout: 120)
        return try group.run { communicator in
            let parameters = try scenario.makeParameters(rank: communicator.rank)
            let dataParallel = try DataParallel(parameters, communicator: communicator, bucketBytes: scenario.bucketBytes)
            let optimizer: any Optimizer = sharded
                ? try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator, bucketBytes: scenario.bucketBytes)
                : try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(parameters))
            optimizer.nonFinitePolicy = scenario.policy
            let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
            var outcome = Outcome(values: [], snapshot: optimizer.snapshot())
            for step in 0..<scenario.steps {
                try scenario.setGradients(parameters, step: step, rank: communicator.rank)
                try dataParallel.averageGradients()
                if let maxNorm = scenario.maxNorm { outcome.norms.append(try optimizer.clipGradientNorm(maxNorm: maxNorm)) }
                if let metrics = try optimizer.step(collectingMetrics: scenario.metricsSteps.contains(step)) { outcome.metrics[step] = metrics }
                try scheduler.step()
            }
            if scenario.evaluateAtEnd { try optimizer.eval() }
            outcome.values = parameters.map(\.valueArray)
            outcome.snapshot = try (optimizer as? ShardedOptimizer)?.gatherSnapshot() ?? optimizer.snapshot()
            outcome.stateBytes = optimizer.optimizerStateBytes
            return outcome
        }.map { try $0.get() }
    }

    /// Checks a rank's outcome against the reference: values, state and norms bit for bit,
    /// metrics within float rounding.
    static func expectEqual(_ got: Outcome, _ want: Outcome, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(got.values.map(bits) == want.values.map(bits), "\(what): parameters differ", sourceLocation: sourceLocation)
        #expect(got.snapshot == want.snapshot, "\(what): optimizer state differs", sourceLocation: sourceLocation)
        #expect(got.norms.map(\.bitPattern) == want.norms.map(\.bitPattern), "\(what): gradient norms differ", sourceLocation: sourceLocation)
        expectClose(got.metrics, want.metrics, what, sourceLocation: sourceLocation)
    }

    static func expectClose(_ got: [Int: OptimizerMetrics], _ want: [Int: OptimizerMetrics], _ what: String,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(got.keys.sorted() == want.keys.sorted(), "\(what): metrics at steps \(got.keys.sorted()), want \(want.keys.sorted())", sourceLocation: sourceLocation)
        for (step, wanted) in want {
            guard let values = got[step]?.values else { continue }
            let expected = wanted.values
            #expect(values.keys.sorted() == expected.keys.sorted(), "\(what) step \(step): metric names differ", sourceLocation: sourceLocation)
            for (key, value) in expected {
                guard let actual = values[key] else { continue }
                #expect(abs(actual - value) <= 1e-9 + 1e-6 * abs(value), "\(what) step \(step) \(key): \(actual) vs \(value)", sourceLocation: sourceLocation)
            }
        }
    }

    // MARK: equivalence

    @Test("data parallel equals a single process over 20 steps", arguments: vectorOptimizers, [2, 3])
    func dataParallelEqualsSingleProcess(_ name: String, ranks: Int) throws {
        let scenario = Scenario(name)
        let want = try Self.reference(scenario, ranks: ranks)
        let outcomes = try Self.distributed(scenario, ranks: ranks, sharded: false)
        for (rank, got) in outcomes.enumerated() { Self.expectEqual(got, want, "\(name), rank \(rank) of \(ranks)") }
        #expect(want.values.map(bits) != (try scenario.makeParameters(rank: 0)).map { bits($0.valueArray) }, "the run must move the parameters")
    }

    /// The optimizers ZeRO-1 takes: elementwise ones (the others are refused, tested below), and
    /// Prodigy, whose only whole-model quantities are two sums its shards all-reduce.
    static let shardable = OptimizerRegistry.all.filter { !$0.updatesWholeTensors && !$0.requiresMatrices }.map(\.name) + ["prodigy"]

    @Test("sharded state (ZeRO-1) equals a single process over 20 steps", arguments: shardable, [2, 3])
    func shardedEqualsSingleProcess(_ name: String, ranks: Int) throws {
        let scenario = Scenario(name)
        let want = try Self.reference(scenario, ranks: ranks)
        let outcomes = try Self.distributed(scenario, ranks: ranks, sharded: true)
        for (rank, got) in outcomes.enumerated() { Self.expectEqual(got, want, "\(name) sharded, rank \(rank) of \(ranks)") }
    }

    @Test("schedule-free's eval() on sharded state moves every rank's parameters to the single process's x",
          arguments: ["schedule_free_adamw", "schedule_free_sgd"])
    func shardedScheduleFreeEvaluatesAtTheAverage(_ name: String) throws {
        var scenario = Scenario(name)
        scenario.evaluateAtEnd = true
        let want = try Self.reference(scenario, ranks: 3)
        var trainMode = scenario
        trainMode.evaluateAtEnd = false
        #expect(want.values.map(bits) != (try Self.reference(trainMode, ranks: 3)).values.map(bits), "eval() must move the parameters")
        for (rank, got) in try Self.distributed(scenario, ranks: 3, sharded: true).enumerated() {
            Self.expectEqual(got, want, "\(name) sharded eval, rank \(rank) of 3")
        }
    }

    @Test("sharded equals unsharded data parallel, with the default bucket size")
    func shardedEqualsUnsharded() throws {
        var scenario = Scenario("adamw")
        scenario.bucketBytes = DataParallel.defaultBucketBytes
        let unsharded = try Self.distributed(scenario, ranks: 3, sharded: false)
        let sharded = try Self.distributed(scenario, ranks: 3, sharded: true)
        for rank in 0..<3 { Self.expectEqual(sharded[rank], unsharded[rank], "rank \(rank)") }
    }

    @Test("whole-tensor optimizers are refused by ZeRO-1 with a message that says why",
          arguments: OptimizerRegistry.all.filter(\.updatesWholeTensors).map(\.name).filter { $0 != "prodigy" })
    func wholeTensorOptimizersAreNotSharded(_ name: String) throws {
        let messages = try LocalCommunicatorGroup(size: 2, timeout: 60).run { communicator in
            let w = try Parameter(name: "w", shape: [3, 4])
            do {
                _ = try ShardedOptimizer(OptimizerConfiguration(name: name), groups: [.init([w])], communicator: communicator)
                return "sharded"
            } catch {
                return "\(error)"
            }
        }
        for message in messages { #expect((try? message.get())?.contains("whole tensors") == true, "\(name): \(message)") }
    }

    @Test("reduced metrics equal single-process metrics", arguments: ["adamw", "sgd", "lion"])
    func reducedMetricsEqualSingleProcessMetrics(_ name: String) throws {
        var scenario = Scenario(name)
        if name == "sgd" { scenario.configuration.hyperparameters["momentum"] = .number(0.9) }
        scenario.metricsSteps = Set(0..<scenario.steps)
        let want = try Self.reference(scenario, ranks: 3)
        let outcomes = try Self.distributed(scenario, ranks: 3, sharded: true)
        for (rank, got) in outcomes.enumerated() {
            Self.expectClose(got.metrics, want.metrics, "\(name), rank \(rank)")
            // Every rank reports the same global values, and they cover every parameter with a gradient.
            #expect(got.metrics.mapValues(\.values) == outcomes[0].metrics.mapValues(\.values))
        }
        let names = Set(try #require(want.metrics[5]).sums.keys)
        #expect(names == ["w1", "b1", "w2", "b2"], "scale had no gradient at step 5: no metrics for it")
        #expect(try #require(outcomes[0].metrics[5]).sums.keys.sorted() == names.sorted())
    }

    @Test("uneven shares of a global batch: summed gradients are the global-batch mean")
    func sumGradientsForUnevenShares() throws {
        // 7 samples over 3 ranks: 3, 2, 2. Each rank divides its own samples' sum by 7.
        let samples = (0..<7).map { sample in (0..<10).map { Float(sin(Double(sample * 10 + $0))) } }
        let shares = [0..<3, 3..<5, 5..<7]
        var mean = [Float](repeating: 0, count: 10)
        for sample in samples { for index in mean.indices { mean[index] += sample[index] } }
        mean = mean.map { $0 / 7 }
        let group = try LocalCommunicatorGroup(size: 3)
        let results = try group.run { communicator in
            let weight = try Parameter(name: "w", shape: [10])
            let dataParallel = try DataParallel([weight], communicator: communicator)
            var local = [Float](repeating: 0, count: 10)
            for sample in shares[communicator.rank] { for index in local.indices { local[index] += samples[sample][index] } }
            try weight.setGradient(local.map { $0 / 7 })
            try dataParallel.sumGradients()
            return weight.gradientArray!
        }.map { try $0.get() }
        for gradient in results {
            #expect(gradient.map(\.bitPattern) == results[0].map(\.bitPattern))
            for (got, want) in zip(gradient, mean) { #expect(abs(got - want) <= 1e-6 * max(1, abs(want))) }
        }
    }

    // MARK: partition and memory

    @Test func unevenPartitionOverThreeRanks() throws {
        let scenario = Scenario("adam")
        let group = try LocalCommunicatorGroup(size: 3)
        let shards = try group.run { communicator in
            let parameters = try scenario.makeParameters(rank: communicator.rank)
            let optimizer = try ShardedOptimizer(scenario.configuration, parameters: parameters, communicator: communicator)
            return (optimizer.partition, try parameters.map { try optimizer.shardRange(of: $0) })
        }.map { try $0.get() }
        // 67 elements: 23 + 22 + 22 (the remainder to the first ranks), contiguous, covering everything once.
        #expect(shards[0].0 == [0..<23, 23..<45, 45..<67])
        for shard in shards { #expect(shard.0 == shards[0].0) }
        // w1 (35 elements) is split between ranks 0 and 1; b1 (35..<42) is wholly on rank 1.
        #expect(shards[0].1[0] == 0..<23 && shards[1].1[0] == 23..<35 && shards[2].1[0].isEmpty)
        #expect(shards[0].1[1].isEmpty && shards[1].1[1] == 0..<7 && shards[2].1[1].isEmpty)
        for index in 0..<5 {
            #expect(shards.map { $0.1[index].count }.reduce(0, +) == scenario.shapes[index].shape.reduce(1, *))
        }
    }

    @Test("more ranks than elements: a rank with nothing to update still takes part")
    func moreRanksThanElements() throws {
        var scenario = Scenario("adamw")
        scenario.shapes = [("w1", [1]), ("b1", [1]), ("empty", [0])]
        scenario.maxNorm = nil
        scenario.metricsSteps = [3]
        let want = try Self.reference(scenario, ranks: 3)
        let outcomes = try Self.distributed(scenario, ranks: 3, sharded: true)
        for (rank, got) in outcomes.enumerated() { Self.expectEqual(got, want, "rank \(rank)") }
        #expect(outcomes.map(\.stateBytes) == [8, 8, 0], "AdamW: two 4-byte moments for each rank's one element; none on rank 2")
    }

    @Test("optimizer state per rank is 1/world of the unsharded state", arguments: ["adamw", "sgd", "lookahead"])
    func stateMemoryPerRank(_ name: String) throws {
        var scenario = Scenario(name)
        if name == "sgd" { scenario.configuration.hyperparameters["momentum"] = .number(0.9) }
        scenario.shapes = [("w1", [300, 100]), ("b1", [300]), ("w2", [10, 300]), ("b2", [10]), ("scale", [])]
        scenario.steps = 2
        scenario.bucketBytes = 1 << 16
        let unsharded = try #require(try Self.reference(scenario, ranks: 4).stateBytes)
        let perRank = try Self.distributed(scenario, ranks: 4, sharded: true).map { try #require($0.stateBytes) }
        let buffers = unsharded / (33_311 * 4)  // state buffers per parameter element
        #expect(perRank.reduce(0, +) == unsharded)
        for bytes in perRank { #expect(abs(bytes - unsharded / 4) <= buffers * 4, "\(bytes) bytes on a rank, \(unsharded) unsharded") }
        print("optimizer state per rank, \(name), 33,311 parameters: unsharded \(unsharded) bytes; sharded over 4 ranks \(perRank) bytes (\(String(format: "%.3f", Double(perRank.max()!) / Double(unsharded))) of unsharded)")
    }

    @Test("ranks stepping concurrently on the shared thread pool, above its parallel threshold")
    func largeModelOnTheSharedPool() throws {
        var scenario = Scenario("adamw")
        scenario.shapes = [("w1", [500, 300]), ("b1", [500]), ("w2", [200, 500]), ("b2", [200]), ("scale", [])]  // 83,567 a shard
        scenario.steps = 4
        scenario.metricsSteps = [3]
        scenario.bucketBytes = 1 << 18
        let want = try Self.reference(scenario, ranks: 3)
        for sharded in [false, true] {
            let outcomes = try Self.distributed(scenario, ranks: 3, sharded: sharded)
            for (rank, got) in outcomes.enumerated() { Self.expectEqual(got, want, "sharded \(sharded), rank \(rank)") }
        }
    }

    // MARK: non-finite gradients

    @Test("a non-finite gradient on one rank skips the step on every rank", arguments: [false, true])
    func nonFiniteGradientSkipsEverywhere(_ sharded: Bool) throws {
        var scenario = Scenario("adamw")
        scenario.nonFinite = (step: 6, rank: 2)
        scenario.policy = .skipStep
        let want = try Self.reference(scenario, ranks: 3)
        #expect(want.snapshot.skippedSteps == 1)
        let outcomes = try Self.distributed(scenario, ranks: 3, sharded: sharded)
        for (rank, got) in outcomes.enumerated() {
            #expect(got.values.map(bits) == want.values.map(bits), "rank \(rank)")
            #expect(got.snapshot == want.snapshot, "rank \(rank)")
        }
    }

    @Test func nonFiniteGradientThrowsOnEveryRank() throws {
        var scenario = Scenario("lion")
        scenario.nonFinite = (step: 2, rank: 1)
        scenario.policy = .throw
        #expect(throws: OptimError.nonFiniteGradient(parameter: "w2")) { try Self.distributed(scenario, ranks: 3, sharded: true) }
    }

    // MARK: checkpoints

    static func temporaryFile() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-distributed-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder.appendingPathComponent("state.safetensors")
    }

    @Test("a sharded checkpoint loads into an unsharded run and back", arguments: ["adamw", "lookahead", "sgd"])
    func checkpointsMoveBetweenShardedAndUnsharded(_ name: String) throws {
        let scenario = {
            var scenario = Scenario(name)
            scenario.maxNorm = nil
            scenario.metricsSteps = []
            return scenario
        }()
        let shardedFile = try Self.temporaryFile(), unshardedFile = try Self.temporaryFile()
        let steps = 8

        // Sharded over 3 ranks for 8 steps (gradients of 2 "ranks" each, to differ from the
        // unsharded run below), then an ordinary checkpoint written by rank 0.
        let group = try LocalCommunicatorGroup(size: 3)
        let sharded = try group.run { communicator in
            let parameters = try scenario.makeParameters(rank: communicator.rank)
            let dataParallel = try DataParallel(parameters, communicator: communicator)
            let optimizer = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator)
            let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
            for step in 0..<steps {
                try scenario.setGradients(parameters, step: step, rank: communicator.rank)
                try dataParallel.averageGradients()
                try optimizer.step()
                try scheduler.step()
            }
            try optimizer.saveCheckpoint(to: shardedFile, scheduler: scheduler, metadata: ["run": "sharded"])
            return (parameters.map(\.valueArray), try optimizer.gatherSnapshot())
        }.map { try $0.get() }
        #expect(FileManager.default.fileExists(atPath: shardedFile.path))

        // Loaded into one unsharded process: the same parameters and the same state.
        let parameters = try scenario.makeParameters(rank: 5)
        let unsharded = try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(parameters))
        let scheduler = try LearningRateScheduler(unsharded, schedule: scenario.schedule())
        let metadata = try Checkpoint.load(from: shardedFile, into: unsharded, scheduler: scheduler)
        #expect(metadata["run"] == "sharded" && scheduler.stepCount == steps)
        #expect(parameters.map { bits($0.valueArray) } == sharded[0].0.map(bits))
        #expect(unsharded.snapshot() == sharded[0].1)

        // The unsharded run trains on and saves; a sharded run over 2 ranks loads it back.
        for step in steps..<(steps + 4) {
            for (index, parameter) in parameters.enumerated() {
                try parameter.setGradient(scenario.gradient(step: step, rank: 0, index: index, count: parameter.count) ?? Array(repeating: 0, count: parameter.count))
            }
            try unsharded.step()
            try scheduler.step()
        }
        try Checkpoint.save(unsharded, scheduler: scheduler, to: unshardedFile)
        let pair = try LocalCommunicatorGroup(size: 2)
        let reloaded = try pair.run { communicator in
            let parameters = try scenario.makeParameters(rank: 9)
            let optimizer = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator)
            let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
            try Checkpoint.load(from: unshardedFile, into: optimizer, scheduler: scheduler)
            return (parameters.map(\.valueArray), try optimizer.gatherSnapshot(), scheduler.stepCount, try optimizer.learningRate(group: 0))
        }.map { try $0.get() }
        for rank in 0..<2 {
            #expect(reloaded[rank].0.map(bits) == parameters.map { bits($0.valueArray) })
            #expect(reloaded[rank].1 == unsharded.snapshot())
            let learningRate = try unsharded.learningRate(group: 0)
            #expect(reloaded[rank].2 == steps + 4 && reloaded[rank].3 == learningRate)
        }
    }

    @Test func restoreRefusesAShardSnapshot() throws {
        let scenario = Scenario("adam")
        let group = try LocalCommunicatorGroup(size: 2)
        let errors = group.run { communicator in
            let parameters = try scenario.makeParameters(rank: 0)
            let optimizer = try ShardedOptimizer(scenario.configuration, parameters: parameters, communicator: communicator)
            for parameter in parameters { try parameter.setGradient(Array(repeating: 0.5, count: parameter.count)) }
            try optimizer.step()
            let before = try optimizer.gatherSnapshot()
            var caught: OptimError?
            do { try optimizer.restore(optimizer.snapshot()) } catch let error as OptimError { caught = error }
            return (caught, try optimizer.gatherSnapshot() == before)
        }
        for outcome in errors {
            let (caught, unchanged) = try outcome.get()
            #expect(unchanged, "a refused restore changes nothing")
            guard case let .checkpointMismatch(message)? = caught else {
                Issue.record("expected a checkpoint mismatch, got \(String(describing: caught))")
                continue
            }
            #expect(message.contains("full"))
        }
    }

    // MARK: failures are loud

    @Test("ranks with different parameters get a clear error on every rank")
    func mismatchedParametersAreReportedOnEveryRank() throws {
        let group = try LocalCommunicatorGroup(size: 3, timeout: 30)
        let outcomes = group.run { communicator -> Int in
            // Rank 2 has b2 with 4 elements instead of 3.
            let shapes: [(String, [Int])] = [("w1", [7, 5]), ("b1", [7]), ("w2", [3, 7]), ("b2", [communicator.rank == 2 ? 4 : 3])]
            let parameters = try shapes.map { try Parameter(name: $0.0, shape: $0.1) }
            _ = try DataParallel(parameters, communicator: communicator)
            return 0
        }
        for (rank, outcome) in outcomes.enumerated() {
            guard case let .failure(error as DistributedError) = outcome, case let .parameterMismatch(message) = error else {
                Issue.record("rank \(rank): expected a parameter mismatch, got \(outcome)")
                continue
            }
            #expect(message.contains("rank 2 differs from rank 0"), "\(message)")
            #expect(message.contains("rank 0: 4 parameters, 66 elements; rank 2: 4 parameters, 67 elements"), "\(message)")
            if rank == 2 { #expect(message.contains("parameter #3 is 'b2' [4] in group 0 here but 'b2' [3] in group 0 on rank 0"), "\(message)") }
        }
    }

    @Test("different optimizer settings are refused before sharding")
    func mismatchedConfigurationIsReported() throws {
        let group = try LocalCommunicatorGroup(size: 2, timeout: 30)
        let outcomes = group.run { communicator -> Int in
            let parameters = try Scenario("adamw").makeParameters(rank: 0)
            let configuration = OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(communicator.rank == 1 ? 0.002 : 0.001)])
            _ = try ShardedOptimizer(configuration, parameters: parameters, communicator: communicator)
            return 0
        }
        for outcome in outcomes {
            guard case let .failure(error as DistributedError) = outcome, case let .parameterMismatch(message) = error else {
                Issue.record("expected a parameter mismatch, got \(outcome)")
                continue
            }
            #expect(message.contains("rank 1 differs from rank 0"))
        }
        if case let .failure(error as DistributedError) = outcomes[1], case let .parameterMismatch(message) = error {
            #expect(message.contains("lr=0.002") && message.contains("lr=0.001"), "\(message)")
        }
    }

    @Test("an error on one rank ends the others' collectives instead of hanging them")
    func errorOnOneRankAbortsTheGroup() throws {
        let group = try LocalCommunicatorGroup(size: 3, timeout: 60)
        let started = Date()
        let outcomes = group.run { communicator -> Int in
            let parameters = try Scenario("sgd").makeParameters(rank: communicator.rank)
            let dataParallel = try DataParallel(parameters, communicator: communicator)
            for step in 0..<10 {
                try communicator.abortingOnError {
                    if communicator.rank == 1, step == 3 { throw OptimError.invalidConfiguration("rank 1 ran out of data") }
                }
                for parameter in parameters { try parameter.setGradient(Array(repeating: 1, count: parameter.count)) }
                try dataParallel.averageGradients()
            }
            return 0
        }
        #expect(Date().timeIntervalSince(started) < 30)
        for (rank, outcome) in outcomes.enumerated() {
            guard case let .failure(error) = outcome else {
                Issue.record("rank \(rank) should have failed")
                continue
            }
            if rank == 1 {
                #expect(error as? OptimError == .invalidConfiguration("rank 1 ran out of data"))
            } else {
                #expect(error as? DistributedError == .aborted(rank: 1, message: "rank 1 ran out of data"))
            }
        }
    }

    @Test("mismatched collectives fail instead of hanging")
    func mismatchedCollectivesFail() throws {
        let group = try LocalCommunicatorGroup(size: 2, timeout: 30)
        let outcomes = group.run { communicator -> Int in
            var buffer = [Float](repeating: 1, count: communicator.rank == 0 ? 4 : 5)
            try buffer.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try communicator.allreduceSum(buffer) }
            return 0
        }
        for outcome in outcomes {
            guard case let .failure(error as DistributedError) = outcome, case let .communication(_, _, message) = error else {
                Issue.record("expected a communication error, got \(outcome)")
                continue
            }
            #expect(message.contains("allreduceSum(Float) of 4") && message.contains("allreduceSum(Float) of 5"), "\(message)")
        }
        // A rank that returns while another still waits fails the waiting one.
        let early = try LocalCommunicatorGroup(size: 2, timeout: 30)
        let results = early.run { communicator -> Int in
            if communicator.rank == 0 { try communicator.barrier() }
            return communicator.rank
        }
        #expect(throws: DistributedError.self) { try results[0].get() }
        #expect((try? results[1].get()) == 1)
    }

    @Test func invalidSettingsAreRefused() throws {
        #expect(throws: DistributedError.self) { try LocalCommunicatorGroup(size: 0) }
        let group = try LocalCommunicatorGroup(size: 1)
        let communicator = try group.communicator(rank: 0)
        let parameter = try Parameter(name: "w", shape: [3])
        #expect(throws: DistributedError.invalidConfiguration("bucket size 2 bytes; expected 4 ... 8589934588 bytes")) {
            try DataParallel([parameter], communicator: communicator, bucketBytes: 2)
        }
        #expect(throws: DistributedError.self) { try DataParallel([parameter], communicator: communicator, broadcastFrom: 1) }
        #expect(throws: OptimError.self) { try ShardedOptimizer(OptimizerConfiguration(name: "adamw"), parameters: [parameter, parameter], communicator: communicator) }
        #expect(throws: OptimError.self) { try ShardedOptimizer(OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(-1)]), parameters: [parameter], communicator: communicator) }
    }

    @Test("one rank: data parallel and sharding are the plain optimizer")
    func singleRank() throws {
        let scenario = Scenario("adopt")
        let want = try Self.reference(scenario, ranks: 1)
        for sharded in [false, true] {
            let outcomes = try Self.distributed(scenario, ranks: 1, sharded: sharded)
            Self.expectEqual(outcomes[0], want, "sharded \(sharded)")
        }
    }

    // MARK: overlap with the backward pass

    @Test("overlapped reduction, bucket by bucket as backward reports, equals sumGradients bit for bit",
          arguments: [40, 4 << 10], [0, 1, 2])
    func overlappedReductionEqualsTheBlockingOne(bucketBytes: Int, reporting: Int) throws {
        let scenario = Scenario("adamw")
        let group = try LocalCommunicatorGroup(size: 3)
        let results = try group.run { communicator in
            let parameters = try scenario.makeParameters(rank: 0)
            let dataParallel = try DataParallel(parameters, communicator: communicator, bucketBytes: bucketBytes)
            var rounds: [[[UInt32]?]] = []
            for step in 0..<6 {
                let scale = Float(communicator.rank + 1) / 6  // uneven shares of the global batch
                // Blocking: scale in place, then sum.
                try scenario.setGradients(parameters, step: step, rank: communicator.rank)
                for parameter in parameters {
                    guard let gradient = parameter.gradient else { continue }
                    for index in gradient.indices { gradient[index] *= scale }
                }
                try dataParallel.sumGradients()
                let blocking = parameters.map { $0.gradient.map { Array($0).map(\.bitPattern) } }
                // Overlapped: the same gradients reported as backward would finish them.
                try scenario.setGradients(parameters, step: step, rank: communicator.rank)
                dataParallel.beginGradientReduction(scale: scale)
                switch reporting {
                case 0: // layer by layer from the last, as a model's backward does
                    dataParallel.gradientsReady(4..<5)
                    dataParallel.gradientsReady(2..<4)
                    dataParallel.gradientsReady(0..<2)
                case 1: // out of order and repeated: buckets still start in order
                    dataParallel.gradientsReady(0..<2)
                    dataParallel.gradientsReady(0..<1)
                    dataParallel.gradientsReady(3..<5)
                    dataParallel.gradientsReady(2..<3)
                default: // nothing reported: all at the end
                    break
                }
                let timing = try dataParallel.finishGradientReduction()
                #expect(timing.buckets >= 1 && timing.exposedSeconds >= 0 && timing.communicationSeconds >= 0)
                if reporting == 2 { #expect(timing.bucketsStartedDuringBackward == 0) }
                if reporting == 0 { #expect(timing.bucketsStartedDuringBackward == timing.buckets) }
                if bucketBytes == 40 { #expect(timing.buckets == 2) }  // [w2, b2, scale] and [w1, b1]: whole tensors up to 10 floats or past them
                let overlapped = parameters.map { $0.gradient.map { Array($0).map(\.bitPattern) } }
                #expect(overlapped == blocking, "step \(step), rank \(communicator.rank)")
                rounds.append(overlapped)
            }
            return rounds
        }.map { try $0.get() }
        #expect(results[1] == results[0] && results[2] == results[0])
    }

    @Test("finishing an overlapped reduction that was never begun is an error; one rank is a no-op")
    func overlapMisuse() throws {
        let group = try LocalCommunicatorGroup(size: 2)
        let errors = group.run { communicator in
            let dataParallel = try DataParallel([try Parameter(name: "w", shape: [3])], communicator: communicator)
            dataParallel.gradientsReady(0..<1)  // outside a reduction: ignored
            _ = try dataParallel.finishGradientReduction()
        }
        for outcome in errors {
            #expect(throws: DistributedError.self) { try outcome.get() }
        }
        let single = try LocalCommunicatorGroup(size: 1)
        let alone = try single.run { communicator in
            let weight = try Parameter(name: "w", shape: [3])
            try weight.setGradient([1, 2, 3])
            let dataParallel = try DataParallel([weight], communicator: communicator)
            dataParallel.beginGradientReduction(scale: 0.5)
            dataParallel.gradientsReady(0..<1)
            let timing = try dataParallel.finishGradientReduction()
            return (weight.gradientArray!, timing.buckets)
        }.map { try $0.get() }
        #expect(alone[0].0 == [1, 2, 3] && alone[0].1 == 0)
    }


    // MARK: ZeRO-2

    /// The run on `ranks` in-process ranks with gradients and state sharded (ZeRO-2): the
    /// gradients reduce-scattered after backward, or bucket by bucket as a backward pass would
    /// report them (the last parameters first).
    static func zeroTwo(_ scenario: Scenario, ranks: Int, overlapped: Bool) throws -> [Outcome] {
        let group = try LocalCommunicatorGroup(size: ranks, timeout: 120)
        return try group.run { communicator in
            let parameters = try scenario.makeParameters(rank: communicator.rank)
            _ = try DataParallel(parameters, communicator: communicator)  // the start-up check and broadcast
            let optimizer = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator,
                                                 bucketBytes: scenario.bucketBytes, stage: .two)
            optimizer.nonFinitePolicy = scenario.policy
            let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
            var outcome = Outcome(values: [], snapshot: optimizer.snapshot())
            for step in 0..<scenario.steps {
                if overlapped {
                    // As a backward pass: each gradient written, then reported, the last first.
                    try optimizer.beginGradientReduction(averaging: true)
                    for index in parameters.indices.reversed() {
                        if let gradient = scenario.gradient(step: step, rank: communicator.rank, index: index, count: parameters[index].count) {
                            try parameters[index].setGradient(gradient)
                        } else {
                            parameters[index].zeroGradient()
                        }
                        optimizer.gradientsReady([parameters[index]])
                    }
                    try optimizer.finishGradientReduction()
                } else {
                    try scenario.setGradients(parameters, step: step, rank: communicator.rank)
                    try optimizer.reduceGradients(averaging: true)
                }
                // The full gradients are gone: each rank keeps its shard.
                #expect(parameters.allSatisfy { $0.gradient == nil }, "\(parameters.map { $0.gradient != nil }) step \(step) rank \(communicator.rank) overlapped \(overlapped)")
                if let maxNorm = scenario.maxNorm { outcome.norms.append(try optimizer.clipGradientNorm(maxNorm: maxNorm)) }
                if let metrics = try optimizer.step(collectingMetrics: scenario.metricsSteps.contains(step)) { outcome.metrics[step] = metrics }
                try scheduler.step()
            }
            outcome.values = parameters.map(\.valueArray)
            outcome.snapshot = try optimizer.gatherSnapshot()
            outcome.stateBytes = optimizer.optimizerStateBytes
            #expect(optimizer.gradientShard?.count == optimizer.shard.count)
            return outcome
        }.map { try $0.get() }
    }

    @Test("ZeRO-2 (gradients reduce-scattered, after backward or bucket by bucket) equals a single process bit for bit",
          arguments: ["adamw", "sgd", "lion", "adopt", "lookahead"], [2, 3])
    func zeroTwoEqualsSingleProcess(_ name: String, ranks: Int) throws {
        var scenario = Scenario(name)
        scenario.maxNorm = nil  // the norm of sharded gradients adds in another order: below
        let want = try Self.reference(scenario, ranks: ranks)
        for overlapped in [false, true] {
            let outcomes = try Self.zeroTwo(scenario, ranks: ranks, overlapped: overlapped)
            for (rank, got) in outcomes.enumerated() { Self.expectEqual(got, want, "\(name) ZeRO-2 overlapped \(overlapped), rank \(rank) of \(ranks)") }
        }
    }

    @Test("ZeRO-2 with global-norm clipping: the norm from the shards, the same run within float rounding", arguments: [2, 3])
    func zeroTwoClipping(ranks: Int) throws {
        let scenario = Scenario("adamw")  // maxNorm 0.5, metrics at two steps
        let want = try Self.reference(scenario, ranks: ranks)
        let outcomes = try Self.zeroTwo(scenario, ranks: ranks, overlapped: true)
        for got in outcomes {
            #expect(got.norms.count == want.norms.count)
            for (a, b) in zip(got.norms, want.norms) { #expect(abs(a - b) <= 1e-12 * max(1, b)) }
            for (a, b) in zip(got.values, want.values) { for (x, y) in zip(a, b) { #expect(abs(x - y) <= 1e-6 * max(1, abs(y))) } }
            Self.expectClose(got.metrics, want.metrics, "ZeRO-2 metrics")
        }
    }

    @Test("ZeRO-2 misuse: stepping before a reduction, or ZeRO-1 asked to reduce, is a clear error")
    func zeroTwoMisuse() throws {
        let group = try LocalCommunicatorGroup(size: 2)
        let outcomes = try group.run { communicator in
            let parameters = try Scenario("adamw").makeParameters(rank: 0)
            let two = try ShardedOptimizer(defaultConfiguration("adamw"), parameters: parameters, communicator: communicator, stage: .two)
            for parameter in parameters { try parameter.setGradient(Array(repeating: 1, count: parameter.count)) }
            var messages: [String] = []
            do { try two.step() } catch { messages.append("\(error)") }
            let one = try ShardedOptimizer(defaultConfiguration("adamw"), parameters: parameters, communicator: communicator)
            do { try one.beginGradientReduction() } catch { messages.append("\(error)") }
            return messages
        }.map { try $0.get() }
        for messages in outcomes {
            #expect(messages.count == 2)
            #expect(messages.first?.contains("needs the gradients reduced first") == true)
            #expect(messages.last?.contains("ZeRO-2") == true)
        }
    }

}
