import ExampleModel
import Foundation
import Optim
import OptimDistributed
import Safetensors
import Testing
@testable import Training

/// A run stopped by `shouldStop`, checkpointed every epoch, or diverging.
@Suite struct StopAndDivergenceTests {
    @Test func aStoppedRunEndsBeforeItsNextStepMarkedInterrupted() throws {
        let data = try digits()
        let trainer = try Trainer(configuration: quickConfiguration(epochs: 3), train: data.train, test: data.test)
        let result = try trainer.run(shouldStop: { trainer.step >= 30 })
        #expect(result.interrupted && trainer.step == 30 && result.steps == 30)
        let finished = try trainer.run()
        #expect(!finished.interrupted && trainer.step == trainer.totalSteps)
    }

    @Test func checkpointsAreSavedEveryEpochAndStopsAreAgreedAcrossRanks() throws {
        let data = try digits()
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let run = try RunFolder(folder.appendingPathComponent("run"))
        let trainer = try Trainer(configuration: quickConfiguration(epochs: 3), train: data.train, test: data.test)
        var saved: [Int] = []
        _ = try trainer.run(epochEnded: { saved.append($0) })
        #expect(saved == [23, 46, 69])
        // Through the run folder: a checkpoint at each epoch's end (here: interrupted mid-epoch 2).
        let second = try Trainer(configuration: quickConfiguration(epochs: 3), train: data.train, test: data.test)
        let result = try second.run(recordingTo: run, checkpoint: run.checkpoint, shouldStop: { second.step >= 30 })
        #expect(result.interrupted)
        #expect(try SafetensorsFile(contentsOf: run.checkpoint).metadata["scheduler_step"] == "30")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: run.summary)) as? [String: Any])
        #expect(summary["status"] as? String == "interrupted")

        // Two in-process ranks: only rank 0 is asked to stop; both stop at the same step.
        let group = try LocalCommunicatorGroup(size: 2, timeout: 120)
        let steps = group.run { communicator in
            let trainer = try Trainer(configuration: quickConfiguration(epochs: 2), train: data.train, test: data.test, communicator: communicator)
            let result = try trainer.run(shouldStop: { communicator.rank == 0 && trainer.step >= 10 })
            return [trainer.step, result.interrupted ? 1 : 0]
        }.map { try? $0.get() }
        #expect(steps == [[10, 1], [10, 1]])
    }

    @Test func aNonFiniteLossStopsTheRunBeforeTheOptimizerStepsOnIt() throws {
        let data = try digits()
        var configuration = quickConfiguration("sgd")
        configuration.hyperparameters = ["lr": .number(1e30)]
        configuration.clipNorm = nil
        let trainer = try Trainer(configuration: configuration, train: data.train, test: data.test)
        var epochs = 0
        do {
            _ = try trainer.run(epochEnded: { _ in epochs += 1 })
            Issue.record("the run did not diverge")
        } catch let TrainingError.diverged(step, message) {
            #expect(message.contains("diverged") && (step == trainer.step || step == trainer.step + 1))
            #expect(trainer.model.parameters.allSatisfy { $0.valueArray.allSatisfy(\.isFinite) } || epochs == 0)
        }
        #expect(epochs == 0)
    }

    @Test func numbersBeyondWhatCanBeComputedAreRefused() throws {
        let data = try digits()
        for change in [
            { (c: inout TrainingConfiguration) in c.epochs = .max },
            { (c: inout TrainingConfiguration) in c.batchSize = .max },
            { (c: inout TrainingConfiguration) in c.warmupSteps = .max },
            { (c: inout TrainingConfiguration) in c.hidden = [65536, 65536, 65536] },
        ] {
            var configuration = quickConfiguration()
            change(&configuration)
            #expect(throws: TrainingError.self) { try Trainer(configuration: configuration, train: data.train, test: data.test) }
        }
        let empty = data.test.subset([Int]())
        #expect(throws: TrainingError.self) { try Trainer(configuration: quickConfiguration(), train: data.train, test: empty) }
    }
}
