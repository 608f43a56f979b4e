import ArgumentParser
import Foundation
import Optim

/// `optim list`: the registry, with each optimizer's reference and defaults.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the optimizers with their references and default hyperparameters.")

    @Flag(help: "One JSON object per optimizer and line: the registry table, for scripts (tools/bench reads it).")
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
        struct Row: Encodable {
            var name, typeName, library, version, symbol, paper: String
            var defaults, suggested: HyperparameterDictionary
            var isWrapper, updatesWholeTensors, requiresMatrices, requiresClosure: Bool
            /// The C kernel `optim bench` compares with, or nil for none.
            var cReference: String?
            enum CodingKeys: String, CodingKey {
                case name, library, version, symbol, paper, defaults, suggested
                case typeName = "type_name", isWrapper = "is_wrapper", updatesWholeTensors = "updates_whole_tensors"
                case requiresMatrices = "requires_matrices", requiresClosure = "requires_closure", cReference = "c_reference"
            }
        }
        let reference: String?
        switch info.benchmark.reference {
        case let .kernel(symbol, _, _): reference = symbol
        case let .globalKernel(symbol, _, _, _): reference = symbol
        case let .wrapper(sync, _, _): reference = sync
        case .none: reference = nil
        }
        let row = Row(name: info.name, typeName: info.typeName, library: info.reference.library, version: info.reference.version,
                      symbol: info.reference.symbol, paper: info.reference.paper, defaults: info.defaults, suggested: info.suggested,
                      isWrapper: info.isWrapper, updatesWholeTensors: info.updatesWholeTensors, requiresMatrices: info.requiresMatrices,
                      requiresClosure: info.requiresClosure, cReference: reference)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(row), as: UTF8.self))
    }
}
