/// How to build an optimizer by name: the registry name, its hyperparameters by PyTorch name
/// (omitted ones take the reference defaults), and for ``Lookahead`` the wrapped optimizer.
public struct OptimizerConfiguration: Sendable, Equatable {
    public var name: String
    public var hyperparameters: HyperparameterDictionary
    private var wrapped: [OptimizerConfiguration]

    /// The optimizer a wrapper (``Lookahead``) wraps.
    public var base: OptimizerConfiguration? {
        get { wrapped.first }
        set { wrapped = newValue.map { [$0] } ?? [] }
    }

    public init(name: String, hyperparameters: HyperparameterDictionary = [:], base: OptimizerConfiguration? = nil) {
        self.name = name
        self.hyperparameters = hyperparameters
        self.wrapped = base.map { [$0] } ?? []
    }
}

/// One parameter group for the registry: its parameters and the hyperparameters it overrides.
public struct ParameterGroupConfiguration: Sendable {
    public var parameters: [Parameter]
    public var overrides: HyperparameterDictionary

    public init(_ parameters: [Parameter], overrides: HyperparameterDictionary = [:]) {
        self.parameters = parameters
        self.overrides = overrides
    }
}

/// One registry entry: an optimizer's name, reference, defaults and constructor — PyTorch's
/// `OptimizerInfo`. The CLI, the fixture replayer, tests and benchmarks all go through it.
public struct OptimizerInfo: Sendable {
    /// The registry name, as in fixture files and on the command line.
    public let name: String
    /// The Swift type name.
    public let typeName: String
    /// What the optimizer is matched against.
    public let reference: String
    /// The reference defaults, by PyTorch name.
    public let defaults: HyperparameterDictionary
    /// Whether it wraps another optimizer (``OptimizerConfiguration/base``).
    public let isWrapper: Bool
    let make: @Sendable (OptimizerConfiguration, [ParameterGroupConfiguration], ThreadPool) throws(OptimError) -> any Optimizer
}

/// Every optimizer of the library, by name.
///
/// Adding an optimizer means one file under `Optimizers/` and one entry in ``all``.
public enum OptimizerRegistry {
    public static let all: [OptimizerInfo] = [
        entry(SGDRule.self, "SGD", reference: "torch.optim.SGD"),
        entry(AdamRule.self, "Adam", reference: "torch.optim.Adam"),
        entry(AdamWRule.self, "AdamW", reference: "torch.optim.AdamW"),
        entry(DecoupledAdamWRule.self, "DecoupledAdamW", reference: "composer.optim.DecoupledAdamW"),
        entry(LionRule.self, "Lion", reference: "google/automl Lion (lion-pytorch)"),
        entry(DecoupledLionWRule.self, "DecoupledLionW", reference: "DecoupledLionW of seed 004"),
        entry(ADOPTRule.self, "ADOPT", reference: "official ADOPT (torch-adopt)"),
        OptimizerInfo(name: Lookahead.name, typeName: "Lookahead", reference: "Lookahead of seed 002",
                      defaults: ["k": .number(5), "alpha": .number(0.5)], isWrapper: true, make: makeLookahead),
    ]

    /// The registry names, in registry order.
    public static var names: [String] { all.map(\.name) }

    /// The entry named `name`.
    public static func info(named name: String) throws(OptimError) -> OptimizerInfo {
        guard let info = all.first(where: { $0.name == name }) else { throw .unknownOptimizer(name: name, known: names) }
        return info
    }

    /// Builds an optimizer from a configuration, one group per element of `groups`; each group's
    /// hyperparameters are the configuration's with the group's overrides on top.
    public static func makeOptimizer(_ configuration: OptimizerConfiguration, groups: [ParameterGroupConfiguration],
                                     threadPool: ThreadPool = .shared) throws(OptimError) -> any Optimizer {
        try info(named: configuration.name).make(configuration, groups, threadPool)
    }

    /// Builds an optimizer over one group holding `parameters`.
    public static func makeOptimizer(_ configuration: OptimizerConfiguration, parameters: [Parameter],
                                     threadPool: ThreadPool = .shared) throws(OptimError) -> any Optimizer {
        try makeOptimizer(configuration, groups: [ParameterGroupConfiguration(parameters)], threadPool: threadPool)
    }

    private static func entry<Rule: UpdateRule>(_ rule: Rule.Type, _ typeName: String, reference: String) -> OptimizerInfo {
        OptimizerInfo(
            name: Rule.name, typeName: typeName, reference: reference,
            defaults: (try? Rule.Hyperparameters([:]))?.dictionary ?? [:], isWrapper: false
        ) { configuration, groups, pool throws(OptimError) in
            if configuration.base != nil {
                throw .invalidConfiguration("\(Rule.name) does not wrap another optimizer; remove 'base'")
            }
            var built: [ParameterGroup<Rule.Hyperparameters>] = []
            for group in groups {
                let values = configuration.hyperparameters.merging(group.overrides) { $1 }
                built.append(ParameterGroup(group.parameters, try Rule.Hyperparameters(values)))
            }
            return try GradientOptimizer<Rule>(groups: built, threadPool: pool)
        }
    }

    private static func makeLookahead(_ configuration: OptimizerConfiguration, _ groups: [ParameterGroupConfiguration],
                                      _ pool: ThreadPool) throws(OptimError) -> any Optimizer {
        guard let baseConfiguration = configuration.base else {
            throw .invalidConfiguration("lookahead needs a base optimizer to wrap")
        }
        var reader = HyperparameterReader(configuration.hyperparameters, optimizer: Lookahead.name)
        let k = try reader.number("k", default: 5)
        let alpha = try reader.number("alpha", default: 0.5)
        try reader.finish()
        guard k.isFinite, k == k.rounded(), k >= 1, k <= Double(Int32.max) else {
            throw .invalidHyperparameter(optimizer: Lookahead.name, name: "k", value: HyperparameterValue.format(k), expected: "an integer >= 1")
        }
        let base = try makeOptimizer(baseConfiguration, groups: groups, threadPool: pool)
        return try Lookahead(base, k: Int(k), alpha: alpha, threadPool: pool)
    }
}
