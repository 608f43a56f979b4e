import Foundation
import Optim

extension GPT {
    /// Throughput of training steps, for `tools/austen/bench.sh` (via `optim bench-model`).
    public struct BenchmarkResult: Sendable, Codable {
        /// Tokens per second of each timed run (batch × context × steps / seconds).
        public var runs: [Double]
        /// Sequences per step.
        public var batchSize: Int
        /// Training steps in each timed run.
        public var steps: Int
        /// Threads of the model and the optimizer.
        public var threads: Int
        /// The median of ``runs``.
        public var tokensPerSecond: Double {
            let sorted = runs.sorted()
            return sorted.isEmpty ? 0 : sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
    }

    /// Times whole training steps — forward, backward, global-norm clipping at 1 and an AdamW step
    /// (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices) — on batches of `corpus`'s training
    /// text: `warmupSteps` untimed, then `runs` runs of `steps` steps each. The PyTorch side
    /// (`torch_reference.py bench`) times the same step.
    public static func benchmark(_ configuration: GPTConfiguration, corpus: TextCorpus, batchSize: Int = 12, steps: Int = 20,
                                 warmupSteps: Int = 5, runs: Int = 5, threads: Int) throws -> BenchmarkResult {
        try corpus.checkContext(configuration.contextLength)
        let pool = ThreadPool(threadCount: threads)
        let model = try GPT(configuration, seed: 0, pool: pool)
        let optimizer = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(1e-3), "betas": .numbers([0.9, 0.99])]),
            groups: ParameterGrouping.weightDecayGroups(model.parameters, weightDecay: 0.1), threadPool: pool)
        let T = configuration.contextLength
        var inputs = [Int32](repeating: 0, count: batchSize * T), targets = inputs
        var batch = 0
        func step() throws {
            inputs.withUnsafeMutableBufferPointer { i in targets.withUnsafeMutableBufferPointer { t in
                corpus.fillBatch(.train, index: batch, seed: 0, batchSize: batchSize, context: T, inputs: i, targets: t)
            } }
            batch += 1
            _ = try inputs.withUnsafeBufferPointer { i in try targets.withUnsafeBufferPointer { t in try model.lossAndGradient(inputs: i, targets: t, batchSize: batchSize) } }
            _ = try optimizer.clipGradientNorm(maxNorm: 1, threadPool: pool)
            try optimizer.step()
        }
        for _ in 0..<warmupSteps { try step() }
        var rates: [Double] = []
        for _ in 0..<runs {
            let start = ProcessInfo.processInfo.systemUptime
            for _ in 0..<steps { try step() }
            rates.append(Double(steps * batchSize * T) / (ProcessInfo.processInfo.systemUptime - start))
        }
        return BenchmarkResult(runs: rates, batchSize: batchSize, steps: steps, threads: threads)
    }
}
