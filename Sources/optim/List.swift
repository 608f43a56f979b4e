import ArgumentParser
import Optim

/// `optim list`: the registry, with each optimizer's reference and defaults.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the optimizers with their references and default hyperparameters.")

    func run() {
        for info in OptimizerRegistry.all {
            let defaults = info.defaults.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            print("\(info.name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(info.typeName.padding(toLength: 15, withPad: " ", startingAt: 0)) \(defaults)\(info.isWrapper ? " (wraps --base)" : "")")
            print(String(repeating: " ", count: 33) + "reference: \(info.reference.symbol) (\(info.reference.library) \(info.reference.version))")
            print(String(repeating: " ", count: 33) + "paper: \(info.reference.paper)")
        }
    }
}
