import Foundation
import Optim
import OptimFixtures
import Safetensors
import Testing

/// 4-bit optimizer state (``StateDType/int4``) against torchao 0.18's `AdamW4bit` / `Adam4bit`:
/// the 16-entry maps and blockwise quantization from `Tests/Fixtures/lowbit/torchao-4bit-quantization.json`,
/// which `tools/reference/make_torchao_fixtures.py` wrote with torchao. (The state, step by step,
/// is compared by ``LowPrecisionStateTests/stateMatchesTheReference(path:)``; the trajectories by
/// the reference fixtures `adam(w)-int4-*`.)
@Suite struct FourBitStateTests {
    static let quantization = LowPrecisionStateTests.folder.appendingPathComponent("torchao-4bit-quantization.json")

    @Test func mapsAreTorchaoMapsBitForBit() throws {
        let fixture = try LowPrecisionStateTests.json(Self.quantization)
        let maps = try #require(fixture["maps"] as? [String: Any])
        #expect(bits(FourBitMap.signed.values) == bits(LowPrecisionStateTests.floats(maps["signed"])))
        #expect(bits(FourBitMap.unsigned.values) == bits(LowPrecisionStateTests.floats(maps["unsigned"])))
        #expect(fixture["block_size"] as? Int == FourBitQuantization.blockSize)
    }

    @Test func quantizationMatchesTorchaoBitForBit() throws {
        let fixture = try LowPrecisionStateTests.json(Self.quantization)
        let cases = try #require(fixture["cases"] as? [[String: Any]])
        #expect(cases.count >= 10)
        for entry in cases {
            let name = entry["name"] as? String ?? "?"
            let map: FourBitMap = entry["map"] as? String == "signed" ? .signed : .unsigned
            let data = LowPrecisionStateTests.floats(entry["data"])
            let (codes, scales) = FourBitQuantization.quantize(data, map: map)
            let expectedCodes = LowPrecisionStateTests.bytes(entry["codes"])
            #expect(codes == expectedCodes, "\(name): \(zip(codes, expectedCodes).filter { $0 != $1 }.count) code bytes differ")
            #expect(bits(scales) == bits(LowPrecisionStateTests.floats(entry["scale"])), "\(name): scale")
            let back = FourBitQuantization.dequantize(codes: expectedCodes, scales: LowPrecisionStateTests.floats(entry["scale"]), map: map)
            #expect(bits(back) == bits(LowPrecisionStateTests.floats(entry["dequantized"])), "\(name): dequantized")
        }
    }

    @Test func quantizationEdgeCases() {
        // A zero block gets torchao's smallest scale and zero values back; a NaN makes the block's
        // scale NaN and every code 0 (torch's amax propagates NaN); the first element is the high nibble.
        var values = [Float](repeating: 0, count: 256)
        values[128] = 1
        values[129] = -1
        let (codes, scales) = FourBitQuantization.quantize(values, map: .signed)
        #expect(scales == [1e-12, 1])
        #expect(FourBitQuantization.dequantize(codes: codes, scales: scales, map: .signed)[0..<128].allSatisfy { $0 == 0 })
        #expect(codes[64] == 0xF0)  // 1 → code 15 (high nibble), −1 → code 0 (−0.8875 is the nearest)
        values[3] = .nan
        let (nanCodes, nanScales) = FourBitQuantization.quantize(values, map: .signed)
        #expect(nanScales[0].isNaN && nanCodes[0..<64].allSatisfy { $0 == 0 } && nanScales[1] == 1)
    }

    // MARK: the engine

    /// Parameters torchao quantizes (4096 and 4224 elements) and two it leaves in float32 (130: too
    /// small; 4100: not a multiple of 128).
    static func model(seed: UInt64) throws -> [Parameter] {
        var random = SplitMix(seed: seed)
        return try [("w", [32, 128]), ("b", [130]), ("e", [4224]), ("o", [4100])].map {
            try Parameter(name: $0.0, shape: $0.1, values: random.floats($0.1.reduce(1, *)))
        }
    }

    static let configurations: [(String, HyperparameterDictionary)] = [
        ("adamw", ["state_dtype": .string("int4"), "lr": .number(0.01)]),
        ("adam", ["state_dtype": .string("int4"), "lr": .number(0.01), "weight_decay": .number(0.01)]),
    ]

    @Test func tensorsTorchaoLeavesOutKeepFloat32State() throws {
        for (name, hyperparameters) in Self.configurations {
            let parameters = try Self.model(seed: 1)
            let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, hyperparameters), parameters: parameters)
            try LowPrecisionStateTests.train(optimizer, parameters, steps: 0..<2)
            let snapshot = optimizer.snapshot()
            for parameter in ["w", "e"] {
                let buffers = try #require(snapshot.parameters[parameter]).quantizedBuffers
                #expect(Set(buffers.keys) == ["exp_avg", "exp_avg_sq"] && snapshot.parameters[parameter]!.buffers.isEmpty, "\(name) \(parameter)")
                let count = parameters.first { $0.name == parameter }!.count
                #expect(buffers["exp_avg"]!.codes.count == count / 2 && buffers["exp_avg"]!.absmax.count == count / 128)
            }
            for parameter in ["b", "o"] {
                #expect(snapshot.parameters[parameter]!.quantizedBuffers.isEmpty && snapshot.parameters[parameter]!.buffers.count == 2, "\(name) \(parameter)")
            }
            // state(of:) reads 4-bit state back as float32: map[code] · scale.
            let stored = snapshot.parameters["w"]!.quantizedBuffers["exp_avg_sq"]!
            let values = try #require(try optimizer.state(of: parameters[0])["exp_avg_sq"])
            #expect(bits(values) == bits(FourBitQuantization.dequantize(codes: stored.codes, scales: stored.absmax, map: .unsigned)))
            #expect(values.contains { $0 != 0 })
        }
    }

    @Test func everyInstructionSetThreadCountAndMetricsGiveTheSameBits() throws {
        for (name, hyperparameters) in Self.configurations {
            var results: [OptimizerSnapshot] = [], values: [[UInt32]] = []
            for isa in KernelDispatch.available {
                for (threads, metrics) in [(1, false), (2, true)] {
                    try KernelDispatch.withInstructionSet(isa) {
                        let parameters = try Self.model(seed: 10)
                        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, hyperparameters), parameters: parameters,
                                                                            threadPool: ThreadPool(threadCount: threads))
                        #expect(optimizer.instructionSet == isa)
                        try LowPrecisionStateTests.train(optimizer, parameters, steps: 0..<3, metrics: metrics)
                        results.append(optimizer.snapshot())
                        values.append(parameters.flatMap { bits($0.valueArray) })
                    }
                }
            }
            #expect(results.allSatisfy { $0 == results[0] } && values.allSatisfy { $0 == values[0] }, "\(name) on \(KernelDispatch.available)")
        }
    }

    /// The fused requantization of every instruction set (AVX2: a binary search by permutes; the
    /// baseline and AVX-512: a scan of the table) against ``FourBitQuantization/quantize(_:map:)``,
    /// for every entry of both maps, every midpoint between neighbours (where the code rounds up),
    /// the floats either side of each, and a dense grid of [−1, 1]. With β = (0, 0) torchao's
    /// lerps give exactly `m = g` and `v = g·g`, and each block of 128 holds a 1, so that the values
    /// are their own normalized values.
    @Test func fusedRequantizationMatchesTheScanAtEveryEdge() throws {
        var edges: [Float] = []
        for map in [FourBitMap.signed, .unsigned] {
            let entries = map.values
            for (index, entry) in entries.enumerated() {
                edges += [entry, entry.nextUp, entry.nextDown]
                if index + 1 < entries.count {
                    let middle = entry + (entries[index + 1] - entry) * 0.5
                    edges += [middle, middle.nextUp, middle.nextDown]
                }
            }
        }
        edges += (0...20000).map { -1 + 2 * Float($0) / 20000 }
        var values: [Float] = []
        for value in edges.filter({ abs($0) <= 1 }) {
            if values.count % 128 == 127 { values.append(1) }
            values.append(value)
        }
        while values.count % 128 != 0 { values.append(values.count % 128 == 127 ? 1 : 0.5) }
        let signed = FourBitQuantization.quantize(values, map: .signed)
        let gradient = values.map { abs($0).squareRoot() }
        let unsigned = FourBitQuantization.quantize(gradient.map { $0 * $0 }, map: .unsigned)
        for isa in KernelDispatch.available {
            try KernelDispatch.withInstructionSet(isa) {
                for (name, input, expected) in [("exp_avg", values, signed), ("exp_avg_sq", gradient, unsigned)] {
                    let parameter = try Parameter(name: "w", shape: [values.count])
                    let adam = try OptimizerRegistry.makeOptimizer(defaultConfiguration("adam", ["state_dtype": .string("int4"), "betas": .numbers([0, 0])]),
                                                                   parameters: [parameter])
                    try parameter.setGradient(input)
                    try adam.step()
                    let state = try #require(adam.snapshot().parameters["w"]?.quantizedBuffers[name])
                    let differing = zip(state.codes, expected.codes).filter { $0 != $1 }.count
                    #expect(state.codes.count == expected.codes.count && differing == 0, "\(isa) \(name): \(differing) code bytes differ")
                    #expect(bits(state.absmax) == bits(expected.scales), "\(isa) \(name): scales")
                }
            }
        }
    }

    @Test func metricsAreCollectedFor4BitState() throws {
        let parameters = try Self.model(seed: 3)
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration("adamw", ["state_dtype": .string("int4")]), parameters: parameters)
        for parameter in parameters { try parameter.setGradient([Float](repeating: 0.5, count: parameter.count)) }
        let metrics = try #require(try optimizer.step(collectingMetrics: true))
        let sums = try #require(metrics.sums["w"])
        // First step: m = lerp(0, g, 0.1) = 0.1·g in float32, before it is quantized.
        let m = Double(Float(0.1) * 0.5)
        #expect(abs(sums.gradientSquared - 4096 * 0.25) < 1e-6)
        #expect(abs(sums.momentSquared! - 4096 * m * m) < 1e-6)
        #expect(sums.updateSquared > 0)
    }

    @Test func checkpointStores4BitStateAsHeldAndResumesBitForBit() throws {
        for (name, hyperparameters) in Self.configurations {
            try LowPrecisionStateTests.expectCheckpointResumesBitForBit(name, hyperparameters, seed: 5, model: Self.model(seed:)) { file, optimizer throws in
                #expect(try file.info("state/w/exp_avg.codes").dtype == .U8)
                #expect(try file.info("state/w/exp_avg.codes").shape == [2048])
                #expect(try file.info("state/w/exp_avg_sq.absmax").shape == [32])
                #expect(try file.info("state/o/exp_avg").dtype == .F32)  // 4100 elements: float32
                #expect(try file.bytes("state/e/exp_avg.codes") == Data(optimizer.snapshot().parameters["e"]!.quantizedBuffers["exp_avg"]!.codes))
            }
        }
    }

    /// A 4-bit checkpoint into an 8-bit or float32 optimizer, and back: refused, nothing changed.
    @Test func checkpointOfAnotherStateDTypeIsRefusedAndNothingChanges() throws {
        let urls = try (0..<3).map { _ in try CheckpointTests.temporaryFile() }
        defer { for url in urls { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) } }
        let dtypes = ["int4", "int8", "float32"]
        var optimizers: [(any Optimizer, [Parameter])] = []
        for (url, dtype) in zip(urls, dtypes) {
            let parameters = try Self.model(seed: 6)
            let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration("adamw", ["state_dtype": .string(dtype)]), parameters: parameters)
            try LowPrecisionStateTests.train(optimizer, parameters, steps: 0..<2)
            try Checkpoint.save(optimizer, to: url)
            optimizers.append((optimizer, parameters))
        }
        for (into, from) in [(0, 1), (0, 2), (1, 0), (2, 0)] {
            let (optimizer, parameters) = optimizers[into]
            let before = optimizer.snapshot(), values = parameters.map { bits($0.valueArray) }
            do {
                try Checkpoint.load(from: urls[from], into: optimizer)
                Issue.record("a \(dtypes[from]) checkpoint was accepted by a \(dtypes[into]) optimizer")
            } catch let error as OptimError {
                guard case let .checkpointMismatch(message) = error else { Issue.record("\(error)"); continue }
                #expect(message.contains(dtypes[from]) && message.contains(dtypes[into]) && message.contains("state_dtype"), "\(message)")
            }
            #expect(optimizer.snapshot() == before)
            #expect(parameters.map { bits($0.valueArray) } == values)
        }
    }

    @Test func checkpointWithWrongCodeCountIsRefused() throws {
        let parameters = try Self.model(seed: 8)
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration("adamw", ["state_dtype": .string("int4")]), parameters: parameters)
        try LowPrecisionStateTests.train(optimizer, parameters, steps: 0..<1)
        let before = optimizer.snapshot()
        var oneCodeAnElement = before
        // As many bytes as elements: an 8-bit layout where 4-bit state belongs.
        oneCodeAnElement.parameters["w"]!.quantizedBuffers["exp_avg"]!.codes += [UInt8](repeating: 0, count: 2048)
        var blocksOf256 = before
        blocksOf256.parameters["w"]!.quantizedBuffers["exp_avg_sq"]!.absmax.removeLast(16)
        for snapshot in [oneCodeAnElement, blocksOf256] {
            let error = #expect(throws: OptimError.self) { try optimizer.restore(snapshot) }
            #expect(error.map { "\($0)".contains("4-bit") && "\($0)".contains("blocks of 128") } == true, "\(String(describing: error))")
            #expect(optimizer.snapshot() == before)
        }
    }

    @Test func only4BitCapableOptimizersAcceptIt() throws {
        let parameter = try Parameter(name: "w", shape: [4096])
        #expect(OptimizerRegistry.all.filter { $0.stateDTypes.contains(.int4) }.map(\.name).sorted() == ["adam", "adamw"])
        for (name, extra) in [("lion", [:]), ("sgd", ["momentum": HyperparameterValue.number(0.9)]), ("decoupled_adamw", [:])]
            as [(String, HyperparameterDictionary)] {
            var hyperparameters = extra
            hyperparameters["state_dtype"] = .string("int4")
            let error = #expect(throws: OptimError.self, "\(name) accepted state_dtype int4") {
                try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, hyperparameters), parameters: [parameter])
            }
            #expect(error.map { "\($0)".contains("int4") && "\($0)".contains(name) } == true, "\(String(describing: error))")
        }
    }

    /// The measured bytes of the buffers AdamW holds after its first step: two codes a byte plus a
    /// float32 scale per 128 elements, for each of its two moments.
    @Test func adamW4BitStateTakesAboutOneBytePerParameter() throws {
        let count = 1 << 20
        let parameter = try Parameter(name: "w", shape: [count])
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration("adamw", ["state_dtype": .string("int4")]), parameters: [parameter])
        try parameter.setGradient([Float](repeating: 0.1, count: count))
        try optimizer.step()
        let perParameter = Double(try #require(optimizer.optimizerStateBytes)) / Double(count)
        #expect(perParameter >= 1.0 && perParameter <= 1.07, "\(perParameter) bytes per parameter")
    }
}
