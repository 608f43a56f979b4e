import ExampleModel
import Foundation
import Optim
import OptimDistributed
import Testing
@testable import Training

/// A GPT small enough to train for a few dozen steps in a debug build.
func quickTextConfiguration() -> TrainingConfiguration {
    var configuration = TrainingConfiguration()
    configuration.task = .austen
    configuration.optimizer = "adamw"
    configuration.hyperparameters = ["lr": .number(3e-3), "betas": .numbers([0.9, 0.99]), "weight_decay": .number(0.1)]
    configuration.layers = 1
    configuration.heads = 2
    configuration.embedding = 16
    configuration.context = 16
    configuration.batchSize = 4
    configuration.iterations = 30
    configuration.evaluateEvery = 10
    configuration.evaluationBatches = 2
    configuration.warmupSteps = 5
    configuration.clipNorm = 1
    configuration.finalLearningRateFactor = 0.1
    configuration.threads = 2
    configuration.metricsEvery = 0
    return configuration
}

@Suite struct TextTrainerTests {
    @Test func theGPTLearnsAndValidatesEveryInterval() throws {
        let trainer = try Trainer(configuration: quickTextConfiguration(), corpus: try TextCorpus.austen())
        #expect(trainer.model is GPT)
        #expect(trainer.stepsPerEpoch == 10 && trainer.epochs == 3 && trainer.totalSteps == 30)
        let result = try trainer.run()
        let validations = result.records.compactMap(\.testLoss)
        #expect(validations.count == 3)
        #expect(validations.last! < validations.first! && validations.first! < log(81.0))
        let summary = try JSONSerialization.jsonObject(with: RunFolder.summaryJSON(result)) as? [String: Any]
        #expect(summary?["task"] as? String == "austen")
        #expect(summary?["val_loss"] as? Double == result.testLoss)
    }

    @Test func resumingMidRunMatchesTheRunStraightThrough() throws {
        let corpus = try TextCorpus.austen()
        let straight = try Trainer(configuration: quickTextConfiguration(), corpus: corpus)
        _ = try straight.run()
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("checkpoint.safetensors")
        let partial = try Trainer(configuration: quickTextConfiguration(), corpus: corpus)
        _ = try partial.run(until: 13)
        try partial.saveCheckpoint(to: file)
        let resumed = try Trainer(configuration: quickTextConfiguration(), corpus: corpus)
        try resumed.resume(from: file)
        _ = try resumed.run()
        #expect(parameterBits(resumed) == parameterBits(straight))

        var wider = quickTextConfiguration()
        wider.embedding = 32
        #expect(throws: TrainingError.self) { try Trainer(configuration: wider, corpus: corpus).resume(from: file) }
    }

    @Test func badTextTasksAreTypedErrors() throws {
        let short = try TextCorpus(text: String(repeating: "abc", count: 10), source: "short")
        #expect(throws: TextCorpusError.contextTooLong(context: 16, available: 3, split: "validation", source: "short")) {
            try Trainer(configuration: quickTextConfiguration(), corpus: short)
        }
        var uneven = quickTextConfiguration()
        uneven.iterations = 25
        #expect(throws: TrainingError.self) { try Trainer(configuration: uneven, corpus: try TextCorpus.austen()) }
        var heads = quickTextConfiguration()
        heads.heads = 3
        #expect(throws: ModelError.self) { try Trainer(configuration: heads, corpus: try TextCorpus.austen()) }
    }

    /// Ten steps on one thread a rank, for the runs over two in-process ranks.
    static func distributedConfiguration() -> TrainingConfiguration {
        var configuration = quickTextConfiguration()
        configuration.iterations = 10
        configuration.evaluateEvery = 5
        configuration.threads = 1
        return configuration
    }

    @Test("the GPT data parallel over two ranks: overlapped equals blocking bit for bit, and both the single process")
    func dataParallelTextTraining() throws {
        let corpus = try TextCorpus.austen()
        let configuration = Self.distributedConfiguration()
        let single = try Trainer(configuration: configuration, corpus: corpus)
        let singleResult = try single.run()
        var runs: [[[Float]]] = []
        let shared = configuration
        for overlap in [true, false] {
            let group = try LocalCommunicatorGroup(size: 2, timeout: 300)
            let outcomes = try group.run { communicator in
                let trainer = try Trainer(configuration: shared, corpus: corpus, communicator: communicator, bucketBytes: 4096)  // many buckets
                trainer.overlapsCommunication = overlap
                let result = try trainer.run()
                #expect(trainer.timeline.count == 10 && trainer.timeline.allSatisfy { $0.overlapped == overlap && $0.computeSeconds > 0 })
                return (trainer.model.parameters.map(\.valueArray), result.testLoss)
            }.map { try $0.get() }
            #expect(outcomes[0].0.map { $0.map(\.bitPattern) } == outcomes[1].0.map { $0.map(\.bitPattern) })
            // Float rounding apart (each rank's half of the batch is summed on its own), the
            // single process's run.
            #expect(abs(outcomes[0].1 - singleResult.testLoss) < 1e-4)
            for (got, want) in zip(outcomes[0].0, single.model.parameters.map(\.valueArray)) {
                for (a, b) in zip(got, want) { #expect(abs(a - b) <= 1e-4 + 1e-3 * abs(b)) }
            }
            runs.append(outcomes[0].0)
        }
        #expect(runs[0].map { $0.map(\.bitPattern) } == runs[1].map { $0.map(\.bitPattern) })
    }


    @Test("the GPT with ZeRO-2 over two ranks: each keeps a shard of the gradients, the single process's run within rounding")
    func zeroTwoTextTraining() throws {
        let corpus = try TextCorpus.austen()
        let configuration = Self.distributedConfiguration()
        let single = try Trainer(configuration: configuration, corpus: corpus)
        let singleResult = try single.run()
        let shared = configuration
        // Without clipping (whose norm ZeRO-2 adds up from the shards), ZeRO-2 is ZeRO-1 bit for bit.
        var withoutClipping = configuration
        withoutClipping.clipNorm = nil
        let unclipped = withoutClipping
        let zeroOne = try LocalCommunicatorGroup(size: 2, timeout: 300).run { communicator in
            let trainer = try Trainer(configuration: unclipped, corpus: corpus, communicator: communicator, shardState: true)
            _ = try trainer.run()
            return trainer.model.parameters.map { $0.valueArray.map(\.bitPattern) }
        }.map { try $0.get() }
        let zeroTwo = try LocalCommunicatorGroup(size: 2, timeout: 300).run { communicator in
            let trainer = try Trainer(configuration: unclipped, corpus: corpus, communicator: communicator, shardState: true, bucketBytes: 4096, shardGradients: true)
            _ = try trainer.run()
            return trainer.model.parameters.map { $0.valueArray.map(\.bitPattern) }
        }.map { try $0.get() }
        #expect(zeroTwo == zeroOne)
        for overlap in [true, false] {
            let group = try LocalCommunicatorGroup(size: 2, timeout: 300)
            let outcomes = try group.run { communicator in
                let trainer = try Trainer(configuration: shared, corpus: corpus, communicator: communicator, shardState: true, bucketBytes: 4096, shardGradients: true)
                trainer.overlapsCommunication = overlap
                let result = try trainer.run()
                let sharded = try #require(trainer.optimizer as? ShardedOptimizer)
                #expect(sharded.stage == .two && trainer.model.parameters.allSatisfy { $0.gradient == nil })
                return (trainer.model.parameters.map(\.valueArray), result.testLoss)
            }.map { try $0.get() }
            #expect(outcomes[0].0.map { $0.map(\.bitPattern) } == outcomes[1].0.map { $0.map(\.bitPattern) })
            #expect(abs(outcomes[0].1 - singleResult.testLoss) < 1e-4)
            for (got, want) in zip(outcomes[0].0, single.model.parameters.map(\.valueArray)) {
                for (a, b) in zip(got, want) { #expect(abs(a - b) <= 1e-4 + 1e-3 * abs(b)) }
            }
        }
    }


    @Test("a data-parallel run's folder gets its timeline: a line a step, the chart, and the share hidden in summary.json")
    func dataParallelRunFolderHasTheTimeline() throws {
        let corpus = try TextCorpus.austen()
        var configuration = quickTextConfiguration()
        configuration.iterations = 6
        configuration.evaluateEvery = 3
        configuration.threads = 1
        let shared = configuration
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("run")
        let outcomes = try LocalCommunicatorGroup(size: 2, timeout: 300).run { communicator in
            let trainer = try Trainer(configuration: shared, corpus: corpus, communicator: communicator, bucketBytes: 4096)
            let runFolder = communicator.isRoot ? try RunFolder(url) : nil
            _ = try trainer.run(recordingTo: runFolder, checkpoint: url.appendingPathComponent("checkpoint.safetensors"))
            return trainer.timeline.count
        }.map { try $0.get() }
        #expect(outcomes == [6, 6])
        let lines = try String(contentsOf: url.appendingPathComponent("timeline.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 6)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        #expect(first?["step"] as? Int == 1 && first?["overlapped"] as? Bool == true && (first?["compute_ms"] as? Double ?? 0) > 0)
        #expect(try String(contentsOf: url.appendingPathComponent("timeline.svg"), encoding: .utf8).contains("waited for after backward"))
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: url.appendingPathComponent("summary.json"))) as? [String: Any]
        let extra = summary?["extra"] as? [String: String]
        #expect(extra?["communication_hidden"].flatMap(Double.init).map { (0...1).contains($0) } == true && extra?["step_communication_ms"] != nil)
    }

}
