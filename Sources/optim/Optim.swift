import ArgumentParser

/// `optim`: the command-line face of swift-optim.
@main
struct OptimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "optim",
        abstract: "Optimizers for neural networks in Swift: verify, benchmark and train.",
        subcommands: [Train.self, Compare.self, Verify.self, Bench.self, BenchModel.self, Inspect.self, List.self, CheckpointStress.self])
}
