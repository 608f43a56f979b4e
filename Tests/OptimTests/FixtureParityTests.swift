import Foundation
import Optim
import OptimFixtures
import Testing

/// Every committed reference fixture (made by `tools/reference/make_fixtures.py` from PyTorch,
/// lion-pytorch, torch-adopt, composer and the seed code) replays within its tolerance.
@Suite struct FixtureParityTests {
    static let referenceFiles = Paths.jsonFiles(in: Paths.referenceFixtures)
    static let exampleFiles = Paths.jsonFiles(in: Paths.sharedExamples)

    @Test(arguments: referenceFiles)
    func referenceFixtureReplays(path: String) throws {
        let result = try Fixture(contentsOf: URL(fileURLWithPath: path)).replay(file: path)
        #expect(result.passed, "\(result.name): \(result.firstMismatch ?? "")")
    }

    @Test(.enabled(if: !exampleFiles.isEmpty, "shared/fixtures/examples is not beside the repository"), arguments: exampleFiles)
    func sharedExampleReplays(path: String) throws {
        let result = try Fixture(contentsOf: URL(fileURLWithPath: path)).replay(file: path)
        #expect(result.passed, "\(result.name): \(result.firstMismatch ?? "")")
    }

    @Test func everyRegisteredOptimizerHasReferenceFixtures() throws {
        var counts: [String: Int] = [:]
        for path in Self.referenceFiles {
            let fixture = try Fixture(contentsOf: URL(fileURLWithPath: path))
            counts[fixture.configuration.name, default: 0] += 1
            if let base = fixture.configuration.base { counts["base:" + base.name, default: 0] += 1 }
        }
        for name in OptimizerRegistry.names {
            #expect(counts[name, default: 0] >= 5, "only \(counts[name, default: 0]) fixtures for \(name)")
        }
        // Lookahead is checked around several different optimizers.
        #expect(counts.keys.filter { $0.hasPrefix("base:") }.count >= 5)
    }

    @Test func everyHyperparameterOptionIsExercised() throws {
        // Each non-default value of each hyperparameter appears in at least one fixture.
        var seen: [String: Set<HyperparameterValue>] = [:]
        for path in Self.referenceFiles {
            let fixture = try Fixture(contentsOf: URL(fileURLWithPath: path))
            for configuration in [fixture.configuration, fixture.configuration.base].compactMap({ $0 }) {
                var dictionaries = [configuration.hyperparameters]
                if configuration.base == nil { dictionaries += (fixture.groups ?? []).map(\.overrides) }
                for dictionary in dictionaries {
                    for (key, value) in dictionary { seen["\(configuration.name).\(key)", default: []].insert(value) }
                }
            }
        }
        // Keys whose only accepted value is the default: prodigyopt's `fsdp_in_use` true path
        // all-reduces through torch.distributed on CUDA, which the fixture harness cannot run and
        // this library refuses (ZeRO-1 does not shard prodigy).
        let defaultOnly: Set = ["prodigy.fsdp_in_use"]
        for info in OptimizerRegistry.all {
            for (key, defaultValue) in info.defaults where !defaultOnly.contains("\(info.name).\(key)") {
                let values = seen["\(info.name).\(key)", default: []]
                #expect(values.contains { $0 != defaultValue }, "\(info.name).\(key) is never set to a non-default value")
            }
        }
    }

    @Test func parallelStepEqualsSerialStepBitForBit() throws {
        // A tensor large enough to be chunked across threads gives the same bits on 1 and 2 threads.
        var random = SplitMix(seed: 7)
        let count = 300_001
        let initial = random.floats(count), gradients = (0..<3).map { _ in random.floats(count) }
        for name in vectorOptimizers {
            var results: [[Float]] = []
            for threads in [1, 2] {
                let parameter = try Parameter(name: "w", shape: [count], values: initial)
                let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, name == "lookahead" ? ["k": .number(2)] : [:]),
                                                                    parameters: [parameter], threadPool: ThreadPool(threadCount: threads))
                for gradient in gradients {
                    try parameter.setGradient(gradient)
                    try optimizer.step()
                }
                results.append(parameter.valueArray)
            }
            #expect(bits(results[0]) == bits(results[1]), "\(name)")
            #expect(results[0] != initial, "\(name) did not move")
        }
    }
}

/// Reference fixtures made for optimizers not implemented yet wait in `Tests/Fixtures/pending`;
/// once an optimizer is registered its fixtures must move to `reference` (and replay there).
@Suite struct PendingFixtureTests {
    @Test func pendingFixturesAreForUnregisteredOptimizersOnly() throws {
        let folder = Paths.repository.appendingPathComponent("Tests/Fixtures/pending")
        for path in Paths.jsonFiles(in: folder) {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            let optimizer = object?["optimizer"] as? String ?? ""
            #expect(!optimizer.isEmpty, "\(path) names no optimizer")
            #expect(!OptimizerRegistry.names.contains(optimizer), "\(optimizer) is registered: move \(path) to Tests/Fixtures/reference")
        }
    }
}
