import Foundation
import Optim
import Safetensors
import Testing
@testable import ExampleModel

/// The GPT against PyTorch 2.15 running nanoGPT's model (`tools/austen/torch_reference.py fixture`):
/// the same initial weights from the shared initialiser, the same batch of the novels from the
/// shared sampler, then the loss and every parameter's gradient.
@Suite struct GPTReferenceTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/gpt/austen-small.safetensors")

    @Test(arguments: [1, 2]) func lossAndEveryGradientMatchPyTorch(threads: Int) throws {
        let file = try SafetensorsFile(contentsOf: Self.fixture)
        func number(_ key: String) throws -> Int { try #require(file.metadata[key].flatMap { Int($0) }, "metadata \(key)") }
        let configuration = GPTConfiguration(vocabularySize: try number("vocab_size"), contextLength: try number("block_size"),
                                             layers: try number("n_layer"), heads: try number("n_head"), embedding: try number("n_embd"))
        let model = try GPT(configuration, seed: UInt64(try number("seed")), pool: threads == 1 ? Pools.one : Pools.two)

        // The shared initialiser: Swift's draws are PyTorch's initial weights.
        for parameter in model.parameters {
            let expected = try file.floats("param/\(parameter.name)")
            let values = parameter.valueArray
            #expect(values.count == expected.count)
            let worst = zip(values, expected).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-9, "\(parameter.name): initial weights differ by up to \(worst)")
        }

        // The shared sampler: the same batch of the novels.
        let corpus = try TextCorpus.austen()
        let batch = try number("batch"), context = try number("block_size")
        var inputs = [Int32](repeating: 0, count: batch * context), targets = inputs
        inputs.withUnsafeMutableBufferPointer { i in targets.withUnsafeMutableBufferPointer { t in
            corpus.fillBatch(.train, index: try! number("batch_index"), seed: UInt64(try! number("seed")), batchSize: batch, context: context, inputs: i, targets: t)
        } }
        #expect(inputs.map(Float.init) == (try file.floats("inputs")))
        #expect(targets.map(Float.init) == (try file.floats("targets")))

        let loss = try inputs.withUnsafeBufferPointer { i in try targets.withUnsafeBufferPointer { t in try model.lossAndGradient(inputs: i, targets: t, batchSize: batch) } }
        let expectedLoss = try file.floats("loss")[0]
        #expect(abs(loss - expectedLoss) <= 1e-4 * abs(expectedLoss), "loss \(loss), PyTorch \(expectedLoss)")

        // Each gradient tensor: ‖g − g_torch‖₂ ≤ 1e-4 · ‖g_torch‖₂, and no element off by more than
        // 1e-4 of the tensor's largest |g_torch|.
        var largestRelative = 0.0
        for parameter in model.parameters {
            let gradient = try #require(parameter.gradientArray)
            let expected = try file.floats("grad/\(parameter.name)")
            var difference = 0.0, norm = 0.0, worst: Float = 0
            for (g, e) in zip(gradient, expected) {
                difference += Double((g - e) * (g - e))
                norm += Double(e * e)
                worst = max(worst, abs(g - e))
            }
            let relative = (difference / max(norm, .leastNonzeroMagnitude)).squareRoot()
            let largest = expected.map(abs).max() ?? 0
            largestRelative = max(largestRelative, relative)
            #expect(relative <= 1e-4, "\(parameter.name): relative L2 error \(relative)")
            #expect(worst <= 1e-4 * largest, "\(parameter.name): largest element error \(worst) of \(largest)")
        }
        print("GPT vs PyTorch, \(threads) thread(s): loss \(loss) vs \(expectedLoss), largest relative L2 gradient error \(largestRelative)")
    }
}
