/// A hyperparameter value as it appears in configuration: fixture files, the CLI, checkpoints.
///
/// Names in such dictionaries are PyTorch's (`lr`, `betas`, `weight_decay`), so a configuration
/// reads the same in Python and in Swift.
public enum HyperparameterValue: Sendable, Hashable, CustomStringConvertible {
    /// A number (`lr`, `eps`, …).
    case number(Double)
    /// A flag (`maximize`, `nesterov`, …).
    case bool(Bool)
    /// A list of numbers (`betas`, `ns_coefficients`).
    case numbers([Double])
    /// No value: Python's `None` (LBFGS's `max_eval`, ADOPT's `clip_exponent`).
    case null
    /// A named choice (Muon's `adjust_lr_fn`, LBFGS's `line_search_fn`).
    case string(String)
    /// A list that is not all numbers (Adafactor's `eps`, `[null, 1e-3]`).
    case list([HyperparameterValue])

    /// The value as messages show it: `0.001`, `1` (whole numbers without `.0`), `true`,
    /// `[0.9, 0.999]`, `null`, strings unquoted.
    public var description: String {
        switch self {
        case let .number(value): return Self.format(value)
        case let .bool(value): return String(value)
        case let .numbers(values): return "[" + values.map(Self.format).joined(separator: ", ") + "]"
        case .null: return "null"
        case let .string(value): return value
        case let .list(values): return "[" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }

    static func format(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
        return String(value)
    }

    var kind: String {
        switch self {
        case .number: return "a number"
        case .bool: return "a boolean"
        case .numbers: return "a list of numbers"
        case .null: return "null"
        case .string: return "a string"
        case .list: return "a list"
        }
    }
}

extension HyperparameterValue: Codable {
    /// Decodes a JSON value: null, a boolean, a number, a string, a list of numbers, or any other list.
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let flag = try? container.decode(Bool.self) { self = .bool(flag) }
        else if let number = try? container.decode(Double.self) { self = .number(number) }
        else if let text = try? container.decode(String.self) { self = .string(text) }
        else if let numbers = try? container.decode([Double].self) { self = .numbers(numbers) }
        else { self = .list(try container.decode([HyperparameterValue].self)) }
    }

    /// Encodes the value as the JSON value it stands for.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .number(value): try container.encode(value)
        case let .bool(value): try container.encode(value)
        case let .numbers(values): try container.encode(values)
        case .null: try container.encodeNil()
        case let .string(value): try container.encode(value)
        case let .list(values): try container.encode(values)
        }
    }
}

/// A dictionary of hyperparameters by PyTorch name.
public typealias HyperparameterDictionary = [String: HyperparameterValue]

/// The hyperparameters of one optimizer: Swift-named fields, validation, and the conversion from
/// and to PyTorch-named dictionaries used by the registry, fixtures and checkpoints.
public protocol OptimizerHyperparameters: Sendable, Equatable {
    /// The learning rate; schedules and fixtures change it between steps.
    var learningRate: Double { get set }
    /// Reads a dictionary by PyTorch name; omitted names take the reference defaults.
    /// Unknown names and wrongly typed values throw.
    init(_ dictionary: HyperparameterDictionary) throws(OptimError)
    /// The hyperparameters by PyTorch name.
    var dictionary: HyperparameterDictionary { get }
    /// Throws ``OptimError/invalidHyperparameter(optimizer:name:value:expected:)`` for the first
    /// value out of range.
    func validate() throws(OptimError)
    /// The group's state format (`state_dtype`, `min_8bit_size`); float32 unless the
    /// hyperparameters type reads them (``AdamHyperparameters``, ``LionHyperparameters``).
    var statePrecision: StatePrecision { get }
}

extension OptimizerHyperparameters {
    public var statePrecision: StatePrecision { .float32 }
}

/// Reads a ``HyperparameterDictionary`` field by field and refuses names nobody read.
struct HyperparameterReader {
    let optimizer: String
    private let values: HyperparameterDictionary
    private var read: Set<String> = []

    init(_ values: HyperparameterDictionary, optimizer: String) {
        self.values = values
        self.optimizer = optimizer
    }

    private mutating func value(_ name: String) -> HyperparameterValue? {
        read.insert(name)
        return values[name]
    }

    mutating func number(_ name: String, default defaultValue: Double) throws(OptimError) -> Double {
        switch value(name) {
        case nil: return defaultValue
        case let .number(number)?: return number
        case let other?: throw .hyperparameterType(optimizer: optimizer, name: name, expected: "a number", got: other.kind)
        }
    }

    /// A number or `null` (for options that can be switched off, such as ADOPT's clipping).
    mutating func optionalNumber(_ name: String, default defaultValue: Double?) throws(OptimError) -> Double? {
        switch value(name) {
        case nil: return defaultValue
        case .null?: return nil
        case let .number(number)?: return number
        case let other?: throw .hyperparameterType(optimizer: optimizer, name: name, expected: "a number or null", got: other.kind)
        }
    }

    mutating func bool(_ name: String, default defaultValue: Bool) throws(OptimError) -> Bool {
        switch value(name) {
        case nil: return defaultValue
        case let .bool(flag)?: return flag
        case let other?: throw .hyperparameterType(optimizer: optimizer, name: name, expected: "a boolean", got: other.kind)
        }
    }

    /// A list of two numbers (`betas`, Rprop's `etas`), as a ``Betas``.
    mutating func pair(_ name: String, default defaultValue: Betas) throws(OptimError) -> Betas {
        switch value(name) {
        case nil: return defaultValue
        case let .numbers(list)? where list.count == 2: return Betas(list[0], list[1])
        case let other?: throw .hyperparameterType(optimizer: optimizer, name: name, expected: "a list of two numbers", got: other.description)
        }
    }

    /// One of `choices`; `null` reads as `nullChoice` when given (torch's `None` for a default mode).
    mutating func choice(_ name: String, _ choices: [String], default defaultValue: String, nullChoice: String? = nil) throws(OptimError) -> String {
        switch value(name) {
        case nil: return defaultValue
        case .null? where nullChoice != nil: return nullChoice!
        case let .string(text)? where choices.contains(text): return text
        case let other?:
            throw .hyperparameterType(optimizer: optimizer, name: name, expected: "one of " + choices.joined(separator: ", ") + (nullChoice != nil ? " or null" : ""),
                                      got: other.description)
        }
    }

    /// A list of `count` entries, each a number or `null`.
    mutating func optionalNumbers(_ name: String, count: Int, default defaultValue: [Double?]) throws(OptimError) -> [Double?] {
        switch value(name) {
        case nil: return defaultValue
        case let .numbers(list)? where list.count == count: return list
        case let .list(items)? where items.count == count:
            var result: [Double?] = []
            for item in items {
                switch item {
                case let .number(number): result.append(number)
                case .null: result.append(nil)
                default: throw .hyperparameterType(optimizer: optimizer, name: name, expected: "a list of \(count) numbers or nulls", got: HyperparameterValue.list(items).description)
                }
            }
            return result
        case let other?: throw .hyperparameterType(optimizer: optimizer, name: name, expected: "a list of \(count) numbers or nulls", got: other.description)
        }
    }

    /// A list of numbers of the given length.
    mutating func numbers(_ name: String, count: Int, default defaultValue: [Double]) throws(OptimError) -> [Double] {
        switch value(name) {
        case nil: return defaultValue
        case let .numbers(list)? where list.count == count: return list
        case let other?: throw .hyperparameterType(optimizer: optimizer, name: name, expected: "a list of \(count) numbers", got: other.description)
        }
    }

    /// Throws for the first name in the dictionary that was never read.
    func finish() throws(OptimError) {
        // `state_dtype` is every optimizer's key (FORMAT.md): "float32" always passes, another
        // value an optimizer that does not read it cannot keep is refused with its own message.
        let unread = values.keys.sorted().filter { !read.contains($0) }
        if let dtype = values["state_dtype"], unread.contains("state_dtype") {
            guard dtype == .string(StateDType.float32.rawValue) else {
                let name: String
                if case .string(let text) = dtype { name = text } else { name = dtype.description }
                throw StatePrecision.unsupported(name, optimizer: optimizer, supported: [.float32])
            }
        }
        if let unknown = unread.first(where: { $0 != "state_dtype" }) {
            throw .unknownHyperparameter(optimizer: optimizer, name: unknown, known: Array(read))
        }
    }
}

/// Range checks shared by the optimizers, each throwing an error that names the value and range.
enum Validate {
    static func fail(_ optimizer: String, _ name: String, _ value: Double, _ expected: String) -> OptimError {
        .invalidHyperparameter(optimizer: optimizer, name: name, value: HyperparameterValue.format(value), expected: expected)
    }

    static func learningRate(_ value: Double, _ optimizer: String) throws(OptimError) {
        guard value.isFinite, value > 0 else { throw fail(optimizer, "learningRate (lr)", value, "a finite number > 0") }
    }

    /// Checks both betas: `[0, 1)`, or `[0, 1]` where the reference allows 1.
    static func betas(_ betas: Betas, _ optimizer: String, allowOne: Bool = false) throws(OptimError) {
        for (index, beta) in [betas.first, betas.second].enumerated() {
            let ok = beta >= 0 && (allowOne ? beta <= 1 : beta < 1)
            guard ok else { throw fail(optimizer, "betas.\(index) (betas[\(index)])", beta, allowOne ? "a number in [0, 1]" : "a number in [0, 1)") }
        }
    }

    static func epsilon(_ value: Double, _ optimizer: String) throws(OptimError) {
        guard value.isFinite, value > 0 else { throw fail(optimizer, "eps", value, "a finite number > 0") }
    }

    static func weightDecay(_ value: Double, _ optimizer: String) throws(OptimError) {
        guard value.isFinite, value >= 0 else { throw fail(optimizer, "weightDecay (weight_decay)", value, "a finite number >= 0") }
    }

    static func unitInterval(_ value: Double, _ name: String, _ optimizer: String) throws(OptimError) {
        guard value >= 0, value <= 1 else { throw fail(optimizer, name, value, "a number in [0, 1]") }
    }

    /// A finite number `>= 0` (torch's checks on `eps`, `lr_decay`, momentum and the like).
    static func nonNegative(_ value: Double, _ name: String, _ optimizer: String) throws(OptimError) {
        guard value.isFinite, value >= 0 else { throw fail(optimizer, name, value, "a finite number >= 0") }
    }

    /// A finite number.
    static func finite(_ value: Double, _ name: String, _ optimizer: String) throws(OptimError) {
        guard value.isFinite else { throw fail(optimizer, name, value, "a finite number") }
    }
}

/// The two averaging coefficients (β1, β2) of Adam-style optimizers: PyTorch's `betas=(0.9, 0.999)`
/// is `Betas(0.9, 0.999)` here, or `.init(0.9, 0.999)` where the type is known.
///
/// A struct rather than a tuple, so the hyperparameters that hold it get a synthesized
/// `Equatable`. Every optimizer with betas (``Adam``, ``AdamW``, ``Lion``, ``ADOPT``, ``NAdam``,
/// ``MARS``, …) takes this type; Rprop's `etas` and `step_sizes` pairs use it too. In
/// hyperparameter dictionaries it is PyTorch's list of two numbers, `"betas": [0.9, 0.999]`.
public struct Betas: Sendable, Hashable, CustomStringConvertible {
    /// β1, the first moment's decay.
    public var first: Double
    /// β2, the second moment's decay.
    public var second: Double

    /// The pair (β1, β2).
    public init(_ first: Double, _ second: Double) {
        self.first = first
        self.second = second
    }

    var pair: (Double, Double) { (first, second) }
    var value: HyperparameterValue { .numbers([first, second]) }
    /// `(β1, β2)`, as PyTorch prints the tuple.
    public var description: String { "(\(first), \(second))" }
}
