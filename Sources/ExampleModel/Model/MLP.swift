import Optim

/// A multilayer perceptron for classification: Linear layers with an ``Activation`` between
/// them, and a softmax cross-entropy loss on the last layer's outputs (the logits).
///
///     h₀ = x,   hₗ₊₁ = f(hₗ·Wₗᵀ + bₗ)  for the hidden layers,   logits = h_L·W_Lᵀ + b_L
///
/// The weights are `Parameter`s in PyTorch's `nn.Linear` layout and naming —
/// `layers.0.weight` [hidden₀, inputs], `layers.0.bias` [hidden₀], `layers.1.weight`, … — so an
/// optimizer of the `Optim` module steps them directly, and a checkpoint's tensor names read as
/// those of the equivalent `nn.ModuleList` of `nn.Linear`. They are initialised as `nn.Linear`
/// does by default: weight and bias uniform in (−1/√fan_in, 1/√fan_in), drawn from SplitMix64
/// seeded with `seed`, layer by layer, weight then bias, so a seed gives the same model on every
/// machine.
///
/// The forward and backward passes are written by hand over `MatMul`. Scratch buffers are
/// kept between calls: after the first call with a given batch size, a training step allocates
/// nothing. A model is not synchronised: use it from one thread at a time.
public final class MLP: @unchecked Sendable {
    /// Features per example.
    public let inputs: Int
    /// Widths of the hidden layers, first to last (empty for a linear classifier).
    public let hidden: [Int]
    /// Classes: the width of the last layer.
    public let outputs: Int
    /// The nonlinearity after each hidden layer.
    public let activation: Activation
    /// The weights and biases, in layer order: `layers.0.weight`, `layers.0.bias`, `layers.1.weight`, …
    public let parameters: [Parameter]
    /// Called during a backward pass each time a layer's gradients are final, with the indices
    /// of its weight and bias in ``parameters`` (the last layer first): what data-parallel
    /// training needs to reduce them while backward goes on.
    public var gradientReadyHandler: ((Range<Int>) -> Void)?

    private struct Layer {
        let weight: Parameter
        let bias: Parameter
        let inputs: Int
        let outputs: Int
    }

    private let layers: [Layer]
    private let pool: ThreadPool
    private let workspace = MatMul.Workspace()

    /// Scratch, for `rowCapacity` rows: each layer's pre-activation (the last one's are the
    /// logits), each hidden layer's activation, two gradient buffers used in turn, the labels.
    private var rowCapacity = 0
    private var storage: UnsafeMutablePointer<Float>?
    private var preActivations: [UnsafeMutablePointer<Float>] = []
    private var activations: [UnsafeMutablePointer<Float>] = []
    private var gradients: [UnsafeMutablePointer<Float>] = []
    private var labelScratch: UnsafeMutablePointer<Int32>?

    /// The most parameters a model may have (2³⁰, 4 GiB of weights).
    public static let maximumParameterCount = 1 << 30

    /// A model of `inputs` → `hidden[0]` → … → `outputs`, initialised from `seed`.
    ///
    /// - Parameters:
    ///   - inputs: the number of features of a row.
    ///   - hidden: the widths of the hidden layers, in order.
    ///   - outputs: the number of classes.
    ///   - activation: the activation after each hidden layer.
    ///   - seed: the seed of the initial weights' random draws.
    ///   - pool: the threads of the matrix products (see `MatMul`).
    /// - Throws: ``ModelError/invalidArchitecture(_:)`` for a size below 1 or more than
    ///   ``maximumParameterCount`` parameters.
    public init(inputs: Int, hidden: [Int], outputs: Int, activation: Activation = .relu, seed: UInt64 = 0,
                pool: ThreadPool = .shared) throws(ModelError) {
        let sizes = [inputs] + hidden + [outputs]
        guard sizes.allSatisfy({ $0 >= 1 }) else {
            throw .invalidArchitecture("layer sizes \(sizes.map(String.init).joined(separator: " → ")); every size must be >= 1")
        }
        var total = 0
        for (fanIn, fanOut) in zip(sizes, sizes.dropFirst()) {
            let (weights, overflow) = fanIn.multipliedReportingOverflow(by: fanOut)
            total = overflow ? Int.max : total.addingReportingOverflow(weights + fanOut).partialValue
            guard !overflow, total >= 0, total <= Self.maximumParameterCount else {
                throw .invalidArchitecture("layer sizes \(sizes.map(String.init).joined(separator: " → ")) make more than \(Self.maximumParameterCount) parameters")
            }
        }

        var generator = SplitMix64(seed: seed, stream: 0x4D4C_50) // "MLP"
        var layers: [Layer] = []
        for (index, (fanIn, fanOut)) in zip(sizes, sizes.dropFirst()).enumerated() {
            let bound = 1 / Float(fanIn).squareRoot()
            func draw(_ count: Int) -> [Float] {
                (0..<count).map { _ in -bound + 2 * bound * generator.nextUnitFloat() }
            }
            do {
                let weight = try Parameter(name: "layers.\(index).weight", shape: [fanOut, fanIn], values: draw(fanOut * fanIn))
                let bias = try Parameter(name: "layers.\(index).bias", shape: [fanOut], values: draw(fanOut))
                layers.append(Layer(weight: weight, bias: bias, inputs: fanIn, outputs: fanOut))
            } catch {
                throw .invalidArchitecture(error.description)
            }
        }
        self.inputs = inputs
        self.hidden = hidden
        self.outputs = outputs
        self.activation = activation
        self.layers = layers
        self.parameters = layers.flatMap { [$0.weight, $0.bias] }
        self.pool = pool
    }

    deinit {
        storage?.deallocate()
        labelScratch?.deallocate()
    }

    /// The total number of weights and biases.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// Checks that `dataset` fits the model: as many features per row as the model has inputs, and
    /// no more classes than it has outputs. A training job calls this before its first step, so a
    /// data file that does not match a resumed model is refused with a message naming both sizes.
    public func checkCompatible(with dataset: Dataset) throws(ModelError) {
        guard dataset.featureCount == inputs else {
            throw .featureCountMismatch(source: dataset.source, features: dataset.featureCount, inputs: inputs)
        }
        guard dataset.classCount <= outputs else {
            throw .classCountMismatch(source: dataset.source, classes: dataset.classCount, outputs: outputs)
        }
    }

    /// Runs the forward and backward passes on one batch and writes the gradient of the batch's
    /// mean loss into every parameter's gradient storage (`Parameter.gradientStorage(zeroed:)`),
    /// overwriting what was there — ready for an optimizer's step.
    ///
    /// - Parameters:
    ///   - features: `batchSize × inputs` values, row-major.
    ///   - labels: `batchSize` classes, each in `0..<outputs`.
    ///   - batchSize: the number of rows in the batch.
    /// - Returns: the mean softmax cross-entropy of the batch, and how many rows the model (before
    ///   this step) classifies right.
    /// - Throws: ``ModelError`` for a batch size below 1, buffers of the wrong size, or a label out
    ///   of range; the parameters' gradients are then left as they were.
    public func lossAndGradient<Labels: Collection>(features: UnsafeBufferPointer<Float>, labels: Labels, batchSize: Int)
        throws(ModelError) -> (loss: Float, correct: Int) where Labels.Element: BinaryInteger {
        try checkBatch(features: features, labelCount: labels.count, batchSize: batchSize)
        reserve(rows: batchSize)
        let labelBuffer = labelScratch!
        for (index, label) in labels.enumerated() {
            guard label >= 0, label < outputs else {
                throw .labelOutOfRange(label: Int(truncatingIfNeeded: label), index: index, outputs: outputs)
            }
            labelBuffer[index] = Int32(label)
        }
        let input = features.baseAddress!
        forward(input, rows: batchSize)

        let last = layers.count - 1
        let (lossSum, correct) = SoftmaxCrossEntropy.evaluate(
            logits: preActivations[last], labels: labelBuffer, rows: batchSize, classes: outputs,
            gradient: gradients[0], scale: 1 / Float(batchSize))

        // Backward: `gradients[g]` holds ∂loss/∂(pre-activation of layer l) on entry.
        var g = 0
        for l in stride(from: last, through: 0, by: -1) {
            let layer = layers[l]
            let outputGradient = gradients[g]
            let layerInput = l == 0 ? input : UnsafePointer(activations[l - 1])
            // dW = dZᵀ · X   ([out, batch] · [batch, in])
            MatMul.gemm(m: layer.outputs, n: layer.inputs, k: batchSize,
                        buffer(outputGradient, batchSize * layer.outputs), transposeA: true,
                        buffer(layerInput, batchSize * layer.inputs), transposeB: false,
                        layer.weight.gradientStorage(zeroed: false), workspace: workspace, pool: pool)
            // db = Σ_rows dZ
            let biasGradient = layer.bias.gradientStorage(zeroed: false).baseAddress!
            biasGradient.update(from: outputGradient, count: layer.outputs)
            for row in 1..<batchSize {
                let source = outputGradient + row * layer.outputs
                for j in 0..<layer.outputs { biasGradient[j] += source[j] }
            }
            gradientReadyHandler?((2 * l)..<(2 * l + 2))
            guard l > 0 else { break }
            // dX = dZ · W   ([batch, out] · [out, in]), then through the activation.
            let inputGradient = gradients[1 - g]
            MatMul.gemm(m: batchSize, n: layer.inputs, k: layer.outputs,
                        buffer(outputGradient, batchSize * layer.outputs), transposeA: false,
                        UnsafeBufferPointer(layer.weight.values), transposeB: false,
                        UnsafeMutableBufferPointer(start: inputGradient, count: batchSize * layer.inputs),
                        workspace: workspace, pool: pool)
            activation.backward(preActivations[l - 1], inputGradient, count: batchSize * layer.inputs)
            g = 1 - g
        }
        return (Float(lossSum / Double(batchSize)), correct)
    }

    /// The mean loss and the accuracy over a whole data set, in batches of `batchSize` rows,
    /// without touching the gradients. An empty data set gives NaN for both.
    ///
    /// - Throws: ``ModelError`` if the data set does not fit the model
    ///   (``checkCompatible(with:)``) or `batchSize` is below 1.
    public func evaluate(_ dataset: Dataset, batchSize: Int = 256) throws(ModelError) -> (loss: Float, accuracy: Double) {
        try checkCompatible(with: dataset)
        guard batchSize >= 1 else { throw .invalidBatch("batch size \(batchSize); expected >= 1") }
        guard dataset.count > 0 else { return (.nan, .nan) }
        var lossSum = 0.0
        var correct = 0
        dataset.features.withUnsafeBufferPointer { features in
            dataset.labels.withUnsafeBufferPointer { labels in
                var start = 0
                while start < dataset.count {
                    let rows = min(batchSize, dataset.count - start)
                    reserve(rows: rows)
                    forward(features.baseAddress! + start * inputs, rows: rows)
                    let (sum, right) = SoftmaxCrossEntropy.evaluate(
                        logits: preActivations[layers.count - 1], labels: labels.baseAddress! + start,
                        rows: rows, classes: outputs, gradient: nil, scale: 1)
                    lossSum += sum
                    correct += right
                    start += rows
                }
            }
        }
        return (Float(lossSum / Double(dataset.count)), Double(correct) / Double(dataset.count))
    }

    /// The summed loss and the correct count of `rows` rows, forward only (gradients untouched).
    ///
    /// - Throws: ``ModelError`` for buffers that do not match `rows` or a label out of range.
    public func evaluateRows(features: UnsafeBufferPointer<Float>, labels: [Int32], rows: Int) throws(ModelError) -> BatchOutcome {
        try checkBatch(features: features, labelCount: labels.count, batchSize: rows)
        for (index, label) in labels.enumerated() where label < 0 || Int(label) >= outputs {
            throw .labelOutOfRange(label: Int(label), index: index, outputs: outputs)
        }
        reserve(rows: rows)
        forward(features.baseAddress!, rows: rows)
        let (sum, correct) = labels.withUnsafeBufferPointer {
            SoftmaxCrossEntropy.evaluate(logits: preActivations[layers.count - 1], labels: $0.baseAddress!, rows: rows, classes: outputs,
                                         gradient: nil, scale: 1)
        }
        return BatchOutcome(lossSum: sum, correct: correct, count: rows)
    }

    /// The predicted class of each row of `features` (`rows × inputs` values, row-major): the
    /// index of its largest logit, the first on a tie.
    ///
    /// - Throws: ``ModelError/invalidBatch(_:)`` if the count of values is not a multiple of
    ///   ``inputs``.
    public func predict(features: UnsafeBufferPointer<Float>) throws(ModelError) -> [Int] {
        guard features.count % inputs == 0 else {
            throw .invalidBatch("\(features.count) feature values are not whole rows of \(inputs)")
        }
        let count = features.count / inputs
        var predictions: [Int] = []
        predictions.reserveCapacity(count)
        var start = 0
        while start < count {
            let rows = min(256, count - start)
            reserve(rows: rows)
            forward(features.baseAddress! + start * inputs, rows: rows)
            let logits = preActivations[layers.count - 1]
            for row in 0..<rows {
                let z = logits + row * outputs
                var best = 0
                for j in 1..<outputs where z[j] > z[best] { best = j }
                predictions.append(best)
            }
            start += rows
        }
        return predictions
    }

    // MARK: - Passes

    /// The forward pass of `rows` rows: fills `preActivations` (the last are the logits) and
    /// `activations`.
    private func forward(_ input: UnsafePointer<Float>, rows: Int) {
        var layerInput = input
        for (l, layer) in layers.enumerated() {
            let output = preActivations[l]
            // Z = X · Wᵀ + b: the bias in every row, then the product accumulated onto it.
            let bias = layer.bias.values.baseAddress!
            for row in 0..<rows { (output + row * layer.outputs).update(from: bias, count: layer.outputs) }
            MatMul.gemm(m: rows, n: layer.outputs, k: layer.inputs,
                        buffer(layerInput, rows * layer.inputs), transposeA: false,
                        UnsafeBufferPointer(layer.weight.values), transposeB: true,
                        UnsafeMutableBufferPointer(start: output, count: rows * layer.outputs), accumulate: true,
                        workspace: workspace, pool: pool)
            if l < layers.count - 1 {
                activation.apply(output, activations[l], count: rows * layer.outputs)
                layerInput = UnsafePointer(activations[l])
            }
        }
    }

    private func checkBatch(features: UnsafeBufferPointer<Float>, labelCount: Int, batchSize: Int) throws(ModelError) {
        guard batchSize >= 1 else { throw .invalidBatch("batch size \(batchSize); expected >= 1") }
        let (expected, overflow) = batchSize.multipliedReportingOverflow(by: inputs)
        guard !overflow, features.count == expected else {
            throw .invalidBatch("\(features.count) feature values for \(batchSize) rows of \(inputs) inputs; expected \(overflow ? "too many" : String(expected))")
        }
        guard labelCount == batchSize else {
            throw .invalidBatch("\(labelCount) labels for a batch of \(batchSize) rows")
        }
    }

    /// Grows the scratch buffers to hold `rows` rows; does nothing when they already do.
    private func reserve(rows: Int) {
        guard rows > rowCapacity else { return }
        storage?.deallocate()
        labelScratch?.deallocate()
        let widest = layers.map(\.outputs).max()!
        let perRow = layers.map(\.outputs).reduce(0, +) + hidden.reduce(0, +) + 2 * widest
        let base = UnsafeMutablePointer<Float>.allocate(capacity: rows * perRow)
        base.initialize(repeating: 0, count: rows * perRow)
        var next = base
        func take(_ width: Int) -> UnsafeMutablePointer<Float> {
            defer { next += rows * width }
            return next
        }
        preActivations = layers.map { take($0.outputs) }
        activations = hidden.map { take($0) }
        gradients = [take(widest), take(widest)]
        storage = base
        labelScratch = .allocate(capacity: rows)
        rowCapacity = rows
    }

    private func buffer(_ pointer: UnsafePointer<Float>, _ count: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: pointer, count: count)
    }

    private func buffer(_ pointer: UnsafeMutablePointer<Float>, _ count: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: pointer, count: count)
    }
}
