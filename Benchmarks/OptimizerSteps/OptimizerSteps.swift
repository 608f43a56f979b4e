import Benchmark
import Optim

/// One optimizer step of every registry entry over 4M parameters (one tensor, and 1,024 tensors
/// of 4,096), measuring time, throughput and mallocs per step — which must stay at zero after the
/// first step, whose state allocation happens before measurement.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        maxDuration: .seconds(3), maxIterations: 200)

    // The harness's own count, to subtract: an iteration that does nothing.
    Benchmark("baseline (empty iteration)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(benchmark) }
    }

    for name in OptimizerRegistry.names {
        for (label, tensors, size) in [("1x4M", 1, 1 << 22), ("1024x4096", 1024, 4096)] {
            Benchmark("step \(name) \(label)") { (benchmark: Benchmark, optimizer: any Optimizer) in
                for _ in benchmark.scaledIterations { try optimizer.step() }
            } setup: { () throws -> any Optimizer in
                var random: UInt64 = 0x9E37_79B9_7F4A_7C15
                func next() -> Float {
                    random = random &* 6364136223846793005 &+ 1442695040888963407
                    return Float(random >> 40) / Float(1 << 24) * 2 - 1
                }
                let parameters = try (0..<tensors).map { index in
                    let parameter = try Parameter(name: "p\(index)", shape: [size], values: (0..<size).map { _ in next() })
                    try parameter.setGradient((0..<size).map { _ in next() })
                    return parameter
                }
                let configuration = OptimizerConfiguration(
                    name: name, hyperparameters: name == "sgd" ? ["momentum": .number(0.9)] : [:],
                    base: name == "lookahead" ? OptimizerConfiguration(name: "adamw") : nil)
                let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: parameters)
                try optimizer.step()  // allocates the state: not part of the measurement
                return optimizer
            }
        }
    }
}
