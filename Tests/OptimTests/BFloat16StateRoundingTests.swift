import Foundation
import Optim
import Testing

/// Stochastic rounding of bfloat16 *state* (`bf16_state_stochastic_round`,
/// ``StatePrecision/stateRounding``). The expected values here are exact arithmetic, not this
/// library's output: Adagrad's sum grows by g² a step, which rounding to nearest even loses when
/// g² is below half a bfloat16 step, and which stochastic rounding keeps on average.
@Suite struct BFloat16StateRoundingTests {
    static let count = 1 << 14

    static func adagrad(_ extra: HyperparameterDictionary, steps: Int, threads: Int = 2, path: InstructionSet? = nil,
                        split: Int? = nil) throws -> (sums: [Float], values: [UInt32]) {
        let parameter = try Parameter(name: "w", shape: [count], repeating: 0.5)
        let configuration = OptimizerConfiguration(name: "adagrad", hyperparameters: [
            "lr": .number(1e-3), "initial_accumulator_value": .number(1), "state_dtype": .string("bfloat16"),
        ].merging(extra) { $1 })
        let pool = ThreadPool(threadCount: threads)
        let make = { try OptimizerRegistry.makeOptimizer(configuration, parameters: [parameter], threadPool: pool) }
        let optimizer = try path.map { path in try KernelDispatch.withInstructionSet(path, make) } ?? make()
        for _ in 0..<steps {
            try parameter.setGradient([Float](repeating: 0.03, count: count))
            try optimizer.step()
        }
        let sums = try #require(try optimizer.state(of: parameter)["sum"])
        return (sums, parameter.values.map(\.bitPattern))
    }

    @Test func stochasticRoundingKeepsWhatNearestEvenLoses() throws {
        // 0.03² = 0.0009 a step; half a bfloat16 step above 1 is 2⁻⁸ ≈ 0.0039.
        let steps = 50, exact = 1 + Double(steps) * Double(Float(0.03) * Float(0.03))
        let nearest = try Self.adagrad([:], steps: steps)
        #expect(Set(nearest.sums) == [1], "nearest even: the sum never moves")
        let stochastic = try Self.adagrad(["bf16_state_stochastic_round": .bool(true), "bf16_rounding_seed": .number(11)], steps: steps)
        #expect(stochastic.sums.allSatisfy { $0.bitPattern & 0xFFFF == 0 }, "the state holds bfloat16 values")
        let mean = stochastic.sums.reduce(0.0) { $0 + Double($1) } / Double(Self.count)
        // Per element the rounding errors add up to a standard deviation under 0.03; over 2¹⁴
        // elements the mean's is under 0.0003.
        #expect(abs(mean - exact) < 0.002, "mean \(mean), exact \(exact)")
        #expect(Set(stochastic.sums).count > 3)
    }

    @Test func theSameBitsOnEveryPathAndThreadCountAndSeedsDiffer() throws {
        let settings: HyperparameterDictionary = ["bf16_state_stochastic_round": .bool(true), "bf16_rounding_seed": .number(3)]
        let reference = try Self.adagrad(settings, steps: 5, threads: 1, path: .baseline)
        for path in KernelDispatch.available {
            let run = try Self.adagrad(settings, steps: 5, threads: 2, path: path)
            #expect(run.sums.map(\.bitPattern) == reference.sums.map(\.bitPattern) && run.values == reference.values, "\(path.rawValue)")
        }
        let three = try Self.adagrad(settings, steps: 5, threads: 3)
        #expect(three.sums.map(\.bitPattern) == reference.sums.map(\.bitPattern))
        var other = settings
        other["bf16_rounding_seed"] = .number(4)
        #expect(try Self.adagrad(other, steps: 5).sums.map(\.bitPattern) != reference.sums.map(\.bitPattern))
    }

    @Test func aCheckpointResumesBitExact() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bf16-state-sr-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("checkpoint.safetensors")
        let configuration = OptimizerConfiguration(name: "adamw", hyperparameters: [
            "lr": .number(1e-2), "state_dtype": .string("bfloat16"), "bf16_state_stochastic_round": .bool(true), "bf16_rounding_seed": .number(8),
        ])
        func gradient(_ step: Int) -> [Float] { (0..<5000).map { Float(($0 * 7919 + step * 104_729) % 2001 - 1000) * 1e-4 } }
        func values(_ steps: Range<Int>, _ parameter: Parameter, _ optimizer: any Optimizer) throws {
            for step in steps {
                try parameter.setGradient(gradient(step))
                try optimizer.step()
            }
        }
        let straight = try Parameter(name: "w", shape: [5000], repeating: 0.25)
        try values(0..<6, straight, try OptimizerRegistry.makeOptimizer(configuration, parameters: [straight]))

        let first = try Parameter(name: "w", shape: [5000], repeating: 0.25)
        let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: [first])
        try values(0..<3, first, optimizer)
        try Checkpoint.save(optimizer, to: file)
        let second = try Parameter(name: "w", shape: [5000], repeating: 0)
        let resumed = try OptimizerRegistry.makeOptimizer(configuration, parameters: [second])
        _ = try Checkpoint.load(from: file, into: resumed)
        try values(3..<6, second, resumed)
        #expect(second.values.map(\.bitPattern) == straight.values.map(\.bitPattern))
        #expect(try resumed.hyperparameters(group: 0)["bf16_state_stochastic_round"] == .bool(true))
    }

    @Test func refusedWithoutBFloat16State() throws {
        let parameter = try Parameter(name: "w", shape: [8])
        for dtype in ["float32", "int8"] {
            let configuration = OptimizerConfiguration(name: "adamw", hyperparameters: ["state_dtype": .string(dtype),
                                                                                         "bf16_state_stochastic_round": .bool(true)])
            #expect(throws: OptimError.self, "\(dtype)") { _ = try OptimizerRegistry.makeOptimizer(configuration, parameters: [parameter]) }
        }
        #expect(throws: OptimError.self) {
            _ = try AdamW([parameter], hyperparameters: .init(statePrecision: .init(dtype: .float32, stateRounding: .stochastic(seed: 1))))
        }
        #expect(throws: OptimError.self) {
            _ = try AdamW([parameter], hyperparameters: .init(statePrecision: .init(dtype: .bfloat16, parameterRounding: .stochastic(seed: 1),
                                                                                     stateRounding: .stochastic(seed: 2))))
        }
    }
}
