/// Every error the library throws: each case names the offending value and what was expected.
///
/// Errors are thrown for anything a caller can get wrong — hyperparameters, parameter lists,
/// shapes, names — never trapped with a `precondition`.
public enum OptimError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A hyperparameter is out of its valid range.
    case invalidHyperparameter(optimizer: String, name: String, value: String, expected: String)
    /// A hyperparameter name that the optimizer does not have.
    case unknownHyperparameter(optimizer: String, name: String, known: [String])
    /// A hyperparameter given with the wrong kind of value (a number where a flag is due, …).
    case hyperparameterType(optimizer: String, name: String, expected: String, got: String)
    /// An optimizer was built with no parameters, or a group with none.
    case emptyParameterList(optimizer: String)
    /// The same parameter object, or two parameters of the same name, were given twice.
    case duplicateParameter(name: String)
    /// A shape with a negative dimension, or whose element count overflows.
    case invalidShape(parameter: String, shape: [Int])
    /// A parameter name that is empty.
    case invalidParameterName(String)
    /// A buffer whose element count differs from the parameter's shape.
    case sizeMismatch(parameter: String, expected: Int, got: Int)
    /// A parameter group index out of range.
    case invalidGroup(index: Int, groupCount: Int)
    /// A parameter that the optimizer does not hold.
    case unknownParameter(name: String)
    /// An optimizer name that the registry does not list.
    case unknownOptimizer(name: String, known: [String])
    /// A gradient holds NaN or ±Inf and the policy is ``NonFinitePolicy/throw``.
    case nonFiniteGradient(parameter: String)
    /// A checkpoint that does not fit the optimizer it is loaded into.
    case checkpointMismatch(String)
    /// A configuration that is inconsistent as a whole (e.g. `lookahead` without a base optimizer).
    case invalidConfiguration(String)
    /// An optimizer that evaluates the loss itself (LBFGS) was stepped without a closure.
    case closureRequired(optimizer: String)
    /// A row-sparse gradient names a row the parameter does not have.
    case sparseRowOutOfRange(parameter: String, row: Int, rows: Int)
    /// A schedule-free optimizer was stepped in eval mode (its parameters at the average x).
    case stepInEvalMode(optimizer: String)

    /// A one-line message: what is wrong, naming the optimizer, parameter or group concerned.
    public var description: String {
        switch self {
        case let .invalidHyperparameter(optimizer, name, value, expected):
            return "\(optimizer): invalid \(name) = \(value); expected \(expected)"
        case let .unknownHyperparameter(optimizer, name, known):
            return "\(optimizer): unknown hyperparameter '\(name)'; it takes \(known.sorted().joined(separator: ", "))"
        case let .hyperparameterType(optimizer, name, expected, got):
            return "\(optimizer): hyperparameter '\(name)' must be \(expected), got \(got)"
        case let .emptyParameterList(optimizer):
            return "\(optimizer): empty parameter list; give at least one parameter (and at least one per group)"
        case let .duplicateParameter(name):
            return "parameter '\(name)' appears more than once"
        case let .invalidShape(parameter, shape):
            return "parameter '\(parameter)': invalid shape \(shape); dimensions must be >= 0 and the element count must fit in Int"
        case let .invalidParameterName(name):
            return "invalid parameter name '\(name)'; names must be non-empty"
        case let .sizeMismatch(parameter, expected, got):
            return "parameter '\(parameter)': expected \(expected) elements, got \(got)"
        case let .invalidGroup(index, count):
            return "parameter group \(index) does not exist; the optimizer has \(count) group(s)"
        case let .unknownParameter(name):
            return "parameter '\(name)' is not held by this optimizer"
        case let .unknownOptimizer(name, known):
            return "unknown optimizer '\(name)'; known: \(known.joined(separator: ", "))"
        case let .nonFiniteGradient(parameter):
            return "the gradient of '\(parameter)' holds NaN or infinity; nothing was updated"
        case let .checkpointMismatch(message):
            return "checkpoint mismatch: \(message)"
        case let .invalidConfiguration(message):
            return message
        case let .closureRequired(optimizer):
            return "\(optimizer) evaluates the loss several times per step: call step(closure:) with a closure that runs the forward and backward passes; nothing was changed"
        case let .sparseRowOutOfRange(parameter, row, rows):
            return "the sparse gradient of '\(parameter)' names row \(row); the parameter has rows 0..<\(rows); nothing was changed"
        case let .stepInEvalMode(optimizer):
            return "\(optimizer) is in eval mode (the parameters are at the average x): call train() before step(); nothing was changed"
        }
    }
}
