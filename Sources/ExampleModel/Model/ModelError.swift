/// Every error the example model throws: a layout that cannot be built, or data or a batch that
/// does not fit the model. Each message names the numbers involved.
public enum ModelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Layer sizes that cannot make a model (a size below 1, or too many parameters).
    case invalidArchitecture(String)
    /// Data whose rows have a different number of features than the model has inputs.
    case featureCountMismatch(source: String, features: Int, inputs: Int)
    /// Data with more classes than the model has outputs.
    case classCountMismatch(source: String, classes: Int, outputs: Int)
    /// A batch whose buffers do not match its size, or a size below 1.
    case invalidBatch(String)
    /// A label outside `0..<outputs`, at position `index` of its batch.
    case labelOutOfRange(label: Int, index: Int, outputs: Int)

    /// A one-line message naming the problem.
    public var description: String {
        switch self {
        case let .invalidArchitecture(message):
            return "invalid model: \(message)"
        case let .featureCountMismatch(source, features, inputs):
            return "\(source) has \(features) features per row, but the model takes \(inputs) inputs"
        case let .classCountMismatch(source, classes, outputs):
            return "\(source) has \(classes) classes, but the model has \(outputs) outputs"
        case let .invalidBatch(message):
            return "invalid batch: \(message)"
        case let .labelOutOfRange(label, index, outputs):
            return "label \(label) (batch row \(index)) is outside 0..<\(outputs), the model's classes"
        }
    }
}
