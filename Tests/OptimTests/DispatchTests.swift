import Foundation
import Optim
import OptimFixtures
import Testing

/// The kernels chosen at run time (``KernelDispatch``): every path this CPU runs replays the
/// fixtures, and every path gives the same bits as the baseline, for every optimizer option the
/// fixtures exercise and for the matrix multiply.
@Suite struct DispatchTests {
    static let paths = KernelDispatch.available
    static let widerPaths = KernelDispatch.available.filter { $0 != .baseline }
    static let fixtureFiles = FixtureParityTests.referenceFiles + FixtureParityTests.exampleFiles

    @Test func theWidestAvailablePathIsChosenUnlessForced() {
        #expect(Self.paths.first == .baseline)
        #expect(Set(Self.paths).isSubset(of: Set(KernelDispatch.supportedByCPU)))
        if let forced = ProcessInfo.processInfo.environment["OPTIM_ISA"], !forced.isEmpty {
            #expect(KernelDispatch.selected.rawValue == forced)
        } else {
            #expect(KernelDispatch.selected == Self.paths.last)
        }
        #if arch(x86_64)
        // Both kernel modules are linked into the tests: every path the CPU runs is available.
        #expect(Self.paths == KernelDispatch.supportedByCPU)
        #endif
    }

    @Test(arguments: paths)
    func everyElementwiseOptimizerRunsOnThePath(path: InstructionSet) throws {
        for info in OptimizerRegistry.all {
            let optimizer = try KernelDispatch.withInstructionSet(path) {
                try OptimizerRegistry.makeOptimizer(defaultConfiguration(info.name), parameters: [try Parameter(name: "w", shape: testShape(info.name, 3))])
            }
            // Rules that update whole tensors other than by passes (Adafactor) stay on the baseline.
            #expect(optimizer.instructionSet == (info.compiledPerInstructionSet || info.isWrapper ? path : .baseline), "\(info.name)")
        }
        if path != .baseline {
            let elementwise = Set(OptimizerRegistry.all.filter { !$0.isWrapper && $0.compiledPerInstructionSet }.map(\.name))
            let compiled = KernelDispatch.compiledRules(path) ?? []
            #expect(elementwise.subtracting(compiled).isEmpty,
                    "no \(path.rawValue) kernels for \(elementwise.subtracting(compiled).sorted()): list them with `kernelsOf:` in Sources/Optim/Registry/OptimizerList.swift")
        }
    }

    @Test(arguments: paths)
    func fixturesReplayOnThePath(path: InstructionSet) throws {
        #expect(!Self.fixtureFiles.isEmpty)
        for file in Self.fixtureFiles {
            let fixture = try Fixture(contentsOf: URL(fileURLWithPath: file))
            let result = try KernelDispatch.withInstructionSet(path) { try fixture.replay(file: file) }
            #expect(result.passed, "\(path.rawValue): \(result.name): \(result.firstMismatch ?? "")")
        }
    }

    /// Parameters, state and metrics after a few steps of `configuration` on `path`.
    static func run(_ configuration: OptimizerConfiguration, on path: InstructionSet, count: Int, scaled: Bool = false) throws -> [[UInt32]] {
        var random = SplitMix(seed: 11)
        var initial = random.floats(count, in: -2...2)
        initial[0] = 0
        let parameter = try Parameter(name: "w", shape: [count], values: initial)
        let optimizer = try KernelDispatch.withInstructionSet(path) {
            try OptimizerRegistry.makeOptimizer(configuration, parameters: [parameter], threadPool: ThreadPool(threadCount: 2))
        }
        var result: [[UInt32]] = []
        for step in 0..<4 {
            var gradient = random.floats(count, in: -3...3)
            for index in stride(from: step, to: count, by: 7) { gradient[index] = 0 }  // signs of zero, absent elements
            try parameter.setGradient(gradient)
            if scaled && step >= 2 { try optimizer.scaleNextGradient(of: parameter, by: 0.75) }
            if let metrics = try optimizer.step(collectingMetrics: step % 2 == 1) {
                result.append(metrics.values.sorted { $0.key < $1.key }.map { UInt32(truncatingIfNeeded: $0.value.bitPattern) ^ UInt32($0.value.bitPattern >> 32) })
            }
        }
        result.append(bits(parameter.valueArray))
        for (_, state) in try optimizer.state(of: parameter).sorted(by: { $0.key < $1.key }) { result.append(bits(state)) }
        return result
    }

    @Test(.enabled(if: !widerPaths.isEmpty, "this CPU runs the baseline only"))
    func everyPathGivesTheBaselinesBitsForEveryFixtureConfiguration() throws {
        // Each fixture's configuration, so every hyperparameter option is covered; 4,099
        // elements: full vectors and a partial last one.
        var seen = Set<String>()
        for file in FixtureParityTests.referenceFiles {
            let configuration = try Fixture(contentsOf: URL(fileURLWithPath: file)).configuration
            // Rules over whole tensors (Adafactor, Muon, L-BFGS) run on the baseline path only;
            // LAMB, LARS and MARS (passes) run on every path.
            guard try OptimizerRegistry.info(named: (configuration.base ?? configuration).name).compiledPerInstructionSet else { continue }
            guard seen.insert("\(configuration)").inserted else { continue }
            let baseline = try Self.run(configuration, on: .baseline, count: 4_099)
            for path in Self.widerPaths {
                let other = try Self.run(configuration, on: path, count: 4_099)
                // An incremental debug build may keep a kernel module compiled from an edited
                // kernel's old body (the driver does not re-emit Optim's module for a changed
                // @inlinable body): `rm -rf .build/debug/OptimKernels*` and build again.
                #expect(other == baseline, "\(path.rawValue) differs from baseline for \(configuration) (stale kernel module? see the comment)")
            }
        }
        #expect(seen.count > 50)
    }

    /// Prodigy's dispatched chunk loops over several chunks (the fixture configurations above
    /// cover one chunk of 4,099 elements): 70,001 elements on two threads, with the moment and
    /// without, decoupled and coupled decay, a gradient scale (clipping folded into the step).
    @Test(.enabled(if: !widerPaths.isEmpty, "this CPU runs the baseline only"))
    func prodigyGivesTheBaselinesBitsOverSeveralChunks() throws {
        let cases: [HyperparameterDictionary] = [
            ["d0": .number(1e-3)],
            ["d0": .number(1e-3), "betas": .numbers([0, 0.99]), "weight_decay": .number(0.1), "decouple": .bool(false)],
            ["d0": .number(1e-2), "weight_decay": .number(0.01), "safeguard_warmup": .bool(true), "use_bias_correction": .bool(true)],
        ]
        for hyperparameters in cases {
            let configuration = OptimizerConfiguration(name: "prodigy", hyperparameters: hyperparameters)
            let baseline = try Self.run(configuration, on: .baseline, count: 70_001, scaled: true)
            for path in Self.widerPaths {
                let other = try Self.run(configuration, on: path, count: 70_001, scaled: true)
                #expect(other == baseline, "\(path.rawValue) differs from baseline for \(configuration) (stale kernel module?)")
                #expect(try KernelDispatch.withInstructionSet(path) {
                    try OptimizerRegistry.makeOptimizer(configuration, parameters: [try Parameter(name: "w", shape: [3])])
                }.instructionSet == path)
            }
        }
    }

    @Test(.enabled(if: !widerPaths.isEmpty, "this CPU runs the baseline only"))
    func matrixMultiplyGivesTheBaselinesBitsOnEveryPath() throws {
        var random = SplitMix(seed: 13)
        // Edges in every direction, both sides of the threading threshold, every transpose.
        for (m, n, k) in [(1, 1, 1), (7, 17, 5), (6, 16, 256), (13, 35, 300), (100, 70, 130), (150, 200, 90)] {
            for (transposeA, transposeB, accumulate) in [(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
                let a = random.floats(m * k), b = random.floats(k * n), c0 = random.floats(m * n)
                func product(_ path: InstructionSet) -> [UInt32] {
                    var c = c0
                    KernelDispatch.withInstructionSet(path) {
                        a.withUnsafeBufferPointer { a in
                            b.withUnsafeBufferPointer { b in
                                c.withUnsafeMutableBufferPointer { c in
                                    MatMul.gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, c,
                                                accumulate: accumulate, pool: ThreadPool(threadCount: 2))
                                }
                            }
                        }
                    }
                    return bits(c)
                }
                let baseline = product(.baseline)
                for path in Self.widerPaths {
                    #expect(product(path) == baseline, "\(path.rawValue): \(m)×\(n)×\(k) \(transposeA) \(transposeB) \(accumulate)")
                }
            }
        }
    }

    @Test(.enabled(if: !widerPaths.isEmpty, "this CPU runs the baseline only"))
    func transformerKernelsGiveTheBaselinesBitsOnEveryPath() {
        var random = SplitMix(seed: 17)
        // Widths with and without a partial last vector; values wide enough to reach the GELU's
        // saturated tanh and the exp's clamps.
        for (rows, width) in [(3, 128), (5, 37), (2, 16), (4, 7)] {
            let count = rows * width
            let x = random.floats(count, in: -12...12), gradient = random.floats(count)
            let gamma = random.floats(width, in: 0.5...1.5), beta = random.floats(width)
            func outputs(_ path: InstructionSet) -> [UInt32] {
                let kernels = KernelDispatch.transformerKernels(path)
                var result: [Float] = []
                var y = [Float](repeating: 0, count: count), t = y, g = gradient
                var mean = [Float](repeating: 0, count: rows), rstd = mean
                var dx = [Float](repeating: 0.25, count: count), dGamma = [Float](repeating: 0, count: width), dBeta = dGamma
                kernels.gelu(x, &y, &t, count)
                kernels.geluBackward(x, t, &g, count)
                kernels.layerNorm(x, &y, &mean, &rstd, gamma, beta, 0..<rows, width)
                result += y + t + g + mean + rstd
                kernels.layerNormBackward(gradient, x, mean, rstd, gamma, &dx, &dGamma, &dBeta, 0..<rows, width)
                result += dx + dGamma + dBeta
                // A square score matrix of side `width`, its softmax and backward pass.
                var scores = random.floats(width * width, in: -30...30), dP = random.floats(width * width)
                kernels.causalSoftmax(&scores, width, 0.125)
                kernels.causalSoftmaxBackward(scores, &dP, width, 0.125)
                result += scores + dP
                return bits(result)
            }
            let state = random
            let baseline = outputs(.baseline)
            for path in Self.widerPaths {
                random = state
                #expect(outputs(path) == baseline, "\(path.rawValue): \(rows) × \(width)")
            }
        }
    }
}
