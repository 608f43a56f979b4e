import Foundation
import Optim

/// Paths of the repository and of the shared folder beside it.
enum Paths {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let referenceFixtures = repository.appendingPathComponent("Tests/Fixtures/reference")
    static let sharedExamples = repository.deletingLastPathComponent().appendingPathComponent("shared/fixtures/examples")

    static func jsonFiles(in folder: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
            .filter { $0.hasSuffix(".json") }.sorted()
            .map { folder.appendingPathComponent($0).path }
    }
}

/// A small deterministic generator (SplitMix64), so tests draw the same numbers on every run.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func floats(_ count: Int, in range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &self) }
    }
}

/// A configuration for each registry entry, with Lookahead wrapping AdamW.
func defaultConfiguration(_ name: String, _ hyperparameters: HyperparameterDictionary = [:]) -> OptimizerConfiguration {
    OptimizerConfiguration(name: name, hyperparameters: hyperparameters,
                           base: name == "lookahead" ? OptimizerConfiguration(name: "adamw") : nil)
}

func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// Builds `configuration`'s optimizer over `parameters` on `threads` threads (and the kernel path
/// `path`, or the dispatched one), then takes `steps` steps, `gradients` setting each step's.
func trainSteps(_ configuration: OptimizerConfiguration, _ parameters: [Parameter], steps: Int, threads: Int, path: InstructionSet?,
                gradients: ([Parameter], Int) throws -> Void) throws -> any Optimizer {
    let pool = ThreadPool(threadCount: threads)
    let make = { try OptimizerRegistry.makeOptimizer(configuration, parameters: parameters, threadPool: pool) }
    let optimizer = try path.map { path in try KernelDispatch.withInstructionSet(path, make) } ?? make()
    for step in 0..<steps {
        try gradients(parameters, step)
        try optimizer.step()
    }
    return optimizer
}

/// The registry's optimizers that take parameters of any shape: the generic tests, written over
/// vectors and stepped without a closure, run them; the matrix-only (Muon) and closure-driven
/// (L-BFGS) ones have suites of their own.
let vectorOptimizers = OptimizerRegistry.all.filter { !$0.requiresMatrices && !$0.requiresClosure }.map(\.name)

/// A shape of `count` elements that optimizer `name` takes: `[count]`, or `[1, count]` for a
/// matrix-only optimizer.
func testShape(_ name: String, _ count: Int) -> [Int] {
    (try? OptimizerRegistry.info(named: name))?.requiresMatrices == true ? [1, count] : [count]
}
