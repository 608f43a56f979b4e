import Foundation
import Optim

/// A deterministic training problem for process-level tests of checkpoints: parameters, an
/// optimizer from the registry, a schedule and per-step gradients, all derived from integers, so
/// two processes (a test and a child `optim` it launches and kills) agree bit for bit.
public struct SyntheticProblem: Sendable {
    /// The registry name (Lookahead wraps AdamW).
    public var optimizer: String
    /// Elements in total, split over two parameters (a weight and a bias-like tail).
    public var parameterCount: Int
    /// The integer every value of the problem is derived from (by SplitMix64).
    public var seed: UInt64

    /// A problem for the registry optimizer `optimizer` over `parameterCount` elements (at least
    /// 2); throws for an unknown optimizer.
    public init(optimizer: String, parameterCount: Int, seed: UInt64 = 1) throws(OptimError) {
        guard parameterCount >= 2 else { throw .invalidConfiguration("a synthetic problem needs at least 2 parameters, got \(parameterCount)") }
        _ = try OptimizerRegistry.info(named: optimizer)
        self.optimizer = optimizer
        self.parameterCount = parameterCount
        self.seed = seed
    }

    /// Two parameters, `layer.weight` and `layer.bias`, with values in [-1, 1).
    public func makeParameters() throws(OptimError) -> [Parameter] {
        let biasCount = max(1, parameterCount / 64)
        let weightCount = parameterCount - biasCount
        return [
            try Parameter(name: "layer.weight", shape: [weightCount], values: (0..<weightCount).map { value(0, $0) }),
            try Parameter(name: "layer.bias", shape: [biasCount], values: (0..<biasCount).map { value(1, $0) }),
        ]
    }

    /// The registry's defaults, in two groups (the bias without weight decay, for an optimizer
    /// that decays weights), Lookahead around AdamW.
    public func makeOptimizer(_ parameters: [Parameter]) throws(OptimError) -> any Optimizer {
        let configuration = OptimizerConfiguration(
            name: optimizer, base: optimizer == "lookahead" ? OptimizerConfiguration(name: "adamw") : nil)
        let decays = try ParameterGrouping.decaysWeights(configuration)
        return try OptimizerRegistry.makeOptimizer(configuration, groups: [
            ParameterGroupConfiguration([parameters[0]]),
            ParameterGroupConfiguration([parameters[1]], overrides: decays ? ["weight_decay": .number(0)] : [:]),
        ])
    }

    /// Linear warm-up over 3 steps, then cosine decay over 50.
    public func makeScheduler(_ optimizer: any Optimizer) throws(OptimError) -> LearningRateScheduler {
        try LearningRateScheduler(optimizer, schedule: SequentialSchedule.warmupCosine(warmupSteps: 3, totalSteps: 50, floor: 0.1))
    }

    /// Sets every parameter's gradient for `step` (1-based).
    public func setGradients(step: Int, _ parameters: [Parameter]) {
        for (index, parameter) in parameters.enumerated() {
            let gradient = parameter.gradientStorage(zeroed: false)
            for element in 0..<parameter.count {
                gradient[element] = value(UInt64(2 + 2 * step + index), element) * 0.5
            }
        }
    }

    /// A value in [-1, 1) from SplitMix64 over (seed, stream, index).
    private func value(_ stream: UInt64, _ index: Int) -> Float {
        var z = seed &+ stream &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index) &* 0xD1B5_4A32_D192_ED03
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(z >> 40) / Float(1 << 23) - 1
    }
}
