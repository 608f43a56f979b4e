import Optim
import Testing

@Suite struct RegistryTests {
    /// The defaults of `shared/fixtures/FORMAT.md`, i.e. of the reference implementations.
    static let referenceDefaults: [String: HyperparameterDictionary] = [
        "sgd": ["lr": .number(1e-3), "momentum": .number(0), "dampening": .number(0), "weight_decay": .number(0),
                "nesterov": .bool(false), "maximize": .bool(false)],
        "adam": ["lr": .number(1e-3), "betas": .numbers([0.9, 0.999]), "eps": .number(1e-8), "weight_decay": .number(0),
                 "amsgrad": .bool(false), "maximize": .bool(false)],
        "adamw": ["lr": .number(1e-3), "betas": .numbers([0.9, 0.999]), "eps": .number(1e-8), "weight_decay": .number(1e-2),
                  "amsgrad": .bool(false), "maximize": .bool(false)],
        "decoupled_adamw": ["lr": .number(1e-3), "betas": .numbers([0.9, 0.95]), "eps": .number(1e-8), "weight_decay": .number(1e-5),
                            "amsgrad": .bool(false)],
        "lion": ["lr": .number(1e-4), "betas": .numbers([0.9, 0.99]), "weight_decay": .number(0)],
        "decoupled_lionw": ["lr": .number(1e-4), "betas": .numbers([0.9, 0.99]), "weight_decay": .number(0)],
        "adopt": ["lr": .number(1e-3), "betas": .numbers([0.9, 0.9999]), "eps": .number(1e-6), "weight_decay": .number(0),
                  "decouple": .bool(false), "clip_exponent": .number(0.25), "maximize": .bool(false)],
        "lookahead": ["k": .number(5), "alpha": .number(0.5)],
    ]

    @Test func namesAreTheFixtureNames() {
        #expect(OptimizerRegistry.names == ["sgd", "adam", "adamw", "decoupled_adamw", "lion", "decoupled_lionw", "adopt", "lookahead"])
    }

    @Test(arguments: OptimizerRegistry.all.map(\.name))
    func defaultsMatchTheReferences(name: String) throws {
        #expect(try OptimizerRegistry.info(named: name).defaults == Self.referenceDefaults[name])
    }

    @Test(arguments: OptimizerRegistry.all.map(\.name))
    func buildsFromNameAndReportsItsHyperparameters(name: String) throws {
        let a = try Parameter(name: "a", shape: [2], values: [1, 2])
        let b = try Parameter(name: "b", shape: [3], values: [1, 2, 3])
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name), groups: [.init([a]), .init([b], overrides: ["lr": .number(0.5)])])
        #expect(optimizer.name == name)
        #expect(optimizer.groupCount == 2)
        #expect(optimizer.parameters == [a, b])
        #expect(try optimizer.learningRate(group: 1) == 0.5)
        #expect(try optimizer.initialLearningRate(group: 1) == 0.5)
        #expect(try optimizer.hyperparameters(group: 1)["lr"] == .number(0.5))
    }
}
