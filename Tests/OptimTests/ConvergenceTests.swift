import Optim
import Testing

/// Each optimizer minimises a badly conditioned quadratic and the Rosenbrock function.
///
/// The learning rate decays linearly to ~0 over the run (as a schedule would), so sign-based and
/// adaptive methods settle instead of hovering at the scale of their last step.
@Suite struct ConvergenceTests {
    /// The samples of every registry entry (``OptimizerInfo/samples``).
    static let names = vectorOptimizers

    /// Runs `steps` steps from `start` with a linearly decaying learning rate.
    func minimize(_ configuration: OptimizerConfiguration, start: [Float], steps: Int, gradient: ([Double]) -> [Double]) throws -> [Double] {
        let x = try Parameter(name: "x", shape: [start.count], values: start)
        let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: [x])
        for step in 0..<steps {
            try optimizer.scaleLearningRates(by: max(1 - Double(step) / Double(steps), 1e-3))
            try x.setGradient(gradient(x.valueArray.map(Double.init)).map(Float.init))
            try optimizer.step()
        }
        try optimizer.eval()  // schedule-free's answer is the average x; a no-op for the others
        return x.valueArray.map(Double.init)
    }

    @Test(arguments: names)
    func quadratic(_ name: String) throws {
        // f(x) = ½ Σ aᵢ (xᵢ − cᵢ)², curvatures 1…10.
        var random = SplitMix(seed: 11)
        let dimension = 16
        let curvature = (0..<dimension).map { 1 + 9 * Double($0) / Double(dimension - 1) }
        let target = random.floats(dimension).map(Double.init)
        func loss(_ x: [Double]) -> Double {
            var sum = 0.0
            for i in 0..<dimension {
                let d = x[i] - target[i]
                sum += 0.5 * curvature[i] * d * d
            }
            return sum
        }
        let start = [Float](repeating: 0, count: dimension)
        let x = try minimize(try OptimizerRegistry.info(named: name).samples.quadratic, start: start, steps: 2000) { x in
            (0..<dimension).map { curvature[$0] * (x[$0] - target[$0]) }
        }
        let initial = loss(start.map(Double.init)), final = loss(x)
        #expect(final < 1e-4 * initial, "\(name): loss \(initial) → \(final)")
    }

    @Test(arguments: names)
    func rosenbrock(_ name: String) throws {
        // f(x, y) = (1 − x)² + 100 (y − x²)², minimum at (1, 1), from the classic start (−1.2, 1).
        let x = try minimize(try OptimizerRegistry.info(named: name).samples.rosenbrock, start: [-1.2, 1], steps: 20_000) { v in
            let (x, y) = (v[0], v[1])
            return [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)]
        }
        let distance = ((x[0] - 1) * (x[0] - 1) + (x[1] - 1) * (x[1] - 1)).squareRoot()
        #expect(distance < 0.05, "\(name): ended at \(x)")
    }
}
