import Foundation
import Optim
import OptimFixtures
import Safetensors
import Testing

/// bfloat16 parameters with float32 master weights (`master_weights`, held as the parameter plus a
/// 16-bit remainder) and with Kahan-compensated rounding (`kahan_sum`). The master weights are
/// checked against the reference fixtures themselves: every float32 fixture of the optimizers that
/// update bfloat16 parameters (torch.optim, lion-pytorch, torch-adopt, composer, bitsandbytes and
/// torchao trajectories) replayed with bfloat16 parameters, the masters compared with the
/// reference's float32 values. Kahan compensation has no reference implementation with the same
/// order of operations (optimi adds the update to the compensation first), so it is checked
/// against the float32 trajectory within the error its formula allows.
@Suite struct BFloat16MasterWeightTests {
    static let bfloat16Optimizers = OptimizerRegistry.all.filter(\.updatesBFloat16Parameters).map(\.name)

    /// How many elements differ (and any difference in length): large arrays are compared by
    /// this count, not by `==` inside `#expect`, whose failure report diffs them.
    static func differing<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
        zip(a, b).filter { $0 != $1 }.count + abs(a.count - b.count)
    }

    // MARK: the split

    /// Edge cases and random bit patterns: every class of float32.
    static func patterns() -> [UInt32] {
        var patterns: [UInt32] = [0, 0x8000_0000, 1, 0x8000_0001, 0x0000_8000, 0x8000_8000, 0x0000_7FFF, 0x007F_FFFF, 0x0080_0000,
                                  0x3F80_0000, 0x3F80_8000, 0x3F81_8000, 0xBF80_8000, 0x3F80_7FFF, 0x3F80_8001, 0x3FFF_8000,
                                  0x7F7F_7FFF, 0x7F7F_8000, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F80_0000, 0xFF80_0000,
                                  0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFFFF_FFFF, 0x7FFF_8000]
        var random = SplitMix(seed: 77)
        for _ in 0..<20_000 { patterns.append(UInt32(truncatingIfNeeded: random.next())) }
        return patterns
    }

    @Test func splitThenJoinGivesEveryMasterBackAndTheNearestBFloat16() {
        for bits in Self.patterns() {
            let master = Float(bitPattern: bits)
            let (value, remainder) = BFloat16Parameters.split(master: master)
            #expect(value.bitPattern & 0xFFFF == 0, "\(String(bits, radix: 16)): not a bfloat16")
            if master.isNaN {
                #expect(value.isNaN && remainder == 0)
                continue
            }
            #expect(BFloat16Parameters.master(value: value, remainder: remainder).bitPattern == bits, "\(String(bits, radix: 16))")
            // The nearest of the two bfloat16 neighbours in Double arithmetic, ties away from zero
            // (the one past the largest finite counts as 2¹²⁸, as IEEE rounding's overflow does).
            let toward = bits & 0xFFFF_0000, away = toward &+ 0x1_0000
            func real(_ pattern: UInt32) -> Double {
                pattern & 0x7FFF_FFFF == 0x7F80_0000 ? (pattern >> 31 == 1 ? -0x1p128 : 0x1p128) : Double(Float(bitPattern: pattern))
            }
            let below = abs(Double(master) - real(toward)), above = abs(real(away) - Double(master))
            let nearest = master.isInfinite || below < above ? toward : away
            #expect(value.bitPattern == nearest, "\(String(bits, radix: 16)) → \(String(value.bitPattern, radix: 16))")
        }
    }

    /// Each path's vector loops join and split as the scalar code does: masters of every class set,
    /// then a step that changes nothing (SGD, zero gradients).
    @Test func theVectorLoopsOfEveryPathAreTheScalarSplitAndJoin() throws {
        let masters = Self.patterns().map { Float(bitPattern: $0) }.filter { !$0.isNaN }
        for path in KernelDispatch.available {
            let parameter = try Parameter(name: "w", shape: [masters.count])
            parameter.convert(to: .bfloat16)
            let optimizer = try KernelDispatch.withInstructionSet(path) {
                try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "sgd", hyperparameters: ["lr": .number(1e-3), "master_weights": .bool(true)]),
                                                    parameters: [parameter])
            }
            #expect(optimizer.instructionSet == path)
            try optimizer.setMasterWeights(masters, of: parameter)
            try parameter.setGradient([Float](repeating: 0, count: masters.count))
            try optimizer.step()
            #expect(Self.differing(try optimizer.state(of: parameter)["master_weight"]?.map(\.bitPattern) ?? [], masters.map(\.bitPattern)) == 0, "\(path.rawValue): masters")
            #expect(Self.differing(parameter.values.map(\.bitPattern), masters.map { BFloat16Parameters.split(master: $0).value.bitPattern }) == 0, "\(path.rawValue): values")
        }
    }

    // MARK: master weights against the references

    /// The float32 reference fixtures of the optimizers that update bfloat16 parameters, steps given
    /// as gradients (no closure), one optimizer (no wrapper).
    static let float32Fixtures: [String] = Paths.jsonFiles(in: Paths.referenceFixtures).filter { path in
        guard let fixture = try? Fixture(contentsOf: URL(fileURLWithPath: path)) else { return false }
        return fixture.parameterDType == .float32 && fixture.objective == nil && fixture.configuration.base == nil
            && bfloat16Optimizers.contains(fixture.configuration.name)
    }

    @Test func everyOptimizerWithBFloat16ParametersHasFixturesToReplay() {
        let names = Set(Self.float32Fixtures.compactMap { try? Fixture(contentsOf: URL(fileURLWithPath: $0)).configuration.name })
        #expect(names == Set(Self.bfloat16Optimizers), "\(Set(Self.bfloat16Optimizers).subtracting(names))")
        #expect(Self.float32Fixtures.count > 80)
    }

    /// The masters take the reference's float32 steps: the fixture replays with bfloat16
    /// parameters and master weights, with the same largest error as the float32 replay (zero for
    /// the bit-exact ones).
    @Test(arguments: float32Fixtures)
    func masterWeightsReplayTheFloat32Reference(path: String) throws {
        let fixture = try Fixture(contentsOf: URL(fileURLWithPath: path))
        let float32 = try fixture.replay(file: path)
        var bfloat16 = fixture
        bfloat16.parameterDType = .bfloat16
        bfloat16.configuration.hyperparameters["master_weights"] = .bool(true)
        let result = try bfloat16.replay(file: path)
        #expect(result.passed, "\(result.name): \(result.firstMismatch ?? "")")
        #expect(result.maxAbsoluteError == float32.maxAbsoluteError, "\(result.name): \(result.maxAbsoluteError) against float32's \(float32.maxAbsoluteError)")
    }

    // MARK: the engine

    static func model(seed: UInt64, dtype: ParameterDType) throws -> [Parameter] {
        var random = SplitMix(seed: seed)
        let shapes: [(String, [Int])] = [("w", [300, 250]), ("b", [250]), ("e", [7000])]
        return try shapes.map { name, shape in
            // bfloat16 numbers either way, so float32 and bfloat16 runs start at the same values;
            // in [0.6, 1.4], where half a bfloat16 step (2⁻⁹ or 2⁻⁸) exceeds an update of 1e-3.
            let values = random.floats(shape.reduce(1, *), in: 0.6...1.4).map(BFloat16Parameters.roundNearest)
            let parameter = try Parameter(name: name, shape: shape, values: values)
            parameter.convert(to: dtype)
            return parameter
        }
    }

    static func setGradients(_ parameters: [Parameter], step: Int) throws {
        var random = SplitMix(seed: 500 + UInt64(step))
        for parameter in parameters { try parameter.setGradient(random.floats(parameter.count, in: -1...1)) }
    }

    static func configuration(_ name: String, _ extra: HyperparameterDictionary) -> OptimizerConfiguration {
        var hyperparameters: HyperparameterDictionary = ["lr": .number(1e-4)]
        if name == "sgd" { hyperparameters["momentum"] = .number(0.9) }
        return OptimizerConfiguration(name: name, hyperparameters: hyperparameters.merging(extra) { $1 })
    }

    /// Runs `steps` steps; returns the parameters and the optimizer.
    static func run(_ configuration: OptimizerConfiguration, dtype: ParameterDType, steps: Int, threads: Int = 2,
                    path: InstructionSet? = nil) throws -> ([Parameter], any Optimizer) {
        let parameters = try model(seed: 3, dtype: dtype)
        let optimizer = try trainSteps(configuration, parameters, steps: steps, threads: threads, path: path) { try setGradients($0, step: $1) }
        return (parameters, optimizer)
    }

    /// Given the same gradients, a bfloat16 parameter's master is the float32 parameter bit for
    /// bit, for every optimizer that updates bfloat16 parameters and every state format.
    @Test(arguments: bfloat16Optimizers)
    func theMasterIsTheFloat32ParameterBitForBit(optimizer name: String) throws {
        let info = try OptimizerRegistry.info(named: name)
        for dtype in info.stateDTypes {
            let state: HyperparameterDictionary = ["state_dtype": .string(dtype.rawValue)]
            let (float32, _) = try Self.run(Self.configuration(name, state), dtype: .float32, steps: 4)
            let (bfloat16, optimizer) = try Self.run(Self.configuration(name, state.merging(["master_weights": .bool(true)]) { $1 }),
                                                     dtype: .bfloat16, steps: 4)
            for (reference, parameter) in zip(float32, bfloat16) {
                let masters = try #require(try optimizer.state(of: parameter)["master_weight"])
                #expect(Self.differing(masters.map(\.bitPattern), reference.values.map(\.bitPattern)) == 0, "\(name), \(dtype) state: \(parameter.name)")
                #expect(Self.differing(parameter.valueArray, masters.map { BFloat16Parameters.split(master: $0).value }) == 0)
            }
        }
    }

    /// Updates of a tenth of a bfloat16 step: nearest even loses all of them; Kahan compensation
    /// keeps the parameter plus its compensation within a small part of a bfloat16 step of the
    /// float32 trajectory.
    @Test func kahanCompensationKeepsWhatNearestEvenLoses() throws {
        let steps = 60
        let sgd: HyperparameterDictionary = ["lr": .number(1e-3), "momentum": .number(0)]
        let (float32, _) = try Self.run(Self.configuration("sgd", sgd), dtype: .float32, steps: steps)
        let (nearest, _) = try Self.run(Self.configuration("sgd", sgd), dtype: .bfloat16, steps: steps)
        let (kahan, optimizer) = try Self.run(Self.configuration("sgd", sgd.merging(["kahan_sum": .bool(true)]) { $1 }), dtype: .bfloat16, steps: steps)
        let initial = try Self.model(seed: 3, dtype: .bfloat16)
        var compensatedError = 0.0, nearestError = 0.0, moved = 0
        for index in 0..<3 {
            let compensation = try #require(try optimizer.state(of: kahan[index])["kahan_comp"])
            #expect(BFloat16Parameters.holdsBFloat16(UnsafeBufferPointer(kahan[index].values)))
            for element in 0..<float32[index].count {
                let reference = Double(float32[index].values[element])
                let step = Double(Float(bitPattern: (Float(reference).bitPattern & 0x7F80_0000))) / 128  // a bfloat16 step at the value
                compensatedError = max(compensatedError, abs(Double(kahan[index].values[element]) + Double(compensation[element]) - reference) / step)
                nearestError = max(nearestError, abs(Double(nearest[index].values[element]) - reference) / step)
                if kahan[index].values[element] != initial[index].values[element] { moved += 1 }
            }
            #expect(Self.differing(nearest[index].valueArray, initial[index].valueArray) == 0, "nearest even moved \(nearest[index].name)")
        }
        // 60 steps of up to 1e-3 against bfloat16 steps of 2⁻⁷ or 2⁻⁶ near 1: nearest even is up
        // to several steps off; the compensated sum stays within a small part of one.
        #expect(nearestError > 2, "nearest even: \(nearestError) steps off")
        #expect(compensatedError < 0.1, "Kahan: \(compensatedError) steps off")
        #expect(moved > 30_000, "\(moved) moved")
    }

    @Test func everyPathThreadCountAndChunkingGivesTheSameBits() throws {
        for extra: HyperparameterDictionary in [["master_weights": .bool(true)], ["kahan_sum": .bool(true)],
                                                ["master_weights": .bool(true), "state_dtype": .string("int8")]] {
            let configuration = Self.configuration("adamw", extra)
            func bits(_ run: ([Parameter], any Optimizer)) throws -> [UInt32] {
                try run.0.flatMap { parameter in
                    try parameter.values.map(\.bitPattern) + (run.1.state(of: parameter).filter { $0.key != "exp_avg" && $0.key != "exp_avg_sq" }
                        .sorted { $0.key < $1.key }.flatMap(\.value).map(\.bitPattern))
                }
            }
            let reference = try bits(Self.run(configuration, dtype: .bfloat16, steps: 3, threads: 1, path: .baseline))
            for path in KernelDispatch.available {
                #expect(Self.differing(try bits(Self.run(configuration, dtype: .bfloat16, steps: 3, threads: 2, path: path)), reference) == 0, "\(extra): \(path.rawValue)")
            }
            #expect(Self.differing(try bits(Self.run(configuration, dtype: .bfloat16, steps: 3, threads: 3)), reference) == 0, "\(extra): 3 threads")
        }
    }

    @Test(arguments: [("master_weights", "master_weight_remainder", DType.I16), ("kahan_sum", "kahan_comp", DType.BF16)])
    func aCheckpointStoresTheBufferAsHeldAndResumesBitExact(flag: String, buffer: String, dtype: DType) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bf16-master-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("checkpoint.safetensors")
        let configuration = Self.configuration("lion", [flag: .bool(true), "state_dtype": .string("bfloat16")])

        let (straight, _) = try Self.run(configuration, dtype: .bfloat16, steps: 6)
        let (first, optimizer) = try Self.run(configuration, dtype: .bfloat16, steps: 3)
        try Checkpoint.save(optimizer, to: file)
        let stored = try SafetensorsFile(contentsOf: file)
        #expect(try stored.info("state/w/\(buffer)").dtype == dtype)
        #expect(try stored.info("state/w/\(buffer)").shape == [300, 250])
        #expect(try stored.info("w").dtype == .BF16)
        _ = first

        let second = try Self.model(seed: 42, dtype: .bfloat16)
        let resumed = try OptimizerRegistry.makeOptimizer(configuration, parameters: second)
        _ = try Checkpoint.load(from: file, into: resumed)
        for step in 3..<6 {
            try Self.setGradients(second, step: step)
            try resumed.step()
        }
        #expect(Self.differing(second.flatMap { $0.values.map(\.bitPattern) }, straight.flatMap { $0.values.map(\.bitPattern) }) == 0)

        // Into an optimizer without the buffer (nearest rounding): refused, nothing changed.
        let other = try Self.model(seed: 42, dtype: .bfloat16)
        let before = other.map(\.valueArray)
        let plain = try OptimizerRegistry.makeOptimizer(Self.configuration("lion", ["state_dtype": .string("bfloat16")]), parameters: other)
        #expect { _ = try Checkpoint.load(from: file, into: plain) } throws: { "\($0)".contains(flag) || "\($0)".contains(buffer) }
        #expect(Self.differing(other.flatMap(\.valueArray), before.flatMap { $0 }) == 0)
    }

    @Test func setMasterWeightsKeepsFloat32WeightsWhole() throws {
        let values: [Float] = [1 + 0x1p-12, -0.3, 3e-39, 65504.123]
        let parameter = try Parameter(name: "w", shape: [4], values: values)
        parameter.convert(to: .bfloat16)
        let optimizer = try OptimizerRegistry.makeOptimizer(Self.configuration("adamw", ["master_weights": .bool(true)]), parameters: [parameter])
        try optimizer.setMasterWeights(values, of: parameter)
        #expect(try optimizer.state(of: parameter)["master_weight"] == values)
        #expect(parameter.valueArray == values.map { BFloat16Parameters.split(master: $0).value })
        #expect(BFloat16Parameters.holdsBFloat16(UnsafeBufferPointer(parameter.values)))
        // A wrong count, and an optimizer without master weights: refused, nothing changed.
        #expect(throws: OptimError.self) { try optimizer.setMasterWeights([1, 2], of: parameter) }
        #expect(try optimizer.state(of: parameter)["master_weight"] == values)
        let plain = try OptimizerRegistry.makeOptimizer(Self.configuration("adamw", [:]), parameters: [parameter])
        let before = parameter.valueArray
        #expect { try plain.setMasterWeights(values, of: parameter) } throws: { "\($0)".contains("master_weights") }
        #expect(parameter.valueArray == before)
        let float32 = try Parameter(name: "f", shape: [4], values: values)
        let withFloat32 = try OptimizerRegistry.makeOptimizer(Self.configuration("adamw", ["master_weights": .bool(true)]), parameters: [float32])
        #expect(throws: OptimError.self) { try withFloat32.setMasterWeights(values, of: float32) }
        #expect(float32.valueArray == values)
    }

    @Test func conflictingRoundingsAndMisplacedFlagsAreRefused() throws {
        let parameter = try Parameter(name: "w", shape: [8], repeating: 0.5)
        parameter.convert(to: .bfloat16)
        let pairs: [HyperparameterDictionary] = [["master_weights": .bool(true), "kahan_sum": .bool(true)],
                                                 ["bf16_stochastic_round": .bool(true), "master_weights": .bool(true)],
                                                 ["bf16_stochastic_round": .bool(true), "kahan_sum": .bool(true)]]
        for pair in pairs {
            #expect { _ = try OptimizerRegistry.makeOptimizer(Self.configuration("adamw", pair), parameters: [parameter]) }
                throws: { "\($0)".contains("one of bf16_stochastic_round, kahan_sum and master_weights") }
        }
        // An optimizer without bfloat16 parameters does not read them: unknown hyperparameters.
        for flag in ["master_weights", "kahan_sum"] {
            #expect(throws: OptimError.self) {
                _ = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "muon", hyperparameters: [flag: .bool(true)]),
                                                        parameters: [try Parameter(name: "m", shape: [4, 4])])
            }
        }
        // Not a rounding for state.
        #expect(throws: OptimError.self) {
            _ = try AdamW([parameter], hyperparameters: .init(statePrecision: .init(dtype: .bfloat16, stateRounding: .masterWeights)))
        }
    }

    /// float32 parameters in a group with master weights keep none: they are float32 already.
    @Test func float32ParametersIgnoreTheFlags() throws {
        for flag in ["master_weights", "kahan_sum"] {
            let (plain, _) = try Self.run(Self.configuration("adamw", [:]), dtype: .float32, steps: 2)
            let (flagged, optimizer) = try Self.run(Self.configuration("adamw", [flag: .bool(true)]), dtype: .float32, steps: 2)
            #expect(Self.differing(plain.flatMap(\.valueArray), flagged.flatMap(\.valueArray)) == 0)
            #expect(try optimizer.state(of: flagged[0]).keys.sorted() == ["exp_avg", "exp_avg_sq"])
            #expect(try optimizer.snapshot().parameters.values.allSatisfy(\.parameterBuffers.isEmpty))
        }
    }
}
