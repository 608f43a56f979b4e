import Foundation
import Optim
import OptimDistributed
import Safetensors
import Testing

/// Sharded checkpoints (each rank writes its part of the state, one index): saved on one number
/// of in-process ranks, restored on another — or by an unsharded optimizer — bit for bit; each
/// rank's file holds only its part; damaged checkpoints are refused on every rank with nothing
/// changed.
@Suite struct ShardedCheckpointTests {
    typealias Scenario = DistributedTests.Scenario

    /// What a rank ends with: the gathered state, the parameters and the scheduler's step.
    struct Result: Sendable {
        var snapshot: OptimizerSnapshot
        var values: [[Float]]
        var schedulerStep: Int
    }

    static func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("optim-sharded-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Trains `scenario` sharded over `ranks` ranks for `scenario.steps` steps, saving a sharded
    /// checkpoint into `folder` at the end; returns every rank's result.
    static func trainAndSave(_ scenario: Scenario, ranks: Int, folder: URL) throws -> [Result] {
        try LocalCommunicatorGroup(size: ranks, timeout: 120).run { communicator in
            let parameters = try scenario.makeParameters(rank: communicator.rank)
            let dataParallel = try DataParallel(parameters, communicator: communicator)
            let optimizer = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator)
            let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
            for step in 0..<scenario.steps {
                try scenario.setGradients(parameters, step: step, rank: communicator.rank)
                try dataParallel.averageGradients()
                _ = try optimizer.step()
                try scheduler.step()
            }
            try optimizer.saveShardedCheckpoint(to: folder, scheduler: scheduler, metadata: ["note": "kept"])
            return Result(snapshot: try optimizer.gatherSnapshot(), values: parameters.map(\.valueArray), schedulerStep: scheduler.stepCount)
        }.map { try $0.get() }
    }

    /// A fresh sharded optimizer over `ranks` ranks (other parameter values, no state), after
    /// `loadShardedCheckpoint` — or after its error, as `Result` plus the error's text.
    static func load(_ scenario: Scenario, ranks: Int, folder: URL, warmUp: Bool = false) throws -> [(Result, String?)] {
        try LocalCommunicatorGroup(size: ranks, timeout: 120).run { communicator in
            var other = scenario
            other.steps = 2
            let parameters = try other.makeParameters(rank: communicator.rank + 50)
            let dataParallel = try DataParallel(parameters, communicator: communicator)
            let optimizer = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator)
            let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
            if warmUp {  // some state to keep when the load fails
                for step in 0..<other.steps {
                    try other.setGradients(parameters, step: step, rank: communicator.rank)
                    try dataParallel.averageGradients()
                    _ = try optimizer.step()
                    try scheduler.step()
                }
            }
            var message: String?
            do {
                let metadata = try optimizer.loadShardedCheckpoint(from: folder, scheduler: scheduler)
                #expect(metadata["note"] == "kept")
            } catch {
                message = "\(error)"
            }
            return (Result(snapshot: try optimizer.gatherSnapshot(), values: parameters.map(\.valueArray), schedulerStep: scheduler.stepCount), message)
        }.map { try $0.get() }
    }

    static func bits(_ values: [[Float]]) -> [[UInt32]] { values.map { $0.map(\.bitPattern) } }

    @Test("saved on 3 ranks, restored on 1, 2, 3 and 5 ranks and unsharded, bit for bit",
          arguments: ["adamw", "lookahead", "prodigy", "schedule_free_adamw", "sgd"])
    func restoresOnAnyNumberOfRanks(_ name: String) throws {
        var scenario = Scenario(name)
        if name == "sgd" { scenario.configuration.hyperparameters["momentum"] = .number(0.9) }
        scenario.steps = 6
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let saved = try Self.trainAndSave(scenario, ranks: 3, folder: folder)[0]
        for ranks in [1, 2, 3, 5] {
            for (rank, (got, error)) in try Self.load(scenario, ranks: ranks, folder: folder).enumerated() {
                #expect(error == nil, "\(name) on \(ranks) ranks, rank \(rank): \(error ?? "")")
                #expect(got.snapshot == saved.snapshot, "\(name): the state restored on \(ranks) ranks differs")
                #expect(Self.bits(got.values) == Self.bits(saved.values), "\(name): the parameters restored on \(ranks) ranks differ")
                #expect(got.schedulerStep == saved.schedulerStep)
            }
        }
        // An unsharded optimizer assembles the whole state from the shards.
        let parameters = try scenario.makeParameters(rank: 9)
        let optimizer = try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(parameters))
        let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
        try Checkpoint.load(shardedFrom: folder, into: optimizer, scheduler: scheduler)
        #expect(optimizer.snapshot() == saved.snapshot)
        #expect(Self.bits(parameters.map(\.valueArray)) == Self.bits(saved.values))
        #expect(scheduler.stepCount == saved.schedulerStep)
    }

    @Test("each rank's file holds its part of the state only; the index tiles every buffer")
    func eachRankWritesItsPart() throws {
        var scenario = Scenario("adamw")
        scenario.steps = 2
        scenario.shapes = [("w1", [40, 30]), ("b1", [40]), ("w2", [10, 40]), ("b2", [10])]
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try Self.trainAndSave(scenario, ranks: 3, folder: folder)
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        let shards = names.filter { $0.hasPrefix("shard-") }
        #expect(names.contains(ShardedCheckpoint.indexName))
        #expect(shards.count == 3 && shards.allSatisfy { $0.hasSuffix("-of-00003.safetensors") })
        let total = 2 * (1200 + 40 + 400 + 10)  // AdamW: exp_avg and exp_avg_sq
        var stateElements: [Int] = []
        for shard in shards {
            let file = try SafetensorsFile(contentsOf: folder.appendingPathComponent(shard))
            stateElements.append(file.tensors.filter { $0.name.hasPrefix("state/") }.map(\.elementCount).reduce(0, +))
        }
        #expect(stateElements.reduce(0, +) == total)
        // 1,650 elements over 3 ranks: 550 each, two buffers each.
        #expect(stateElements == [1100, 1100, 1100])
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent(ShardedCheckpoint.indexName))) as? [String: Any]
        let slices = try #require(index?["slices"] as? [String: [[String: Any]]])
        #expect(slices["state/w1/exp_avg"]?.map { $0["count"] as? Int } == [550, 550, 100])
        #expect((index?["weight_map"] as? [String: String])?.keys.sorted() == ["b1", "b2", "w1", "w2"])
    }

    @Test("a second save replaces the first: one save's files remain")
    func aSecondSaveReplacesTheFirst() throws {
        var scenario = Scenario("adamw")
        scenario.steps = 2
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try Self.trainAndSave(scenario, ranks: 3, folder: folder)
        let first = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix("shard-") }
        scenario.steps = 3
        let saved = try Self.trainAndSave(scenario, ranks: 2, folder: folder)[0]
        let second = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix("shard-") }
        #expect(second.count == 2 && Set(second).isDisjoint(with: first))
        for (got, error) in try Self.load(scenario, ranks: 3, folder: folder) {
            #expect(error == nil)
            #expect(got.snapshot == saved.snapshot)
        }
    }

    @Test("damaged or foreign checkpoints are refused on every rank, and nothing changes")
    func damagedCheckpointsChangeNothing() throws {
        var scenario = Scenario("adamw")
        scenario.steps = 3
        let reference = try Self.folder()
        defer { try? FileManager.default.removeItem(at: reference) }
        _ = try Self.trainAndSave(scenario, ranks: 3, folder: reference)
        // The state each rank keeps when a load fails: its own warm-up's (no folder at all).
        func untouched(_ scenario: Scenario) throws -> [(Result, String?)] {
            let outcomes = try Self.load(scenario, ranks: 2, folder: FileManager.default.temporaryDirectory.appendingPathComponent("optim-no-such-\(UUID().uuidString)"), warmUp: true)
            #expect(outcomes.allSatisfy { $0.1?.contains("no readable sharded checkpoint index") == true })
            return outcomes
        }

        func expectRefused(_ damage: (URL) throws -> Void, _ expected: String, configuration: Scenario? = nil) throws {
            let folder = try Self.folder()
            defer { try? FileManager.default.removeItem(at: folder) }
            for name in try FileManager.default.contentsOfDirectory(atPath: reference.path) {
                try FileManager.default.copyItem(at: reference.appendingPathComponent(name), to: folder.appendingPathComponent(name))
            }
            try damage(folder)
            let untouched = try untouched(configuration ?? scenario)
            let outcomes = try Self.load(configuration ?? scenario, ranks: 2, folder: folder, warmUp: true)
            for (rank, (got, error)) in outcomes.enumerated() {
                #expect(error != nil, "rank \(rank) accepted a damaged checkpoint (\(expected))")
                #expect(got.snapshot == untouched[rank].0.snapshot, "rank \(rank): state changed by a refused load (\(expected))")
                #expect(Self.bits(got.values) == Self.bits(untouched[rank].0.values), "rank \(rank): parameters changed (\(expected))")
                #expect(got.schedulerStep == untouched[rank].0.schedulerStep)
            }
            // The rank that met the problem names it; the others name that rank.
            #expect(outcomes.contains { $0.1?.contains(expected) == true }, "no rank says '\(expected)': \(outcomes.map { $0.1 ?? "" })")
        }
        let index = { (folder: URL) in folder.appendingPathComponent(ShardedCheckpoint.indexName) }
        func editIndex(_ folder: URL, _ edit: (inout [String: Any]) -> Void) throws {
            var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: index(folder))) as? [String: Any])
            edit(&object)
            try JSONSerialization.data(withJSONObject: object).write(to: index(folder))
        }
        // Rank 1 of 2 holds elements 34..<67: the last shard file (rank 2 of 3's part) is its alone.
        try expectRefused({ folder in
            let last = try FileManager.default.contentsOfDirectory(atPath: folder.path).first { $0.hasSuffix("-00003-of-00003.safetensors") }!
            try FileManager.default.removeItem(at: folder.appendingPathComponent(last))
        }, "cannot be read")
        try expectRefused({ folder in try Data("{ not json".utf8).write(to: index(folder)) }, "is not a sharded checkpoint index")
        try expectRefused({ folder in
            try editIndex(folder) { object in
                var slices = object["slices"] as! [String: [[String: Any]]]
                slices["state/w1/exp_avg"]!.removeFirst()
                object["slices"] = slices
            }
        }, "do not tile")
        try expectRefused({ folder in
            try editIndex(folder) { object in
                var map = object["weight_map"] as! [String: String]
                map["w1"] = "../../etc/passwd"
                object["weight_map"] = map
            }
        }, "outside its folder")
        var other = Scenario("sgd")
        other.configuration.hyperparameters["momentum"] = .number(0.9)
        try expectRefused({ _ in }, "adamw", configuration: other)
    }
}
