import ExampleModel
import Foundation
import Optim
import Safetensors
import Testing
@testable import Training

/// A small configuration that trains in a couple of seconds in a debug build.
func quickConfiguration(_ optimizer: String = "decoupled_lionw", epochs: Int = 2) -> TrainingConfiguration {
    var configuration = TrainingConfiguration()
    configuration.optimizer = optimizer
    configuration.hidden = [32]
    configuration.epochs = epochs
    configuration.batchSize = 64
    configuration.threads = 2
    configuration.metricsEvery = 7
    configuration.warmupSteps = 5
    configuration.clipNorm = 5
    return configuration
}

func digits() throws -> (train: Dataset, test: Dataset) {
    let split = try Dataset.digits().split(testFraction: 0.2, seed: 0)
    return (split.train, split.test)
}

func parameterBits(_ trainer: Trainer) -> [[UInt32]] { trainer.model.parameters.map { $0.valueArray.map(\.bitPattern) } }

func temporaryFolder() throws -> URL {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-train-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    return folder
}

@Suite struct TrainerTests {
    @Test func theSameSeedGivesTheSameRunBitForBit() throws {
        let data = try digits()
        let first = try Trainer(configuration: quickConfiguration(), train: data.train, test: data.test)
        let second = try Trainer(configuration: quickConfiguration(), train: data.train, test: data.test)
        let a = try first.run(), b = try second.run()
        #expect(parameterBits(first) == parameterBits(second))
        #expect(a.records.map(\.loss) == b.records.map(\.loss))
        #expect(a.testAccuracy == b.testAccuracy)
        var other = quickConfiguration()
        other.seed = 1
        let third = try Trainer(configuration: other, train: data.train, test: data.test)
        #expect(parameterBits(third) != parameterBits(try Trainer(configuration: quickConfiguration(), train: data.train, test: data.test)))
    }

    @Test(arguments: ["sgd", "adamw", "lookahead", "decoupled_lionw"])
    func resumingMidRunMatchesTheRunStraightThrough(optimizer: String) throws {
        let data = try digits()
        let configuration = quickConfiguration(optimizer, epochs: 3)
        let straight = try Trainer(configuration: configuration, train: data.train, test: data.test)
        _ = try straight.run()

        // Stop part-way through the second epoch, save, resume in a fresh trainer.
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("checkpoint.safetensors")
        let partial = try Trainer(configuration: configuration, train: data.train, test: data.test)
        let stopAt = partial.stepsPerEpoch + 5
        _ = try partial.run(until: stopAt)
        #expect(partial.step == stopAt)
        try partial.saveCheckpoint(to: file)
        let resumed = try Trainer(configuration: configuration, train: data.train, test: data.test)
        try resumed.resume(from: file)
        #expect(resumed.step == stopAt)
        let result = try resumed.run()
        #expect(result.startStep == stopAt)
        #expect(parameterBits(resumed) == parameterBits(straight))
        #expect(resumed.optimizer.snapshot() == straight.optimizer.snapshot())
    }

    @Test func refusedResumesChangeNothing() throws {
        let data = try digits()
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("checkpoint.safetensors")
        let source = try Trainer(configuration: quickConfiguration(epochs: 1), train: data.train, test: data.test)
        _ = try source.run(until: 3)
        try source.saveCheckpoint(to: file)

        var wider = quickConfiguration()
        wider.hidden = [48]
        let other = try Trainer(configuration: wider, train: data.train, test: data.test)
        let before = parameterBits(other)
        #expect(throws: TrainingError.self) { try other.resume(from: file) }
        #expect(parameterBits(other) == before && other.step == 0)

        let adamw = try Trainer(configuration: quickConfiguration("adamw"), train: data.train, test: data.test)
        let adamwBefore = parameterBits(adamw)
        #expect(throws: OptimError.self) { try adamw.resume(from: file) }
        #expect(parameterBits(adamw) == adamwBefore && adamw.step == 0)

        // A run with fewer steps cannot continue a checkpoint past its end.
        _ = try source.run()
        try source.saveCheckpoint(to: file)
        var tiny = quickConfiguration(epochs: 1)
        tiny.batchSize = 512
        tiny.warmupSteps = 0  // a warm-up longer than the run is refused
        let fewer = try Trainer(configuration: tiny, train: data.train, test: data.test)
        #expect(throws: TrainingError.self) { try fewer.resume(from: file) }
        #expect(fewer.step == 0)
    }

    @Test func decoupledLionWLearnsTheDigits() throws {
        // A small, fast cousin of the CLI's default run: 64-32-10 for 6 epochs at a higher rate.
        // (The default itself is measured with `optim train`; see the README.)
        let data = try digits()
        var configuration = quickConfiguration(epochs: 6)
        configuration.hyperparameters = ["lr": .number(1e-2)]
        configuration.clipNorm = nil
        configuration.warmupSteps = 0
        let result = try Trainer(configuration: configuration, train: data.train, test: data.test).run()
        #expect(result.testAccuracy > 0.9, "test accuracy \(result.testAccuracy)")
        #expect(result.records.last!.loss < result.records.first!.loss)
    }

    @Test func recordsCarryMetricsAndTestAccuracyWhereAsked() throws {
        let data = try digits()
        let trainer = try Trainer(configuration: quickConfiguration(epochs: 1), train: data.train, test: data.test)
        let result = try trainer.run()
        let withMetrics = result.records.filter { $0.metrics != nil }
        #expect(withMetrics.map(\.step) == Array(stride(from: 7, through: trainer.stepsPerEpoch, by: 7)))
        let metrics = try #require(withMetrics.first?.metrics)
        #expect(metrics["l2_norm/param/layers.0.weight"] != nil)
        #expect(result.records.last!.testAccuracy != nil)
        #expect(result.records.filter { $0.testAccuracy != nil }.count == 1)
        #expect(result.records.allSatisfy { $0.gradientNorm != nil })
        // Lion keeps one buffer per parameter: 4 bytes.
        #expect(result.stateBytesPerParameter == 4)
    }

    @Test func invalidOptionsAreRefusedWithTheOptionNamed() throws {
        let data = try digits()
        var configuration = quickConfiguration()
        configuration.batchSize = 0
        #expect(throws: TrainingError.invalidOption("--batch-size must be at least 1, got 0")) {
            try Trainer(configuration: configuration, train: data.train, test: data.test)
        }
        configuration = quickConfiguration("adamw")
        configuration.hyperparameters = ["momentum": .number(0.9)]
        #expect {
            try Trainer(configuration: configuration, train: data.train, test: data.test)
        } throws: { "\($0)".contains("momentum") }
        configuration = quickConfiguration("nosuch")
        #expect {
            try Trainer(configuration: configuration, train: data.train, test: data.test)
        } throws: { "\($0)".contains("nosuch") }
    }
}
