import Foundation
import Optim
import Testing
@testable import ExampleModel

/// The mean cross-entropy of a GPT computed from scratch in Double, position by position: the
/// reference of the gradient check. `p` holds the parameters in ``GPT/parameters`` order.
func referenceGPTLoss(_ p: [[Double]], _ c: GPTConfiguration, inputs: [Int32], targets: [Int32], batch: Int) -> Double {
    let C = c.embedding, H = c.heads, D = C / H, T = inputs.count / batch, V = c.vocabularySize
    func layerNorm(_ x: [Double], _ g: [Double], _ b: [Double]) -> [Double] {
        let mean = x.reduce(0, +) / Double(x.count)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(x.count)
        let rstd: Double = 1 / (variance + 1e-5).squareRoot()
        var out = x
        for j in x.indices { out[j] = (x[j] - mean) * rstd * g[j] + b[j] }
        return out
    }
    func linear(_ x: [Double], _ w: [Double], _ b: [Double]?, outputs: Int) -> [Double] {
        var out = [Double](repeating: 0, count: outputs)
        for o in 0..<outputs {
            var sum: Double = b?[o] ?? 0
            for i in x.indices { sum += w[o * x.count + i] * x[i] }
            out[o] = sum
        }
        return out
    }
    func gelu(_ x: Double) -> Double {
        let u: Double = (2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + tanh(u))
    }
    var total = 0.0
    for s in 0..<batch {
        var x = [[Double]](repeating: [Double](repeating: 0, count: C), count: T)
        for t in 0..<T { for j in 0..<C { x[t][j] = p[0][Int(inputs[s * T + t]) * C + j] + p[1][t * C + j] } }
        for l in 0..<c.layers {
            let w = Array(p[(2 + 12 * l)..<(14 + 12 * l)])
            let qkv = x.map { linear(layerNorm($0, w[0], w[1]), w[2], w[3], outputs: 3 * C) }
            var y = [[Double]](repeating: [Double](repeating: 0, count: C), count: T)
            for h in 0..<H {
                for t in 0..<T {
                    var scores = [Double](repeating: 0, count: t + 1)
                    for u in 0...t {
                        var dot = 0.0
                        for d in 0..<D { dot += qkv[t][h * D + d] * qkv[u][C + h * D + d] }
                        scores[u] = dot / Double(D).squareRoot()
                    }
                    let largest = scores.max()!
                    let weights = scores.map { exp($0 - largest) }
                    let sum = weights.reduce(0, +)
                    for u in 0...t { for d in 0..<D { y[t][h * D + d] += weights[u] / sum * qkv[u][2 * C + h * D + d] } }
                }
            }
            for t in 0..<T {
                let projected = linear(y[t], w[4], w[5], outputs: C)
                for j in 0..<C { x[t][j] += projected[j] }
                let hidden = linear(layerNorm(x[t], w[6], w[7]), w[8], w[9], outputs: 4 * C).map(gelu)
                let out = linear(hidden, w[10], w[11], outputs: C)
                for j in 0..<C { x[t][j] += out[j] }
            }
        }
        for t in 0..<T {
            let final = layerNorm(x[t], p[2 + 12 * c.layers], p[3 + 12 * c.layers])
            let logits = linear(final, p[0], nil, outputs: V)
            let largest = logits.max()!
            total += largest + log(logits.reduce(0) { $0 + exp($1 - largest) }) - logits[Int(targets[s * T + t])]
        }
    }
    return total / Double(batch * T)
}

@Suite struct GPTTests {
    static let small = GPTConfiguration(vocabularySize: 11, contextLength: 7, layers: 2, heads: 2, embedding: 8)

    @Test func parametersAreNamedShapedAndOrderedAsNanoGPT() throws {
        let model = try GPT(GPTConfiguration(vocabularySize: 65, contextLength: 64, layers: 4, heads: 4, embedding: 128), seed: 0, pool: Pools.one)
        let names = model.parameters.map(\.name)
        #expect(names.count == 2 + 12 * 4 + 2)
        #expect(Array(names.prefix(8)) == ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
                                           "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight", "transformer.h.0.attn.c_proj.bias"])
        #expect(names.last == "transformer.ln_f.bias")
        #expect(model.parameters[4].shape == [384, 128] && model.parameters[10].shape == [512, 128] && model.parameters[12].shape == [128, 512])
        // wte 65·128 + wpe 64·128 + 4 blocks of 198,272 + ln_f 256.
        #expect(model.parameterCount == 809_856)
        let proj = model.parameters[12].valueArray
        let sd = (proj.reduce(0) { $0 + Double($1 * $1) } / Double(proj.count)).squareRoot()
        #expect(abs(sd / (0.02 / 8.0.squareRoot()) - 1) < 0.05)
    }

    @Test func badShapesAndTokensAreTypedErrors() throws {
        #expect(throws: ModelError.self) { try GPT(GPTConfiguration(vocabularySize: 10, embedding: 130)) }
        let model = try GPT(Self.small, pool: Pools.one)
        let long = [Int32](repeating: 0, count: 8), bad: [Int32] = [0, 11, 2]
        #expect(throws: ModelError.invalidBatch("sequences of 8 tokens; the model's context is 7")) {
            try long.withUnsafeBufferPointer { i in try model.loss(inputs: i, targets: i, batchSize: 1) }
        }
        #expect(throws: ModelError.invalidBatch("input token 11 at position 1 is outside the vocabulary 0..<11")) {
            try bad.withUnsafeBufferPointer { i in try model.loss(inputs: i, targets: i, batchSize: 1) }
        }
    }

    /// The analytic gradient of every parameter against central differences of the Double
    /// reference, on a sample of coordinates, with weights far from the initialisation (so
    /// attention is not uniform and every path carries gradient).
    @Test(arguments: [1, 2]) func gradientMatchesFiniteDifferences(threads: Int) throws {
        let config = Self.small
        let model = try GPT(config, seed: 3, pool: threads == 1 ? Pools.one : Pools.two)
        var random = TestRandom(seed: 11)
        for parameter in model.parameters {
            let isNormWeight = parameter.name.hasSuffix("ln_1.weight") || parameter.name.hasSuffix("ln_2.weight") || parameter.name.hasSuffix("ln_f.weight")
            try parameter.setValues(random.floats(parameter.count, in: -0.5...0.5).map { isNormWeight ? 1 + $0 : $0 })
        }
        let batch = 3, T = 7
        let inputs = (0..<(batch * T)).map { _ in Int32.random(in: 0..<11, using: &random) }
        let targets = (0..<(batch * T)).map { _ in Int32.random(in: 0..<11, using: &random) }
        let loss = try inputs.withUnsafeBufferPointer { i in try targets.withUnsafeBufferPointer { t in try model.lossAndGradient(inputs: i, targets: t, batchSize: batch) } }
        var values = model.parameters.map { $0.valueArray.map(Double.init) }
        let reference = referenceGPTLoss(values, config, inputs: inputs, targets: targets, batch: batch)
        #expect(abs(Double(loss) - reference) < 1e-5 * reference, "loss \(loss) vs reference \(reference)")
        let h = 1e-5
        var checked = 0
        for (index, parameter) in model.parameters.enumerated() {
            let gradient = try #require(parameter.gradientArray)
            let scale = gradient.map { abs(Double($0)) }.max()!
            for _ in 0..<min(parameter.count, 5) {
                let i = Int.random(in: 0..<parameter.count, using: &random)
                let original = values[index][i]
                values[index][i] = original + h
                let up = referenceGPTLoss(values, config, inputs: inputs, targets: targets, batch: batch)
                values[index][i] = original - h
                let down = referenceGPTLoss(values, config, inputs: inputs, targets: targets, batch: batch)
                values[index][i] = original
                let numeric = (up - down) / (2 * h)
                #expect(abs(Double(gradient[i]) - numeric) <= 1e-3 * abs(numeric) + 1e-4 * scale + 1e-7,
                        "\(parameter.name)[\(i)]: analytic \(gradient[i]), numeric \(numeric)")
                checked += 1
            }
        }
        #expect(checked == 5 * model.parameters.count)
    }

    @Test func oneAndTwoThreadsGiveTheSameGradientsBitForBit() throws {
        let config = GPTConfiguration(vocabularySize: 11, contextLength: 32, layers: 2, heads: 4, embedding: 64)
        let inputs: [Int32] = (0..<(6 * 32)).map { Int32(($0 * 7) % 11) }, targets: [Int32] = (0..<(6 * 32)).map { Int32(($0 * 5 + 3) % 11) }
        var results: [(Float, [[UInt32]])] = []
        for pool in [Pools.one, Pools.two] {
            let model = try GPT(config, seed: 2, pool: pool)
            let loss = try inputs.withUnsafeBufferPointer { i in try targets.withUnsafeBufferPointer { t in try model.lossAndGradient(inputs: i, targets: t, batchSize: 6) } }
            results.append((loss, model.parameters.map { $0.gradientArray!.map(\.bitPattern) }))
        }
        #expect(results[0].0 == results[1].0)
        #expect(results[0].1 == results[1].1)
    }

    @Test func aStepAllocatesNothingNewAndRepeatsExactly() throws {
        let model = try GPT(Self.small, seed: 1, pool: Pools.two)
        let inputs: [Int32] = (0..<14).map { Int32($0 % 11) }, targets: [Int32] = (0..<14).map { Int32(($0 + 1) % 11) }
        func step() throws -> (Float, [[Float]]) {
            let loss = try inputs.withUnsafeBufferPointer { i in try targets.withUnsafeBufferPointer { t in try model.lossAndGradient(inputs: i, targets: t, batchSize: 2) } }
            return (loss, model.parameters.map { $0.gradientArray! })
        }
        let first = try step(), second = try step()
        #expect(first.0 == second.0 && first.1 == second.1)
        #expect(abs(first.0 - log(11)) < 0.05)
    }
}

/// The models' gradient-ready reports, which data-parallel training starts communicating on:
/// every parameter once a pass, the last first, each gradient final when reported.
@Suite struct GradientReadyReportTests {
    /// Runs `pass` with a handler that copies each reported gradient, then checks the reports.
    static func check(_ parameters: [Parameter], handler: (@escaping (Range<Int>) -> Void) -> Void, pass: () throws -> Void) throws {
        var reported: [Int] = [], ranges: [Range<Int>] = [], copies: [Int: [Float]] = [:]
        handler { range in
            ranges.append(range)
            for index in range {
                reported.append(index)
                copies[index] = parameters[index].gradientArray
            }
        }
        for _ in 0..<2 {  // twice: the second pass overwrites the first's gradients
            reported = []
            ranges = []
            try pass()
            #expect(reported.sorted() == Array(parameters.indices), "each parameter reported once: \(reported)")
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.lowerBound >= $1.upperBound }, "the last parameters first: \(ranges)")
            for (index, parameter) in parameters.enumerated() {
                #expect(copies[index].map { $0.map(\.bitPattern) } == parameter.gradientArray.map { $0.map(\.bitPattern) },
                        "\(parameter.name): its gradient changed after it was reported")
            }
        }
    }

    @Test func theGPTReportsEachLayerWhenItsGradientIsFinal() throws {
        let model = try GPT(GPTTests.small, seed: 3, pool: Pools.two)
        var random = TestRandom(seed: 5)
        let inputs = (0..<21).map { _ in Int32.random(in: 0..<11, using: &random) }
        let targets = (0..<21).map { _ in Int32.random(in: 0..<11, using: &random) }
        var step = 0
        try Self.check(model.parameters, handler: { model.gradientReadyHandler = $0 }) {
            step += 1
            let shifted = inputs.map { ($0 + Int32(step)) % 11 }
            _ = try shifted.withUnsafeBufferPointer { i in try targets.withUnsafeBufferPointer { t in try model.lossAndGradient(inputs: i, targets: t, batchSize: 3) } }
        }
    }

    @Test func theMLPReportsEachLayerWhenItsGradientIsFinal() throws {
        let model = try MLP(inputs: 5, hidden: [7, 6], outputs: 4, seed: 2)
        var random = TestRandom(seed: 6)
        let features = random.floats(4 * 5, in: -2...2)
        try Self.check(model.parameters, handler: { model.gradientReadyHandler = $0 }) {
            _ = try features.withUnsafeBufferPointer { try model.lossAndGradient(features: $0, labels: [0, 3, 1, 2], batchSize: 4) }
        }
    }
}
