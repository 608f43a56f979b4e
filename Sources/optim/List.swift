import ArgumentParser
import Foundation
import Optim

/// `optim list`: the registry, with each optimizer's reference and defaults.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the optimizers with their references and default hyperparameters.")

    @Flag(help: "One JSON object per optimizer and line: the registry table, for scripts (tools/bench reads it). Infinite values (Prodigy's growth_rate) are written as the strings \"inf\" and \"-inf\".")
    var json = false

    func run() throws {
        for info in OptimizerRegistry.all {
            if json {
                try printJSON(info)
                continue
            }
            let defaults = info.defaults.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            print("\(info.name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(info.typeName.padding(toLength: 15, withPad: " ", startingAt: 0)) \(defaults)\(info.isWrapper ? " (wraps --base)" : "")")
            print(String(repeating: " ", count: 33) + "reference: \(info.reference.symbol) (\(info.reference.library) \(info.reference.version))")
            print(String(repeating: " ", count: 33) + "paper: \(info.reference.paper)")
        }
    }

    func printJSON(_ info: OptimizerInfo) throws {
        /// A configuration as the registry takes it: name, hyperparameters by PyTorch name, and a
        /// wrapper's base.
        final class Configuration: Encodable {
            let name: String
            let hyperparameters: HyperparameterDictionary
            let base: Configuration?
            init(_ configuration: OptimizerConfiguration) {
                name = configuration.name
                hyperparameters = configuration.hyperparameters
                base = configuration.base.map(Configuration.init)
            }
        }
        /// The C kernel `optim bench` compares with: `kernel` (one pass with `state_buffers`
        /// arrays), `wrapper` (the base's kernel, then `symbol` every `every` steps) or `none`.
        struct Reference: Encodable {
            var kind: String
            var symbol: String?
            var stateBuffers: Int?
            var every: Int?
            var coefficients: [Float]?
            /// A global kernel's starting globals (Prodigy's d, d_max, d_numerator, k).
            var globals: [Double]?
            var reason: String?
            enum CodingKeys: String, CodingKey {
                case kind, symbol, every, coefficients, globals, reason
                case stateBuffers = "state_buffers"
            }
        }
        /// `optim bench`'s benchmark: the configuration it steps (and its display name) and its C reference.
        struct Benchmark: Encodable {
            var configuration: Configuration
            var displayName: String
            var reference: Reference
            enum CodingKeys: String, CodingKey {
                case configuration, reference
                case displayName = "display_name"
            }
        }
        struct Row: Encodable {
            var name, typeName, library, version, symbol, paper: String
            var defaults, suggested: HyperparameterDictionary
            var isWrapper, updatesWholeTensors, requiresMatrices, requiresClosure, compiledPerInstructionSet: Bool
            var stateDTypes: [String]
            /// The C kernel `optim bench` compares with, or nil for none.
            var cReference: String?
            var benchmark: Benchmark
            enum CodingKeys: String, CodingKey {
                case name, library, version, symbol, paper, defaults, suggested, benchmark
                case typeName = "type_name", isWrapper = "is_wrapper", updatesWholeTensors = "updates_whole_tensors"
                case requiresMatrices = "requires_matrices", requiresClosure = "requires_closure", cReference = "c_reference"
                case compiledPerInstructionSet = "compiled_per_instruction_set", stateDTypes = "state_dtypes"
            }
        }
        let reference: Reference
        switch info.benchmark.reference {
        case let .kernel(symbol, stateBuffers, coefficients):
            reference = Reference(kind: "kernel", symbol: symbol, stateBuffers: stateBuffers, coefficients: coefficients)
        case let .globalKernel(symbol, stateBuffers, coefficients, globals):
            reference = Reference(kind: "global_kernel", symbol: symbol, stateBuffers: stateBuffers, coefficients: coefficients, globals: globals)
        case let .wrapper(sync, every, coefficients):
            reference = Reference(kind: "wrapper", symbol: sync, every: every, coefficients: coefficients)
        case let .none(reason):
            reference = Reference(kind: "none", reason: reason)
        }
        let configuration = info.benchmark.configuration
        let row = Row(name: info.name, typeName: info.typeName, library: info.reference.library, version: info.reference.version,
                      symbol: info.reference.symbol, paper: info.reference.paper, defaults: info.defaults, suggested: info.suggested,
                      isWrapper: info.isWrapper, updatesWholeTensors: info.updatesWholeTensors, requiresMatrices: info.requiresMatrices,
                      requiresClosure: info.requiresClosure, compiledPerInstructionSet: info.compiledPerInstructionSet,
                      stateDTypes: info.stateDTypes.map(\.rawValue), cReference: reference.kind == "none" ? nil : reference.symbol,
                      benchmark: Benchmark(configuration: Configuration(configuration), displayName: configuration.displayName, reference: reference))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // JSON has no infinity; Prodigy's benchmark coefficients hold growth_rate = +inf.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        print(String(decoding: try encoder.encode(row), as: UTF8.self))
    }
}
