import Foundation
import Optim
import OptimFixtures
import Safetensors
import Testing

/// bfloat16 parameters (``ParameterDType/bfloat16``): the rounding against torchao 0.18's
/// `_fp32_to_bf16_sr` and torch's `.bfloat16()` from `Tests/Fixtures/lowbit/torchao-bf16-stochastic-rounding.json`
/// (written by `tools/reference/make_bf16_parameter_fixtures.py` with torchao, its random numbers
/// computed there independently of this code); the trajectories are the reference fixtures
/// `adamw-bf16params-*`. Then what the engine promises around them: every path the same bits,
/// any chunking and thread count the same bits, a resume bit-exact, and bad input refused.
@Suite struct BFloat16ParameterTests {
    static let rounding = LowPrecisionStateTests.folder.appendingPathComponent("torchao-bf16-stochastic-rounding.json")

    static func inputs() throws -> [Float] {
        let fixture = try LowPrecisionStateTests.json(rounding)
        return try #require(fixture["inputs"] as? [Int]).map { Float(bitPattern: UInt32($0)) }
    }

    @Test func nearestEvenIsTorchsConversion() throws {
        let fixture = try LowPrecisionStateTests.json(Self.rounding)
        let inputs = try Self.inputs()
        let nearest = try #require(fixture["nearest"] as? [Int]).map { UInt32($0) << 16 }
        #expect(inputs.count >= 2000 && nearest.count == inputs.count)
        #expect(inputs.map { BFloat16Parameters.roundNearest($0).bitPattern } == nearest)
        var buffer = inputs
        buffer.withUnsafeMutableBufferPointer { BFloat16Parameters.roundNearest($0.baseAddress!, count: $0.count) }
        #expect(buffer.map(\.bitPattern) == nearest)
    }

    @Test func stochasticRoundingIsTorchaosWithTheCounterBasedNumbers() throws {
        let fixture = try LowPrecisionStateTests.json(Self.rounding)
        let inputs = try Self.inputs()
        let cases = try #require(fixture["cases"] as? [[String: Any]])
        #expect(cases.count == 3)
        for entry in cases {
            let seed = try #require(entry["seed"] as? NSNumber).uint64Value
            let tensor = try #require(entry["tensor"] as? Int), step = try #require(entry["step"] as? Int)
            let key = BFloat16Parameters.key(seed: seed, tensor: tensor, step: step)
            #expect([Int(key.0), Int(key.1)] == entry["key"] as? [Int], "seed \(seed): key")
            let randoms = try #require(entry["random"] as? [Int])
            #expect(inputs.indices.map { Int(BFloat16Parameters.random(index: $0, key: key)) } == randoms, "seed \(seed): random numbers")
            let expected = try #require(entry["stochastic"] as? [Int]).map { UInt32($0) << 16 }
            let scalar = zip(inputs, randoms).map { BFloat16Parameters.roundStochastically($0, random: UInt32($1)).bitPattern }
            #expect(scalar == expected, "seed \(seed): \(zip(scalar, expected).filter { $0 != $1 }.count) values differ")
            // The loop, started mid-tensor as a chunk would be.
            var buffer = inputs
            buffer.withUnsafeMutableBufferPointer { values in
                BFloat16Parameters.roundStochastically(values.baseAddress!, count: 100, first: 0, key0: key.0, key1: key.1)
                BFloat16Parameters.roundStochastically(values.baseAddress! + 100, count: values.count - 100, first: 100, key0: key.0, key1: key.1)
            }
            #expect(buffer.map(\.bitPattern) == expected)
        }
    }

    /// Stochastic rounding keeps updates below half a bfloat16 step on average: 1 + 2⁻¹⁰ (an
    /// eighth of the step of 2⁻⁷ above 1) rounds up for about an eighth of the elements.
    @Test func stochasticRoundingIsUnbiased() {
        let x: Float = 1 + 0x1p-10, count = 1 << 18
        let key = BFloat16Parameters.key(seed: 99, tensor: 0, step: 1)
        var values = [Float](repeating: x, count: count)
        values.withUnsafeMutableBufferPointer { BFloat16Parameters.roundStochastically($0.baseAddress!, count: count, first: 0, key0: key.0, key1: key.1) }
        #expect(Set(values) == [1, 1 + 0x1p-7])
        let up = Double(values.filter { $0 > 1 }.count) / Double(count)
        #expect(abs(up - 0.125) < 0.003, "\(up) rounded up")
        #expect(BFloat16Parameters.roundNearest(x) == 1)
    }

    // MARK: the engine

    static func model(seed: UInt64, dtype: ParameterDType = .bfloat16) throws -> [Parameter] {
        var random = SplitMix(seed: seed)
        let shapes: [(String, [Int])] = [("w", [300, 250]), ("b", [250]), ("e", [7000])]
        return try shapes.map { name, shape in
            let parameter = try Parameter(name: name, shape: shape, values: random.floats(shape.reduce(1, *)))
            parameter.convert(to: dtype)
            return parameter
        }
    }

    static func setGradients(_ parameters: [Parameter], step: Int) throws {
        var random = SplitMix(seed: 1000 + UInt64(step))
        for parameter in parameters { try parameter.setGradient(random.floats(parameter.count, in: -0.1...0.1)) }
    }

    static func configuration(_ name: String, _ extra: HyperparameterDictionary = [:]) -> OptimizerConfiguration {
        OptimizerConfiguration(name: name, hyperparameters: ["lr": .number(1e-3), "bf16_stochastic_round": .bool(true),
                                                             "bf16_rounding_seed": .number(5)].merging(extra) { $1 })
    }

    static func run(_ configuration: OptimizerConfiguration, steps: Int, threads: Int = 2, path: InstructionSet? = nil) throws -> [[UInt32]] {
        let parameters = try model(seed: 3)
        _ = try trainSteps(configuration, parameters, steps: steps, threads: threads, path: path) { try setGradients($0, step: $1) }
        return parameters.map { $0.values.map(\.bitPattern) }
    }

    @Test(arguments: ["adamw", "lion", "sgd", "adam", "adopt", "rmsprop", "adagrad", "decoupled_adamw", "decoupled_lionw", "ademamix"])
    func valuesStayBFloat16AndMove(optimizer name: String) throws {
        let extra: HyperparameterDictionary = name == "sgd" ? ["momentum": .number(0.9)] : [:]
        let parameters = try Self.model(seed: 3)
        let before = parameters.map(\.valueArray)
        let optimizer = try OptimizerRegistry.makeOptimizer(Self.configuration(name, extra), parameters: parameters)
        for step in 0..<3 {
            try Self.setGradients(parameters, step: step)
            try optimizer.step()
        }
        for (parameter, old) in zip(parameters, before) {
            #expect(BFloat16Parameters.holdsBFloat16(UnsafeBufferPointer(parameter.values)), "\(name): \(parameter.name) holds a non-bfloat16 value")
            #expect(parameter.valueArray != old, "\(name): \(parameter.name) did not move")
        }
    }

    @Test func stochasticRoundingMovesWhatNearestEvenLoses() throws {
        // A learning rate whose steps are far below half a bfloat16 step: nearest even keeps every
        // value where it was; stochastic rounding moves them, by the right amount on average.
        let nearest = try Self.run(OptimizerConfiguration(name: "sgd", hyperparameters: ["lr": .number(1e-4)]), steps: 4)
        let stochastic = try Self.run(Self.configuration("sgd", ["lr": .number(1e-4)]), steps: 4)
        // Elements of at least 0.25 in size: half a bfloat16 step is 2⁻¹⁰ or more, each SGD step
        // (lr 1e-4, gradients within ±0.1) at most 1e-5.
        let initial = try Self.model(seed: 3).map { $0.values.map(\.bitPattern) }
        func moved(_ run: [[UInt32]]) -> Int {
            zip(run.joined(), initial.joined()).filter { abs(Float(bitPattern: $1)) >= 0.25 && $0 != $1 }.count
        }
        let large = initial.joined().filter { abs(Float(bitPattern: $0)) >= 0.25 }.count
        #expect(large > 50_000)
        #expect(moved(nearest) == 0)
        #expect(moved(stochastic) > large / 1000, "\(moved(stochastic)) of \(large) moved")
    }

    @Test func everyPathThreadCountAndChunkingGivesTheSameBits() throws {
        let configuration = Self.configuration("adamw", ["state_dtype": .string("int8")])
        let reference = try Self.run(configuration, steps: 3, threads: 1, path: .baseline)
        for path in KernelDispatch.available {
            #expect(try Self.run(configuration, steps: 3, threads: 2, path: path) == reference, "\(path.rawValue)")
        }
        #expect(try Self.run(configuration, steps: 3, threads: 3) == reference)
        #expect(try Self.run(Self.configuration("adamw", ["bf16_rounding_seed": .number(6)]), steps: 3) != reference)
    }

    @Test func aCheckpointStoresBF16AndResumesBitExact() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bf16-params-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("checkpoint.safetensors")
        let configuration = Self.configuration("lion", ["state_dtype": .string("bfloat16")])

        let straight = try Self.run(configuration, steps: 6)
        let first = try Self.model(seed: 3)
        let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: first)
        for step in 0..<3 {
            try Self.setGradients(first, step: step)
            try optimizer.step()
        }
        try Checkpoint.save(optimizer, to: file)
        let stored = try SafetensorsFile(contentsOf: file)
        #expect(try stored.info("w").dtype == .BF16)

        let second = try Self.model(seed: 42)
        let resumed = try OptimizerRegistry.makeOptimizer(configuration, parameters: second)
        _ = try Checkpoint.load(from: file, into: resumed)
        for step in 3..<6 {
            try Self.setGradients(second, step: step)
            try resumed.step()
        }
        #expect(second.map { $0.values.map(\.bitPattern) } == straight)

        // Into float32 parameters: refused, nothing changed.
        let float32 = try Self.model(seed: 42, dtype: .float32)
        let before = float32.map(\.valueArray)
        let other = try OptimizerRegistry.makeOptimizer(configuration, parameters: float32)
        #expect(throws: OptimError.self) { _ = try Checkpoint.load(from: file, into: other) }
        #expect(float32.map(\.valueArray) == before)
    }

    @Test func anOptimizerThatUpdatesFloat32OnlyRefusesABFloat16Parameter() throws {
        for name in ["muon", "adafactor", "lbfgs", "sparse_adam", "prodigy", "lamb", "soap"] {
            let parameter = try Parameter(name: "m", shape: [8, 8], repeating: 0.5)
            parameter.convert(to: .bfloat16)
            let configuration = OptimizerConfiguration(name: name, hyperparameters: [:])
            #expect {
                _ = try OptimizerRegistry.makeOptimizer(configuration, parameters: [parameter])
            } throws: { error in
                "\(error)".contains("'m' is bfloat16") && "\(error)".contains("adamw")
            }
        }
        let parameter = try Parameter(name: "m", shape: [4], repeating: 0.5)
        parameter.convert(to: .bfloat16)
        #expect(throws: OptimError.self) { _ = try Lookahead(try AdamW([parameter])) }
        // A flag an optimizer without bfloat16 parameters does not read is an unknown hyperparameter.
        #expect(throws: OptimError.self) {
            _ = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "muon", hyperparameters: ["bf16_stochastic_round": .bool(true)]),
                                                    parameters: [try Parameter(name: "m", shape: [4, 4])])
        }
    }

    @Test func aDTypeChangedAfterTheOptimizerWasBuiltIsRefusedAtTheStep() throws {
        let parameter = try Parameter(name: "w", shape: [16], repeating: 0.3)
        let optimizer = try AdamW([parameter])
        parameter.convert(to: .bfloat16)
        let before = parameter.valueArray
        try parameter.setGradient([Float](repeating: 1, count: 16))
        #expect(throws: OptimError.self) { try optimizer.step() }
        #expect(parameter.valueArray == before)
        #expect(try optimizer.stepCount(of: parameter) == 0)
    }

    @Test func badSeedsAreRefused() throws {
        for seed: Double in [-1, 0.5, .nan, 1e17] {
            #expect(throws: OptimError.self) {
                _ = try OptimizerRegistry.makeOptimizer(Self.configuration("adamw", ["bf16_rounding_seed": .number(seed)]),
                                                        parameters: [try Parameter(name: "w", shape: [4])])
            }
        }
        #expect(throws: OptimError.self) { _ = try AdamW([try Parameter(name: "w", shape: [4])], hyperparameters: .init(statePrecision: .init(parameterRounding: .stochastic(seed: .max)))) }
    }

    @Test func conversionRoundsToNearestEvenAndSetValuesKeepsBFloat16() throws {
        let parameter = try Parameter(name: "w", shape: [3], values: [1 + 0x1p-8, 1 + 0x1p-8 + 0x1p-20, -3.0])
        parameter.convert(to: .bfloat16)
        #expect(parameter.valueArray == [1, 1 + 0x1p-7, -3])  // the tie to even, then above it
        try parameter.setValues([0.1, 0.2, 0.3])
        #expect(BFloat16Parameters.holdsBFloat16(UnsafeBufferPointer(parameter.values)))
        #expect(parameter.valueArray == [0.1, 0.2, 0.3].map(BFloat16Parameters.roundNearest))
        #expect("\(parameter)".contains("bfloat16"))
    }
}
