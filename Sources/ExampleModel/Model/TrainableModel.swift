import Optim

/// A batch for a ``TrainableModel``, its buffers reused from step to step.
public struct ModelBatch: Sendable {
    /// Rows of features (`size × inputs`, for the ``MLP``); empty for a token model.
    public var features: [Float] = []
    /// Input tokens (`size × length`, for the ``GPT``); empty for a feature model.
    public var tokens: [Int32] = []
    /// Each row's label, or each input position's next token.
    public var targets: [Int32] = []
    /// Rows, or sequences.
    public var size = 0

    /// An empty batch, to be filled.
    public init() {}
}

/// What one batch gave: the loss summed over its predictions, how many were right (the largest
/// logit at the target) and how many there were (rows, or tokens).
public struct BatchOutcome: Sendable, Equatable {
    /// The loss summed over the batch's predictions.
    public var lossSum: Double
    /// Predictions whose largest logit was at the target.
    public var correct: Int
    /// Predictions in the batch: rows, or tokens.
    public var count: Int

    /// An outcome from its loss sum, correct count and prediction count.
    public init(lossSum: Double, correct: Int, count: Int) {
        self.lossSum = lossSum
        self.correct = correct
        self.count = count
    }
}

/// A model a training loop can train without knowing which it is: named parameters (what the
/// optimizer steps and the checkpoint saves), and the loss of a batch — with the gradient of the
/// batch's mean loss written into the parameters, or forward only. ``MLP`` and ``GPT`` conform.
public protocol TrainableModel: AnyObject {
    /// Every parameter, in a fixed order.
    var parameters: [Parameter] { get }
    /// One line naming the architecture, for logs.
    var architecture: String { get }
    /// Called by ``lossAndGradient(_:)`` each time backward has finished the gradients of
    /// `parameters[range]`, in the order backward finishes them (usually the last layers
    /// first); every parameter is reported once per pass. `DataParallel.gradientsReady(_:)`
    /// takes it, to reduce gradients while backward goes on.
    var gradientReadyHandler: ((Range<Int>) -> Void)? { get set }
    /// Forward and backward: writes ∂(mean loss)/∂parameter into every parameter's gradient storage.
    func lossAndGradient(_ batch: ModelBatch) throws(ModelError) -> BatchOutcome
    /// Forward only; the gradients are untouched.
    func evaluate(_ batch: ModelBatch) throws(ModelError) -> BatchOutcome
}

extension MLP: TrainableModel {
    /// `MLP` and the layer widths from inputs to outputs (`MLP 64-256-128-10`).
    public var architecture: String { "MLP " + ([inputs] + hidden + [outputs]).map(String.init).joined(separator: "-") }

    /// Forward and backward over the batch's rows; the outcome's loss sum is the mean loss times the rows.
    public func lossAndGradient(_ batch: ModelBatch) throws(ModelError) -> BatchOutcome {
        let (loss, correct) = try batch.features.withUnsafeBufferPointer { (features) throws(ModelError) in
            try lossAndGradient(features: features, labels: batch.targets, batchSize: batch.size)
        }
        return BatchOutcome(lossSum: Double(loss) * Double(batch.size), correct: correct, count: batch.size)
    }

    /// The loss and correct count of the batch's rows, forward only.
    public func evaluate(_ batch: ModelBatch) throws(ModelError) -> BatchOutcome {
        try batch.features.withUnsafeBufferPointer { (features) throws(ModelError) in
            try evaluateRows(features: features, labels: batch.targets, rows: batch.size)
        }
    }
}

extension GPT: TrainableModel {
    /// `GPT`, its layers, embedding width, heads, context length and vocabulary size.
    public var architecture: String {
        "GPT \(configuration.layers) layers × \(configuration.embedding), \(configuration.heads) heads, context \(configuration.contextLength), vocabulary \(configuration.vocabularySize)"
    }

    /// Forward and backward over the batch's sequences; the outcome's loss sum is the mean loss
    /// times the tokens.
    public func lossAndGradient(_ batch: ModelBatch) throws(ModelError) -> BatchOutcome {
        let loss = try batch.tokens.withUnsafeBufferPointer { (inputs) throws(ModelError) in
            try batch.targets.withUnsafeBufferPointer { (targets) throws(ModelError) in try lossAndGradient(inputs: inputs, targets: targets, batchSize: batch.size) }
        }
        return BatchOutcome(lossSum: Double(loss) * Double(batch.tokens.count), correct: lastCorrect, count: batch.tokens.count)
    }

    /// The loss and correct count of the batch's sequences, forward only.
    public func evaluate(_ batch: ModelBatch) throws(ModelError) -> BatchOutcome {
        let loss = try batch.tokens.withUnsafeBufferPointer { (inputs) throws(ModelError) in
            try batch.targets.withUnsafeBufferPointer { (targets) throws(ModelError) in try self.loss(inputs: inputs, targets: targets, batchSize: batch.size) }
        }
        return BatchOutcome(lossSum: Double(loss) * Double(batch.tokens.count), correct: lastCorrect, count: batch.tokens.count)
    }
}
