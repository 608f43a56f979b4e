/// How to build an optimizer by name: the registry name, its hyperparameters by PyTorch name
/// (omitted ones take the reference defaults), and for ``Lookahead`` the wrapped optimizer.
public struct OptimizerConfiguration: Sendable, Equatable {
    /// The optimizer's registry name (`adamw`, `lookahead`, …).
    public var name: String
    /// The hyperparameters to set, by PyTorch name; omitted ones take the reference defaults.
    public var hyperparameters: HyperparameterDictionary
    private var wrapped: [OptimizerConfiguration]

    /// The optimizer a wrapper (``Lookahead``) wraps.
    public var base: OptimizerConfiguration? {
        get { wrapped.first }
        set { wrapped = newValue.map { [$0] } ?? [] }
    }

    /// The optimizer `name` with `hyperparameters`, and for a wrapper the optimizer `base` it wraps.
    public init(name: String, hyperparameters: HyperparameterDictionary = [:], base: OptimizerConfiguration? = nil) {
        self.name = name
        self.hyperparameters = hyperparameters
        self.wrapped = base.map { [$0] } ?? []
    }

    /// The configuration of a typed optimizer: its registry name and every one of
    /// `hyperparameters` by PyTorch name — `OptimizerConfiguration(AdamW.self, hyperparameters:
    /// .init(learningRate: 3e-3))` is `OptimizerConfiguration(name: "adamw", hyperparameters:
    /// ["lr": 3e-3, "betas": [0.9, 0.999], …])`.
    public init<O: TypedOptimizer>(_ optimizer: O.Type, hyperparameters: O.Hyperparameters) {
        self.init(name: O.name, hyperparameters: hyperparameters.dictionary)
    }
}

/// One parameter group for the registry: its parameters and the hyperparameters it overrides, by
/// PyTorch name — the string-keyed twin of ``ParameterGroup``.
public struct ParameterGroupConfiguration: Sendable {
    /// The group's parameters.
    public var parameters: [Parameter]
    /// The hyperparameters the group sets, by PyTorch name, over the configuration's.
    public var overrides: HyperparameterDictionary

    /// A group of `parameters` overriding `overrides`.
    public init(_ parameters: [Parameter], overrides: HyperparameterDictionary = [:]) {
        self.parameters = parameters
        self.overrides = overrides
    }
}

/// Every optimizer of the library, by name.
///
/// Adding an optimizer means one file under `Optimizers/` that declares its ``OptimizerInfo``,
/// and one line for that entry in the optimizer list (`Registry/OptimizerList.swift`, which the
/// kernel modules compile too); CONTRIBUTING.md has the whole recipe.
public enum OptimizerRegistry {
    /// Every optimizer's entry, in registry order.
    public static let all: [OptimizerInfo] = OptimizerListEntries.all

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
}
