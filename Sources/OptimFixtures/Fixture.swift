import Foundation
import Optim

/// A malformed fixture file: which file, which field, what is wrong.
public struct FixtureError: Error, Equatable, CustomStringConvertible {
    /// The fixture file's path.
    public var file: String
    /// The field at fault (`steps[3].grads`, …); empty for the file as a whole.
    public var field: String
    /// What is wrong.
    public var message: String

    /// `file: field 'field': message`, or `file: message` without a field.
    public var description: String { field.isEmpty ? "\(file): \(message)" : "\(file): field '\(field)': \(message)" }
}

/// One optimizer trajectory in the `optim-fixture/1` format (see `shared/fixtures/FORMAT.md`):
/// initial parameters, the gradients of each step, and the parameters the reference reached.
public struct Fixture: Sendable {
    /// A named tensor of the file (`params`): shape and row-major data.
    public struct Tensor: Sendable {
        /// The parameter's name.
        public var name: String
        /// The dimensions, outermost first.
        public var shape: [Int]
        /// The elements, row-major.
        public var data: [Float]
    }

    /// One parameter group (`groups`): its parameters, in order, and the hyperparameters it overrides.
    public struct Group: Sendable {
        /// The names of the group's parameters (`params`), in order.
        public var parameterNames: [String]
        /// The hyperparameters the group overrides, by Python name.
        public var overrides: HyperparameterDictionary
    }

    /// One optimizer step of the trajectory (`steps`).
    public struct Step: Sendable {
        /// Gradients by parameter name; a parameter missing here has no gradient this step.
        public var gradients: [String: [Float]]
        /// Learning rates to set before the step, by group index.
        public var learningRates: [Int: Double]
        /// Parameters expected right after the step.
        public var expected: [String: [Float]]?
        /// For a fixture with an ``Fixture/objective``: the reference's closure calls since the start.
        public var evaluations: Int?
        /// A mode switch instead of a gradient step (`{"mode": "train"}` / `{"mode": "eval"}`):
        /// schedule-free's `train()` / `eval()`, which move the parameters.
        public var mode: Mode?

        /// Schedule-free's `train()` or `eval()`.
        public enum Mode: String, Sendable {
            /// `optimizer.train()`: the parameters at the training point.
            case train
            /// `optimizer.eval()`: the parameters at the evaluation point (schedule-free's average).
            case eval
        }
    }

    /// The fixture's unique name (`[a-z0-9_-]+`).
    public var name: String
    /// What produced the expected values: the library and its version (free text).
    public var reference: String
    /// The optimizer and its hyperparameters by Python name (and, for `lookahead`, the wrapped optimizer).
    public var configuration: OptimizerConfiguration
    /// The parameter groups, or `nil` for one group holding every parameter in file order.
    public var groups: [Group]?
    /// The initial parameters, in order (`params`).
    public var parameters: [Tensor]
    /// The steps, in order.
    public var steps: [Step]
    /// The parameters after the last step, by name.
    public var expected: [String: [Float]]
    /// The objective a closure-driven optimizer's steps evaluate (L-BFGS), or `nil` when the
    /// steps give gradients.
    public var objective: Objective?
    /// The parameters' dtype (`param_dtype`, this project's extension of the format): float32
    /// unless the file says `"bfloat16"`; then the initial values are bfloat16 numbers and the
    /// parameters are bfloat16 (`Parameter.convert(to:)`) before the optimizer is built. With
    /// the hyperparameter `master_weights` true the initial values are instead the float32 master
    /// weights (`Optimizer.setMasterWeights(_:of:)`), and the expectations are the masters.
    public var parameterDType: ParameterDType = .float32
    /// `rtol`: a value passes when `|got − want| ≤ atol + rtol·|want|`; 1e-5 by default.
    public var relativeTolerance: Double
    /// `atol`: a value passes when `|got − want| ≤ atol + rtol·|want|`; 1e-6 by default.
    public var absoluteTolerance: Double

    /// The `format` value every fixture file carries.
    public static let format = "optim-fixture/1"
}

extension Fixture {
    /// Reads and checks a fixture file; every problem is a ``FixtureError`` naming the field.
    public init(contentsOf url: URL) throws(FixtureError) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FixtureError(file: url.path, field: "", message: "cannot read: \(error.localizedDescription)")
        }
        try self.init(json: data, file: url.path)
    }

    /// Parses a fixture from JSON; `file` names it in errors.
    public init(json data: Data, file: String) throws(FixtureError) {
        let root: JSONValue
        do { root = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw FixtureError(file: file, field: "", message: "not valid JSON (\(error))")
        }
        var parser = FixtureParser(file: file)
        self = try parser.fixture(root)
    }
}

/// Walks a parsed fixture, checking each field against the format.
struct FixtureParser {
    let file: String

    func fail(_ field: String, _ message: String) -> FixtureError {
        FixtureError(file: file, field: field, message: message)
    }

    func object(_ value: JSONValue?, _ field: String) throws(FixtureError) -> [String: JSONValue] {
        guard case let .object(object)? = value else { throw fail(field, value == nil ? "missing" : "expected an object, got \(value!.kind)") }
        return object
    }

    func array(_ value: JSONValue?, _ field: String) throws(FixtureError) -> [JSONValue] {
        guard case let .array(array)? = value else { throw fail(field, value == nil ? "missing" : "expected an array, got \(value!.kind)") }
        return array
    }

    func string(_ value: JSONValue?, _ field: String) throws(FixtureError) -> String {
        guard case let .string(string)? = value else { throw fail(field, value == nil ? "missing" : "expected a string, got \(value!.kind)") }
        return string
    }

    func number(_ value: JSONValue?, _ field: String) throws(FixtureError) -> Double {
        guard case let .number(number)? = value else { throw fail(field, value == nil ? "missing" : "expected a number, got \(value!.kind)") }
        return number
    }

    func floats(_ value: JSONValue?, _ field: String, count: Int) throws(FixtureError) -> [Float] {
        let items = try array(value, field)
        guard items.count == count else { throw fail(field, "expected \(count) numbers, got \(items.count)") }
        var result: [Float] = []
        result.reserveCapacity(count)
        for (index, item) in items.enumerated() {
            guard case let .number(number) = item else { throw fail("\(field)[\(index)]", "expected a number, got \(item.kind)") }
            result.append(Float(number))
        }
        return result
    }

    func hyperparameters(_ value: JSONValue?, _ field: String) throws(FixtureError) -> HyperparameterDictionary {
        guard let value else { return [:] }
        var result: HyperparameterDictionary = [:]
        for (key, item) in try object(value, field) {
            switch item {
            case let .number(number): result[key] = .number(number)
            case let .bool(flag): result[key] = .bool(flag)
            case .null: result[key] = .null
            case let .string(text): result[key] = .string(text)
            case let .array(items):
                var values: [HyperparameterValue] = []
                for (index, element) in items.enumerated() {
                    switch element {
                    case let .number(number): values.append(.number(number))
                    case .null: values.append(.null)
                    default: throw fail("\(field).\(key)[\(index)]", "expected a number or null, got \(element.kind)")
                    }
                }
                let numbers = values.compactMap { value -> Double? in if case let .number(number) = value { return number } else { return nil } }
                result[key] = numbers.count == values.count ? .numbers(numbers) : .list(values)
            default: throw fail("\(field).\(key)", "expected a number, boolean, string, null or list of numbers, got \(item.kind)")
            }
        }
        return result
    }

    func configuration(_ root: [String: JSONValue], _ prefix: String) throws(FixtureError) -> OptimizerConfiguration {
        let name = try string(root["optimizer"], prefix + "optimizer")
        guard OptimizerRegistry.names.contains(name) else {
            throw fail(prefix + "optimizer", "unknown optimizer '\(name)'; known: \(OptimizerRegistry.names.joined(separator: ", "))")
        }
        var configuration = OptimizerConfiguration(name: name, hyperparameters: try hyperparameters(root["hyperparameters"], prefix + "hyperparameters"))
        let info = OptimizerRegistry.all.first { $0.name == name }!
        if info.isWrapper {
            configuration.base = try self.configuration(try object(root["base"], prefix + "base"), prefix + "base.")
        } else if root["base"] != nil {
            throw fail(prefix + "base", "only a wrapper optimizer (lookahead) takes a base")
        }
        return configuration
    }

    /// Checks that a map of parameter name → flat data names known parameters with the right lengths.
    func tensors(_ value: JSONValue?, _ field: String, counts: [String: Int]) throws(FixtureError) -> [String: [Float]] {
        var result: [String: [Float]] = [:]
        for (key, item) in try object(value, field) {
            guard let count = counts[key] else { throw fail("\(field).\(key)", "no parameter named '\(key)'") }
            result[key] = try floats(item, "\(field).\(key)", count: count)
        }
        return result
    }

    mutating func fixture(_ value: JSONValue) throws(FixtureError) -> Fixture {
        let root = try object(value, "")
        let format = try string(root["format"], "format")
        guard format == Fixture.format else { throw fail("format", "expected '\(Fixture.format)', got '\(format)'") }
        let name = try string(root["name"], "name")
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ "abcdefghijklmnopqrstuvwxyz0123456789_-".unicodeScalars.contains($0) }) else {
            throw fail("name", "'\(name)' must match [a-z0-9_-]+")
        }
        let reference = try string(root["reference"], "reference")
        var configuration = try configuration(root, "")
        // This project's extension of the format: Muon fixtures whose reference ran Newton–Schulz
        // in float32 say so with a top-level "ns_dtype" (tools/reference/README.md).
        if let precision = root["ns_dtype"] {
            let text = try string(precision, "ns_dtype")
            guard configuration.name == "muon", configuration.hyperparameters["ns_dtype"] == nil else {
                throw fail("ns_dtype", "only a muon fixture may say ns_dtype, once")
            }
            configuration.hyperparameters["ns_dtype"] = .string(text)
        }

        var parameters: [Fixture.Tensor] = []
        var counts: [String: Int] = [:]
        for (index, item) in try array(root["params"], "params").enumerated() {
            let field = "params[\(index)]"
            let entry = try object(item, field)
            let parameterName = try string(entry["name"], field + ".name")
            guard counts[parameterName] == nil else { throw fail(field + ".name", "duplicate parameter '\(parameterName)'") }
            var shape: [Int] = []
            for (axis, dimension) in try array(entry["shape"], field + ".shape").enumerated() {
                let size = try number(dimension, "\(field).shape[\(axis)]")
                guard size >= 0, size == size.rounded(), size < 1e12 else { throw fail("\(field).shape[\(axis)]", "expected a non-negative integer, got \(size)") }
                shape.append(Int(size))
            }
            let count = shape.reduce(1, *)
            counts[parameterName] = count
            parameters.append(.init(name: parameterName, shape: shape, data: try floats(entry["data"], field + ".data", count: count)))
        }
        guard !parameters.isEmpty else { throw fail("params", "no parameters") }

        var groups: [Fixture.Group]?
        if let groupsValue = root["groups"] {
            var seen = Set<String>()
            groups = []
            for (index, item) in try array(groupsValue, "groups").enumerated() {
                let field = "groups[\(index)]"
                let entry = try object(item, field)
                var names: [String] = []
                for (position, nameValue) in try array(entry["params"], field + ".params").enumerated() {
                    let parameterName = try string(nameValue, "\(field).params[\(position)]")
                    guard counts[parameterName] != nil else { throw fail("\(field).params[\(position)]", "no parameter named '\(parameterName)'") }
                    guard seen.insert(parameterName).inserted else { throw fail("\(field).params[\(position)]", "'\(parameterName)' is already in a group") }
                    names.append(parameterName)
                }
                groups!.append(.init(parameterNames: names, overrides: try hyperparameters(entry["hyperparameters"], field + ".hyperparameters")))
            }
            guard !groups!.isEmpty else { throw fail("groups", "empty; omit it for a single group") }
        }
        let groupCount = groups?.count ?? 1
        var objective: Objective?
        if let objectiveValue = root["objective"] {
            let entry = try object(objectiveValue, "objective")
            let total = parameters.reduce(0) { $0 + $1.data.count }
            switch try string(entry["function"], "objective.function") {
            case "rosenbrock": objective = .rosenbrock
            case "quadratic":
                objective = .quadratic(curvature: try floats(entry["curvature"], "objective.curvature", count: total),
                                       center: try floats(entry["center"], "objective.center", count: total))
            case let other: throw fail("objective.function", "unknown objective '\(other)'; known: rosenbrock, quadratic")
            }
        }

        var steps: [Fixture.Step] = []
        for (index, item) in try array(root["steps"], "steps").enumerated() {
            let field = "steps[\(index)]"
            let entry = try object(item, field)
            var learningRates: [Int: Double] = [:]
            if let lrValue = entry["lr"] {
                for (key, rate) in try object(lrValue, field + ".lr") {
                    guard let group = Int(key), (0..<groupCount).contains(group) else {
                        throw fail("\(field).lr.\(key)", "no group '\(key)'; the fixture has \(groupCount) group(s), indexed from \"0\"")
                    }
                    learningRates[group] = try number(rate, "\(field).lr.\(key)")
                }
            }
            if let modeValue = entry["mode"] {
                let text = try string(modeValue, field + ".mode")
                guard let mode = Fixture.Step.Mode(rawValue: text) else { throw fail(field + ".mode", "expected \"train\" or \"eval\", got '\(text)'") }
                guard entry["grads"] == nil, entry["lr"] == nil else { throw fail(field, "a mode step holds no gradients and no learning rates") }
                steps.append(.init(gradients: [:], learningRates: [:],
                                   expected: try entry["expected"].map { value throws(FixtureError) in try tensors(value, field + ".expected", counts: counts) },
                                   evaluations: nil, mode: mode))
                continue
            }
            var evaluations: Int?
            if objective != nil {
                guard entry["grads"] == nil else { throw fail(field + ".grads", "a fixture with an objective gives no gradients") }
                let count = try number(entry["evaluations"], field + ".evaluations")
                guard count >= 0, count == count.rounded(), count < 1e9 else { throw fail(field + ".evaluations", "expected a non-negative integer, got \(count)") }
                evaluations = Int(count)
            }
            steps.append(.init(
                gradients: objective == nil ? try tensors(entry["grads"], field + ".grads", counts: counts) : [:],
                learningRates: learningRates,
                expected: try entry["expected"].map { value throws(FixtureError) in try tensors(value, field + ".expected", counts: counts) },
                evaluations: evaluations, mode: nil))
        }
        guard !steps.isEmpty else { throw fail("steps", "no steps") }

        let expected = try tensors(root["expected"], "expected", counts: counts)
        var relativeTolerance = 1e-5, absoluteTolerance = 1e-6
        if let toleranceValue = root["tolerance"] {
            let tolerance = try object(toleranceValue, "tolerance")
            if tolerance["rtol"] != nil { relativeTolerance = try number(tolerance["rtol"], "tolerance.rtol") }
            if tolerance["atol"] != nil { absoluteTolerance = try number(tolerance["atol"], "tolerance.atol") }
            guard relativeTolerance >= 0, absoluteTolerance >= 0 else { throw fail("tolerance", "rtol and atol must be >= 0") }
        }
        var fixture = Fixture(name: name, reference: reference, configuration: configuration, groups: groups, parameters: parameters,
                              steps: steps, expected: expected, objective: objective, relativeTolerance: relativeTolerance, absoluteTolerance: absoluteTolerance)
        if let dtypeValue = root["param_dtype"] {
            let text = try string(dtypeValue, "param_dtype")
            guard let dtype = ParameterDType(rawValue: text) else {
                throw fail("param_dtype", "'\(text)' is not one of \(ParameterDType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            fixture.parameterDType = dtype
        }
        return fixture
    }
}
