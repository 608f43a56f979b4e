import Foundation
import Optim
import Testing

/// The README's usage example, as written there, compiles and trains.
@Suite struct ReadmeExampleTests {
    @Test func usageExampleRuns() throws {
        let weight = try Parameter(name: "fc.weight", shape: [4, 3], values: .init(repeating: 0.1, count: 12))
        let bias = try Parameter(name: "fc.bias", shape: [4], values: .init(repeating: 0, count: 4))

        // Lion with a learning rate 3–10× smaller than AdamW's; no weight decay on the bias.
        let optimizer = try DecoupledLionW(groups: [
            ParameterGroup([weight], .init(learningRate: 3e-4, weightDecay: 1e-4)),
            ParameterGroup([bias], .init(learningRate: 3e-4, weightDecay: 0)),
        ])

        var losses: [Float] = []
        for step in 0..<100 {
            let loss = try optimizer.step {
                // forward + backward: write gradients into each parameter's gradient storage
                let g = weight.gradientStorage()          // zero-filled, library-owned, reused every step
                for i in g.indices { g[i] = weight.values[i] - 1 }
                bias.zeroGradient()                       // no gradient: the bias is skipped this step
                return weight.values.reduce(0) { $0 + ($1 - 1) * ($1 - 1) } / 2
            }
            try optimizer.scaleLearningRates(by: 1 - Double(step) / 100)  // a linear schedule
            losses.append(loss)
        }
        #expect(losses.last! < losses.first!)
        #expect(bias.valueArray == [0, 0, 0, 0])

        let model = [weight, bias]
        let adamw = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(1e-3), "betas": .numbers([0.9, 0.95])]),
            groups: ParameterGrouping.weightDecayGroups(model, weightDecay: 0.05))     // no decay for biases and norms
        let scheduler = try LearningRateScheduler(adamw, schedule: SequentialSchedule.warmupCosine(warmupSteps: 100, totalSteps: 10_000))
        adamw.nonFinitePolicy = .skipStep                                              // NaN/Inf gradients: skip, count, carry on

        // each step:
        try weight.setGradient(.init(repeating: 0.5, count: 12))
        try bias.setGradient([1, 1, 1, 1])
        let norm = try adamw.clipGradientNorm(maxNorm: 1.0)          // folded into the step's single pass
        if let metrics = try adamw.step(collectingMetrics: true) {   // l2 norms and cosines, computed in the same pass
            print(norm, metrics.values["l2_norm/update/fc.weight"]!)
            metrics.record()                                         // swift-metrics gauges (e.g. for swift-prometheus)
            #expect(metrics.values["l2_norm/update/fc.weight"]! > 0)
        }
        try scheduler.step()
        #expect(adamw.name == "adamw" && adamw.groupCount == 2 && scheduler.stepCount == 1)
        #expect(abs(norm - (12 * 0.25 + 4).squareRoot()) < 1e-6)

        // Checkpoints, as the README shows them (in a temporary folder here).
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("readme-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("run.safetensors").path
        let saved = adamw.snapshot()
        try Checkpoint.save(adamw, scheduler: scheduler, to: URL(fileURLWithPath: path))
        try Checkpoint.load(from: URL(fileURLWithPath: path), into: adamw, scheduler: scheduler)
        #expect(adamw.snapshot() == saved && scheduler.stepCount == 1)
    }

    @Test func lbfgsExampleRuns() throws {
        let x = try Parameter(name: "x", shape: [2], values: [1.5, 1.5])
        let lbfgs = try LBFGS([x], hyperparameters: .init(strongWolfe: true))
        let loss = try lbfgs.step {
            let (a, b) = (x.values[0], x.values[1])
            try x.setGradient([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])   // Rosenbrock
            return (1 - a) * (1 - a) + 100 * (b - a * a) * (b - a * a)
        }
        #expect(loss > 0)
        #expect(abs(x.values[0] - 1) < 1e-3 && abs(x.values[1] - 1) < 1e-3, "\(x.valueArray)")
    }

    @Test func sparseGradientExampleRuns() throws {
        let embedding = try Parameter(name: "wte", shape: [20, 4])
        let rowValues = [Float](repeating: 0.5, count: 8)
        try embedding.setSparseGradient(rows: [3, 17], values: rowValues)
        try SparseAdam([embedding], hyperparameters: .init()).step()
        #expect(embedding.values[3 * 4] != 0 && embedding.values[0] == 0)
    }
}
