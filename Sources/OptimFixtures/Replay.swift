import Foundation
import Optim

/// The outcome of replaying one fixture.
public struct ReplayResult: Sendable {
    /// The fixture's name.
    public var name: String
    /// The optimizer, with the wrapped one for wrappers (`lookahead(adamw)`).
    public var optimizer: String
    /// The number of steps replayed.
    public var steps: Int
    /// Largest `|got − want|` over every checked value.
    public var maxAbsoluteError: Double
    /// Largest `|got − want| / |want|` over every checked value with `want ≠ 0`.
    public var maxRelativeError: Double
    /// Values outside `atol + rtol·|want|`.
    public var mismatches: Int
    /// The first value outside tolerance, described.
    public var firstMismatch: String?

    /// Whether every checked value was within tolerance.
    public var passed: Bool { mismatches == 0 }
}

extension OptimizerConfiguration {
    /// `name`, or `name(base)` for a wrapper.
    public var displayName: String { base.map { "\(name)(\($0.displayName))" } ?? name }
}

extension Fixture {
    /// Replays the fixture through the registry's optimizer and compares every expected value.
    ///
    /// A configuration the optimizer refuses (an invalid or unknown hyperparameter) is a
    /// ``FixtureError`` naming the hyperparameters.
    public func replay(file: String = "", threadPool: ThreadPool = .shared) throws(FixtureError) -> ReplayResult {
        func fail(_ field: String, _ error: OptimError) -> FixtureError {
            FixtureError(file: file.isEmpty ? name : file, field: field, message: error.description)
        }
        var byName: [String: Parameter] = [:]
        var ordered: [Parameter] = []
        for tensor in parameters {
            do {
                let parameter = try Parameter(name: tensor.name, shape: tensor.shape, values: tensor.data)
                parameter.convert(to: parameterDType)
                byName[tensor.name] = parameter
                ordered.append(parameter)
            } catch { throw fail("params", error) }
        }
        let groupConfigurations = groups.map { groups in
            groups.map { ParameterGroupConfiguration($0.parameterNames.map { byName[$0]! }, overrides: $0.overrides) }
        } ?? [ParameterGroupConfiguration(ordered)]
        let optimizer: any Optimizer
        do {
            optimizer = try OptimizerRegistry.makeOptimizer(configuration, groups: groupConfigurations, threadPool: threadPool)
        } catch { throw fail(groups == nil ? "hyperparameters" : "hyperparameters/groups", error) }
        // bfloat16 parameters with master weights: the fixture's float32 values are the masters,
        // kept whole, and the expectations are the masters after each step (the float32 trajectory).
        let masterWeights = parameterDType == .bfloat16 && configuration.hyperparameters["master_weights"] == .bool(true)
        if masterWeights {
            for tensor in parameters {
                do { try optimizer.setMasterWeights(tensor.data, of: byName[tensor.name]!) } catch { throw fail("params", error) }
            }
        }

        var result = ReplayResult(name: name, optimizer: configuration.displayName, steps: steps.count,
                                  maxAbsoluteError: 0, maxRelativeError: 0, mismatches: 0)
        func compare(_ expectations: [String: [Float]], after step: Int) {
            for (parameterName, want) in expectations.sorted(by: { $0.key < $1.key }) {
                let parameter = byName[parameterName]!
                let got = masterWeights ? ((try? optimizer.state(of: parameter))?["master_weight"] ?? parameter.valueArray) : parameter.valueArray
                for (index, wanted) in want.enumerated() {
                    let (w, g) = (Double(wanted), Double(got[index]))
                    let difference = abs(g - w)
                    result.maxAbsoluteError = max(result.maxAbsoluteError, difference.isNaN ? .infinity : difference)
                    if w != 0 { result.maxRelativeError = max(result.maxRelativeError, difference.isNaN ? .infinity : difference / abs(w)) }
                    if !(difference <= absoluteTolerance + relativeTolerance * abs(w)) {
                        result.mismatches += 1
                        if result.firstMismatch == nil {
                            result.firstMismatch = "after step \(step + 1), \(parameterName)[\(index)]: got \(got[index]), want \(wanted)"
                        }
                    }
                }
            }
        }

        // A closure-driven fixture: every closure call evaluates the objective at the parameters.
        var calls = 0
        let closure = { () -> Float in
            calls += 1
            let x = ordered.flatMap(\.valueArray)
            var gradient = [Float](repeating: 0, count: x.count)
            let loss = objective!.evaluate(x, gradient: &gradient)
            var offset = 0
            for parameter in ordered {
                try parameter.setGradient(Array(gradient[offset..<(offset + parameter.count)]))
                offset += parameter.count
            }
            return loss
        }
        for (index, step) in steps.enumerated() {
            do {
                for (group, rate) in step.learningRates { try optimizer.setLearningRate(rate, group: group) }
                if let mode = step.mode {
                    switch mode {
                    case .train: try optimizer.train()
                    case .eval: try optimizer.eval()
                    }
                    if let expected = step.expected { compare(expected, after: index) }
                    continue
                }
                if objective != nil {
                    try optimizer.step(closure: closure)
                    if let wanted = step.evaluations, wanted != calls {
                        result.mismatches += 1
                        if result.firstMismatch == nil {
                            result.firstMismatch = "after step \(index + 1): \(calls) closure evaluations, the reference \(wanted)"
                        }
                    }
                    if let expected = step.expected { compare(expected, after: index) }
                    continue
                }
                for parameter in ordered {
                    if let gradient = step.gradients[parameter.name] {
                        try parameter.setGradient(gradient)
                    } else {
                        parameter.zeroGradient(setToNone: true)
                    }
                }
                try optimizer.step()
            } catch let error as OptimError {
                throw fail("steps[\(index)]", error)
            } catch {
                throw FixtureError(file: file.isEmpty ? name : file, field: "steps[\(index)]", message: "\(error)")
            }
            if let expected = step.expected { compare(expected, after: index) }
        }
        compare(expected, after: steps.count - 1)
        return result
    }
}

/// Finds fixture files: each path is a `.json` file or a folder searched recursively.
public enum FixtureFiles {
    /// The fixture files under `paths`, a folder's `.json` files in sorted order; a path that does
    /// not exist, or a folder without any, comes back with an error.
    public static func find(_ paths: [String]) -> [(path: String, error: String?)] {
        var found: [(String, String?)] = []
        let manager = FileManager.default
        for path in paths {
            var isDirectory: ObjCBool = false
            guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else {
                found.append((path, "no such file or folder"))
                continue
            }
            if !isDirectory.boolValue {
                found.append((path, nil))
                continue
            }
            let files = (manager.enumerator(atPath: path)?.compactMap { $0 as? String } ?? [])
                .filter { $0.hasSuffix(".json") }
                .sorted()
            if files.isEmpty { found.append((path, "no .json fixture files in this folder")) }
            for file in files { found.append(((path as NSString).appendingPathComponent(file), nil)) }
        }
        return found
    }
}
