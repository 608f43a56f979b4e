import Foundation
@testable import Optim
import Testing

/// A step reuses the last step's plan of tensors and chunks when the same parameters have
/// gradients at the same addresses; it must give the bits of a plan rebuilt from scratch, through
/// every change that must invalidate or refresh it: a gradient removed and given back, a gradient
/// moved to another buffer, a clipping factor, a new learning rate, a checkpoint restored.
@Suite struct StepPlanTests {
    /// Sizes across the chunk size (2¹⁵) and the parallel threshold, and small ones between.
    static let sizes = [5, 70_001, 33, 4_096]

    static func gradient(_ count: Int, seed: Int) -> [Float] {
        (0..<count).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) * 0.5 }
    }

    static func makeParameters(_ name: String) throws -> [Parameter] {
        try sizes.enumerated().map { index, count in
            try Parameter(name: "p\(index)", shape: testShape(name, count), values: (0..<count).map { Float(cos(Double($0 + index))) })
        }
    }

    static let elementwise = OptimizerRegistry.all.filter {
        !$0.isWrapper && !$0.requiresMatrices && !$0.requiresClosure && !$0.updatesWholeTensors
    }.map(\.name)

    @Test(arguments: elementwise)
    func reusedPlansGiveTheBitsOfRebuiltOnes(name: String) throws {
        let info = try OptimizerRegistry.info(named: name)
        let pool = ThreadPool(threadCount: 2)
        let rebuilt = try Self.makeParameters(name), reused = try Self.makeParameters(name)
        let rebuilding = try OptimizerRegistry.makeOptimizer(info.samples.basic, parameters: rebuilt, threadPool: pool)
        let reusing = try OptimizerRegistry.makeOptimizer(info.samples.basic, parameters: reused, threadPool: pool)
        let switchable = try #require(rebuilding as? PlanReusing)
        switchable.reusesPlans = false
        #expect((reusing as? PlanReusing)?.reusesPlans == true)
        // Borrowed gradient buffers for the step that moves one (kept alive for the test).
        let spare = UnsafeMutableBufferPointer<Float>.allocate(capacity: Self.sizes[2])
        let spare2 = UnsafeMutableBufferPointer<Float>.allocate(capacity: Self.sizes[2])
        defer { spare.deallocate(); spare2.deallocate() }
        var snapshots: [OptimizerSnapshot] = []

        for step in 0..<12 {
            for (which, (parameters, optimizer)) in [(rebuilt, rebuilding), (reused, reusing)].enumerated() {
                for (index, parameter) in parameters.enumerated() {
                    let values = Self.gradient(parameter.count, seed: step * 5 + index)
                    switch (step, index) {
                    case (4, 1): parameter.zeroGradient(setToNone: true)  // no gradient this step
                    case (6, 2):  // the same gradient values in another buffer
                        let buffer = which == 0 ? spare : spare2
                        _ = buffer.initialize(from: values)
                        try parameter.setGradient(borrowing: buffer)
                    default:
                        if parameter.gradient != nil, !(step == 7 && index == 2) {
                            parameter.gradient!.baseAddress!.update(from: values, count: values.count)
                        } else {
                            try parameter.setGradient(values)
                        }
                    }
                }
                if step == 5 { try optimizer.scaleNextGradient(of: parameters[3], by: 0.25) }
                if step == 8 { try optimizer.setLearningRate(optimizer.learningRate(group: 0) * 0.5, group: 0) }
                if step == 9 { snapshots.append(optimizer.snapshot()) }
                // Back to step 9's state and step counts (each optimizer its own snapshot).
                if step == 11 { try optimizer.restore(snapshots[which]) }
            }
            let metrics = step == 3 || step == 10
            let expected = try rebuilding.step(collectingMetrics: metrics)
            let got = try reusing.step(collectingMetrics: metrics)
            #expect(expected == got, "\(name) step \(step): metrics")
            for (a, b) in zip(rebuilt, reused) {
                #expect(bits(a.valueArray) == bits(b.valueArray), "\(name) step \(step): \(a.name)")
                #expect(try rebuilding.stepCount(of: a) == reusing.stepCount(of: b), "\(name) step \(step): \(a.name) step count")
            }
        }
        for (a, b) in zip(rebuilt, reused) {
            let expected = try rebuilding.state(of: a), got = try reusing.state(of: b)
            #expect(expected.keys.sorted() == got.keys.sorted())
            for key in expected.keys { #expect(bits(expected[key]!) == bits(got[key] ?? []), "\(name): \(a.name) \(key)") }
        }
    }
}
