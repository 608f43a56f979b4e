import Foundation
import Optim
import Testing
@testable import ExampleModel

/// The loss of an MLP computed from scratch in Double: the reference for the gradient check.
func referenceLoss(parameters: [[Double]], sizes: [Int], activation: Activation, features: [Float], labels: [Int]) -> Double {
    let batch = labels.count
    var total = 0.0
    for row in 0..<batch {
        var h = features[row * sizes[0] ..< (row + 1) * sizes[0]].map(Double.init)
        for layer in 0..<(sizes.count - 1) {
            let (fanIn, fanOut) = (sizes[layer], sizes[layer + 1])
            let weight = parameters[2 * layer], bias = parameters[2 * layer + 1]
            var z = [Double](repeating: 0, count: fanOut)
            for o in 0..<fanOut {
                z[o] = bias[o]
                for i in 0..<fanIn { z[o] += weight[o * fanIn + i] * h[i] }
            }
            if layer < sizes.count - 2 {
                switch activation {
                case .relu: z = z.map { max($0, 0) }
                case .gelu: z = z.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }
                }
            }
            h = z
        }
        // −log softmax(h)[label], by the definition (the logits here are small).
        total += log(h.map(exp).reduce(0, +)) - h[labels[row]]
    }
    return total / Double(batch)
}

@Suite struct MLPTests {
    @Test func parametersAreNamedAndShapedAsPyTorch() throws {
        let model = try MLP(inputs: 64, hidden: [32, 16], outputs: 10, activation: .gelu, seed: 1)
        #expect(model.parameters.map(\.name) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias"])
        #expect(model.parameters.map(\.shape) == [[32, 64], [32], [16, 32], [16], [10, 16], [10]])
        #expect(model.parameterCount == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10)
    }

    @Test func initialisationIsUniformWithinOneOverRootFanInAndSeeded() throws {
        let model = try MLP(inputs: 400, hidden: [300], outputs: 10, seed: 5)
        for parameter in model.parameters {
            let fanIn = parameter.name.hasPrefix("layers.0") ? 400.0 : 300.0
            let bound = Float(1 / fanIn.squareRoot())
            let values = parameter.valueArray
            #expect(values.allSatisfy { abs($0) <= bound }, "\(parameter.name) exceeds ±\(bound)")
            if values.count > 1000 {
                // Uniform on (−b, b): mean 0, variance b²/3, extremes near ±b.
                let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
                let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)
                let expected = Double(bound * bound) / 3
                #expect(abs(mean) < 0.02 * Double(bound))
                #expect(abs(variance / expected - 1) < 0.03)
                #expect(values.max()! > 0.99 * bound && values.min()! < -0.99 * bound)
            }
        }
        let same = try MLP(inputs: 400, hidden: [300], outputs: 10, seed: 5)
        let other = try MLP(inputs: 400, hidden: [300], outputs: 10, seed: 6)
        #expect(zip(model.parameters, same.parameters).allSatisfy { $0.valueArray == $1.valueArray })
        #expect(model.parameters[0].valueArray != other.parameters[0].valueArray)
    }

    @Test func refusesInvalidLayouts() {
        #expect(throws: ModelError.self) { try MLP(inputs: 0, hidden: [4], outputs: 2) }
        #expect(throws: ModelError.self) { try MLP(inputs: 3, hidden: [4, 0], outputs: 2) }
        #expect(throws: ModelError.self) { try MLP(inputs: 3, hidden: [4], outputs: -1) }
        #expect(throws: ModelError.self) { try MLP(inputs: 1 << 40, hidden: [1 << 40], outputs: 2) }
        #expect(throws: ModelError.self) { try MLP(inputs: .max, hidden: [.max], outputs: 2) }
    }

    static let layouts: [[Int]] = [[], [7], [7, 6]]

    /// Every gradient element against central differences of the Double reference loss.
    @Test(arguments: Activation.allCases, layouts)
    func gradientMatchesFiniteDifferences(activation: Activation, hidden: [Int]) throws {
        let sizes = [5] + hidden + [4]
        let model = try MLP(inputs: 5, hidden: hidden, outputs: 4, activation: activation, seed: 3, pool: Pools.one)
        var random = TestRandom(seed: 99)
        // Larger weights than the default so that the activations do real work.
        for parameter in model.parameters { try parameter.setValues(random.floats(parameter.count)) }
        let batch = 3
        let features = random.floats(batch * 5, in: -2...2)
        let labels = [2, 0, 3]

        let (loss, _) = try features.withUnsafeBufferPointer {
            try model.lossAndGradient(features: $0, labels: labels, batchSize: batch)
        }
        var values = model.parameters.map { $0.valueArray.map(Double.init) }
        let reference = referenceLoss(parameters: values, sizes: sizes, activation: activation, features: features, labels: labels)
        #expect(abs(Double(loss) - reference) <= 1e-5 * max(1, reference), "loss \(loss) vs \(reference)")

        for (index, parameter) in model.parameters.enumerated() {
            let gradient = try #require(parameter.gradientArray)
            #expect(gradient.count == parameter.count)
            for element in 0..<parameter.count {
                let original = values[index][element]
                let h = 1e-6
                values[index][element] = original + h
                let plus = referenceLoss(parameters: values, sizes: sizes, activation: activation, features: features, labels: labels)
                values[index][element] = original - h
                let minus = referenceLoss(parameters: values, sizes: sizes, activation: activation, features: features, labels: labels)
                values[index][element] = original
                let numeric = (plus - minus) / (2 * h)
                let analytic = Double(gradient[element])
                #expect(abs(analytic - numeric) <= 1e-4 + 1e-3 * abs(numeric),
                        "\(activation) \(hidden) \(parameter.name)[\(element)]: \(analytic) vs \(numeric)")
            }
        }
    }

    @Test func handComputedCrossEntropy() throws {
        // One Linear layer, 2 → 3, with chosen weights: logits = W·x + b.
        let model = try MLP(inputs: 2, hidden: [], outputs: 3, seed: 0, pool: Pools.one)
        try model.parameters[0].setValues([1, 0, 0, 1, 1, 1])   // W = [[1, 0], [0, 1], [1, 1]]
        try model.parameters[1].setValues([0, 0.5, -1])         // b
        let features: [Float] = [1, 2, 0, 0]                    // rows x₁ = (1, 2), x₂ = (0, 0)
        let labels: [Int32] = [1, 0]
        // Logits: z₁ = (1, 2.5, 2), z₂ = (0, 0.5, −1).
        let z: [[Double]] = [[1, 2.5, 2], [0, 0.5, -1]]
        let rowLoss = z.enumerated().map { row, z in log(exp(z[0]) + exp(z[1]) + exp(z[2])) - z[Int(labels[row])] }
        let expectedLoss = (rowLoss[0] + rowLoss[1]) / 2   // ≈ (0.604131 + 1.104131) / 2
        let (loss, correct) = try features.withUnsafeBufferPointer {
            try model.lossAndGradient(features: $0, labels: labels, batchSize: 2)
        }
        #expect(abs(Double(loss) - expectedLoss) < 1e-6)
        #expect(abs(expectedLoss - 0.854_131) < 1e-5)
        #expect(correct == 1) // row 1's largest logit is class 1 (right); row 2's is class 1 (wrong)

        // ∂/∂z = (softmax − onehot) / 2; ∂/∂b = Σ rows; ∂/∂W = Σ rows (∂/∂z) xᵀ.
        let dz = z.enumerated().map { row, z -> [Double] in
            let e = z.map(exp), s = e.reduce(0, +)
            return (0..<3).map { e[$0] / s - ($0 == Int(labels[row]) ? 1 : 0) }.map { $0 / 2 }
        }
        let x: [[Double]] = [[1, 2], [0, 0]]
        let expectedBias = (0..<3).map { dz[0][$0] + dz[1][$0] }
        let expectedWeight = (0..<3).flatMap { o in (0..<2).map { i in dz[0][o] * x[0][i] + dz[1][o] * x[1][i] } }
        let weightGradient = try #require(model.parameters[0].gradientArray)
        let biasGradient = try #require(model.parameters[1].gradientArray)
        for (got, want) in zip(weightGradient, expectedWeight) { #expect(abs(Double(got) - want) < 1e-6) }
        for (got, want) in zip(biasGradient, expectedBias) { #expect(abs(Double(got) - want) < 1e-6) }
    }

    @Test func largeLogitsStayFinite() throws {
        let model = try MLP(inputs: 1, hidden: [], outputs: 3, seed: 0, pool: Pools.one)
        try model.parameters[0].setValues([0, 0, 0])
        try model.parameters[1].setValues([1000, 0, -1000])
        // Label 1: loss = log(e¹⁰⁰⁰ + 1 + e⁻¹⁰⁰⁰) − 0 = 1000 (to float precision); exp(1000) alone overflows.
        let (loss, correct) = try [Float(0)].withUnsafeBufferPointer {
            try model.lossAndGradient(features: $0, labels: [1], batchSize: 1)
        }
        #expect(loss == 1000)
        #expect(correct == 0)
        #expect(model.parameters[1].gradientArray == [1, -1, 0])
    }

    @Test func gradientsAreOverwrittenNotAccumulated() throws {
        let model = try MLP(inputs: 4, hidden: [5], outputs: 3, seed: 2, pool: Pools.one)
        var random = TestRandom(seed: 1)
        let features = random.floats(8)
        let first = try features.withUnsafeBufferPointer { try model.lossAndGradient(features: $0, labels: [0, 2], batchSize: 2) }
        let gradients = model.parameters.map { $0.gradientArray! }
        for parameter in model.parameters { try parameter.setGradient([Float](repeating: 7, count: parameter.count)) }
        let second = try features.withUnsafeBufferPointer { try model.lossAndGradient(features: $0, labels: [0, 2], batchSize: 2) }
        #expect(first == second)
        #expect(model.parameters.map { $0.gradientArray! } == gradients)
    }

    @Test func oneAndTwoThreadsGiveTheSameStepBitForBit() throws {
        let digits = try Dataset.digits()
        let rows = Array(0..<256)
        var features: [Float] = [], labels: [Int32] = []
        digits.gather(rows: rows, features: &features, labels: &labels)
        var results: [(Float, [[UInt32]])] = []
        for pool in [Pools.one, ThreadPool(threadCount: 2)] {
            // 256 × 96 × 64 multiply-adds in the first layer: above the threading threshold.
            let model = try MLP(inputs: 64, hidden: [96, 48], outputs: 10, activation: .gelu, seed: 4, pool: pool)
            let (loss, _) = try features.withUnsafeBufferPointer { try model.lossAndGradient(features: $0, labels: labels, batchSize: 256) }
            results.append((loss, model.parameters.map { $0.gradientArray!.map(\.bitPattern) }))
        }
        #expect(results[0].0.bitPattern == results[1].0.bitPattern)
        #expect(results[0].1 == results[1].1)
    }

    @Test func freshModelLossIsAboutLogTen() throws {
        let digits = try Dataset.digits()
        for activation in Activation.allCases {
            let model = try MLP(inputs: 64, hidden: [64], outputs: 10, activation: activation, seed: 0)
            let (loss, accuracy) = try model.evaluate(digits)
            #expect(abs(Double(loss) - log(10)) < 0.1, "\(activation): \(loss)")
            #expect(accuracy < 0.4)
        }
    }

    @Test func evaluateAndPredictAgree() throws {
        let digits = try Dataset.digits().subset(0..<300)
        let model = try MLP(inputs: 64, hidden: [16], outputs: 10, seed: 8)
        let predictions = try digits.features.withUnsafeBufferPointer { try model.predict(features: $0) }
        #expect(predictions.count == 300)
        let right = zip(predictions, digits.labels).filter { $0 == Int($1) }.count
        // Batches of 7 and of 256 give the same figures (up to the order of the loss sum).
        let (loss7, accuracy7) = try model.evaluate(digits, batchSize: 7)
        let (loss256, accuracy256) = try model.evaluate(digits)
        #expect(accuracy7 == Double(right) / 300 && accuracy256 == accuracy7)
        #expect(abs(loss7 - loss256) < 1e-5)
    }

    @Test func refusesMisfittingDataAndBatches() throws {
        let model = try MLP(inputs: 4, hidden: [3], outputs: 3, seed: 0)
        let wide = try Dataset(features: [Float](repeating: 0, count: 10), labels: [0, 1], featureCount: 5, classCount: 2, source: "wide.csv")
        #expect(throws: ModelError.featureCountMismatch(source: "wide.csv", features: 5, inputs: 4)) { try model.checkCompatible(with: wide) }
        #expect(throws: ModelError.featureCountMismatch(source: "wide.csv", features: 5, inputs: 4)) { try model.evaluate(wide) }
        #expect(thrownMessage { try model.evaluate(wide) } == "wide.csv has 5 features per row, but the model takes 4 inputs")
        let manyClasses = try Dataset(features: [0, 0, 0, 0], labels: [7], featureCount: 4, classCount: 8, source: "many")
        #expect(throws: ModelError.classCountMismatch(source: "many", classes: 8, outputs: 3)) { try model.checkCompatible(with: manyClasses) }

        let features = [Float](repeating: 0.5, count: 8)
        try features.withUnsafeBufferPointer { buffer in
            #expect(throws: ModelError.self) { try model.lossAndGradient(features: buffer, labels: [0, 1], batchSize: 3) }
            #expect(throws: ModelError.self) { try model.lossAndGradient(features: buffer, labels: [0], batchSize: 2) }
            #expect(throws: ModelError.self) { try model.lossAndGradient(features: buffer, labels: [Int](), batchSize: 0) }
            #expect(throws: ModelError.labelOutOfRange(label: 3, index: 1, outputs: 3)) {
                try model.lossAndGradient(features: buffer, labels: [0, 3], batchSize: 2)
            }
            #expect(throws: ModelError.labelOutOfRange(label: -1, index: 0, outputs: 3)) {
                try model.lossAndGradient(features: buffer, labels: [Int8(-1), 0], batchSize: 2)
            }
            _ = try model.lossAndGradient(features: buffer, labels: [UInt8(2), 1], batchSize: 2)
            #expect(throws: ModelError.self) { try model.predict(features: UnsafeBufferPointer(rebasing: buffer[0..<7])) }
        }
        #expect(throws: ModelError.self) { try model.evaluate(Dataset(features: [0, 0, 0, 0], labels: [0], featureCount: 4, classCount: 1), batchSize: 0) }
        let empty = try model.evaluate(Dataset(features: [], labels: [], featureCount: 4, classCount: 3))
        #expect(empty.loss.isNaN && empty.accuracy.isNaN)
    }
}
