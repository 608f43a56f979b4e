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

        let adamw = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(1e-3), "betas": .numbers([0.9, 0.95])]),
            parameters: [weight, bias])
        #expect(adamw.name == "adamw")
    }
}
