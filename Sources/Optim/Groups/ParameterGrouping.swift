import Foundation

/// Builds parameter groups by rule, for any optimizer of the registry: the usual recipes of
/// transformer and CNN training, each returning groups whose overrides sit on top of the
/// optimizer's configuration — or, given typed hyperparameters (`hyperparameters:`), typed
/// ``ParameterGroup``s for the optimizer's own `init(groups:)`.
public enum ParameterGrouping {
    /// True for parameters that conventionally take no weight decay: every parameter with fewer
    /// than two dimensions (biases, norm scales and shifts, scalars), and any whose name marks it
    /// as a bias or a normalisation parameter.
    public static func isNoDecayByConvention(_ parameter: Parameter) -> Bool {
        if parameter.shape.count < 2 { return true }
        let name = parameter.name.lowercased()
        return name.hasSuffix("bias") || ["norm", "ln_", "bn", "layernorm", "embedding_norm"].contains { name.contains($0) }
    }

    /// Two groups: the parameters that decay (`weight_decay` = `weightDecay`), and those
    /// `noDecay` picks (`weight_decay` = 0). Empty groups are left out; order is preserved.
    public static func weightDecayGroups(_ parameters: [Parameter], weightDecay: Double,
                                         noDecay: (Parameter) -> Bool = isNoDecayByConvention) -> [ParameterGroupConfiguration] {
        let decaying = parameters.filter { !noDecay($0) }, exempt = parameters.filter(noDecay)
        return [
            ParameterGroupConfiguration(decaying, overrides: ["weight_decay": .number(weightDecay)]),
            ParameterGroupConfiguration(exempt, overrides: ["weight_decay": .number(0)]),
        ].filter { !$0.parameters.isEmpty }
    }

    /// Whether the optimizer a configuration builds takes a `weight_decay` (for a wrapper such as
    /// Lookahead, the wrapped optimizer's); Rprop, for one, does not.
    public static func decaysWeights(_ configuration: OptimizerConfiguration) throws(OptimError) -> Bool {
        try OptimizerRegistry.info(named: (configuration.base ?? configuration).name).defaults["weight_decay"] != nil
    }

    /// The weight-decay groups for an optimizer: the parameters that decay keep the
    /// configuration's `weight_decay` (no override), those `noDecay` picks get `weight_decay` 0.
    /// An optimizer without weight decay (Rprop; for a wrapper, the wrapped one's) gets one group
    /// of all the parameters. Empty groups are left out; order is preserved.
    public static func weightDecayGroups(_ parameters: [Parameter], for configuration: OptimizerConfiguration,
                                         noDecay: (Parameter) -> Bool = isNoDecayByConvention) throws(OptimError) -> [ParameterGroupConfiguration] {
        weightDecayGroups(parameters, decays: try decaysWeights(configuration), noDecay: noDecay)
    }

    /// The weight-decay groups for typed hyperparameters — ``weightDecayGroups(_:for:noDecay:)``
    /// for an optimizer written as a Swift type: the parameters that decay get `hyperparameters`,
    /// those `noDecay` picks the same with `weight_decay` 0; hyperparameters without a weight
    /// decay (Rprop's) give one group of all the parameters. Empty groups are left out; order is
    /// preserved.
    ///
    /// ```swift
    /// let optimizer = try AdamW(groups: ParameterGrouping.weightDecayGroups(parameters, hyperparameters: .init(weightDecay: 0.1)))
    /// ```
    public static func weightDecayGroups<Hyperparameters: OptimizerHyperparameters>(
        _ parameters: [Parameter], hyperparameters: Hyperparameters, noDecay: (Parameter) -> Bool = isNoDecayByConvention
    ) throws(OptimError) -> [ParameterGroup<Hyperparameters>] {
        let groups = weightDecayGroups(parameters, decays: hyperparameters.dictionary["weight_decay"] != nil, noDecay: noDecay)
        return try ParameterGroup.groups(groups, over: hyperparameters)
    }

    /// The groups of ``weightDecayGroups(_:for:noDecay:)``, for an optimizer that `decays` weights or not.
    static func weightDecayGroups(_ parameters: [Parameter], decays: Bool, noDecay: (Parameter) -> Bool) -> [ParameterGroupConfiguration] {
        guard decays else { return [ParameterGroupConfiguration(parameters)] }
        return [
            ParameterGroupConfiguration(parameters.filter { !noDecay($0) }),
            ParameterGroupConfiguration(parameters.filter(noDecay), overrides: ["weight_decay": .number(0)]),
        ].filter { !$0.parameters.isEmpty }
    }

    /// One group per rule, in rule order, holding the parameters whose name matches the rule's
    /// glob pattern (`*` any run of characters, `?` one character) and no earlier rule; the
    /// parameters no rule matches form a last group without overrides.
    public static func byNamePattern(_ parameters: [Parameter], rules: [(pattern: String, overrides: HyperparameterDictionary)]) -> [ParameterGroupConfiguration] {
        var groups = rules.map { ParameterGroupConfiguration([], overrides: $0.overrides) }
        var rest: [Parameter] = []
        for parameter in parameters {
            if let rule = rules.firstIndex(where: { globMatches($0.pattern, parameter.name) }) {
                groups[rule].parameters.append(parameter)
            } else {
                rest.append(parameter)
            }
        }
        groups.append(ParameterGroupConfiguration(rest))
        return groups.filter { !$0.parameters.isEmpty }
    }

    /// ``byNamePattern(_:rules:)`` for typed hyperparameters: each rule's group gets
    /// `hyperparameters` with the rule's overrides (by PyTorch name) on top, the last group
    /// `hyperparameters` unchanged. Throws for an override the hyperparameters don't have.
    public static func byNamePattern<Hyperparameters: OptimizerHyperparameters>(
        _ parameters: [Parameter], hyperparameters: Hyperparameters, rules: [(pattern: String, overrides: HyperparameterDictionary)]
    ) throws(OptimError) -> [ParameterGroup<Hyperparameters>] {
        try ParameterGroup.groups(byNamePattern(parameters, rules: rules), over: hyperparameters)
    }

    /// Layer-wise learning-rate decay (as in BEiT/ELECTRA fine-tuning): a parameter of layer `l`
    /// out of `layers` gets `lr · decay^(layers − l)`, so the last layer learns at `lr` and earlier
    /// ones more slowly. `layer` maps a parameter to its layer (0 for embeddings; parameters
    /// it maps to `nil` count as the last layer). One group per layer present.
    public static func layerwiseLearningRateDecay(_ parameters: [Parameter], learningRate: Double, decay: Double, layers: Int,
                                                  layer: (Parameter) -> Int?) -> [ParameterGroupConfiguration] {
        var byLayer: [Int: [Parameter]] = [:]
        for parameter in parameters { byLayer[min(max(layer(parameter) ?? layers, 0), layers), default: []].append(parameter) }
        return byLayer.keys.sorted().map { index in
            ParameterGroupConfiguration(byLayer[index]!, overrides: ["lr": .number(learningRate * pow(decay, Double(layers - index)))])
        }
    }

    /// ``layerwiseLearningRateDecay(_:learningRate:decay:layers:layer:)`` for typed
    /// hyperparameters: each layer's group gets `hyperparameters` with the learning rate
    /// `hyperparameters.learningRate · decay^(layers − l)`.
    public static func layerwiseLearningRateDecay<Hyperparameters: OptimizerHyperparameters>(
        _ parameters: [Parameter], hyperparameters: Hyperparameters, decay: Double, layers: Int, layer: (Parameter) -> Int?
    ) throws(OptimError) -> [ParameterGroup<Hyperparameters>] {
        let groups = layerwiseLearningRateDecay(parameters, learningRate: hyperparameters.learningRate, decay: decay, layers: layers, layer: layer)
        return try ParameterGroup.groups(groups, over: hyperparameters)
    }

    /// Whether `name` matches the glob `pattern` (`*`, `?`; everything else literal).
    public static func globMatches(_ pattern: String, _ name: String) -> Bool {
        let p = Array(pattern), s = Array(name)
        var (i, j) = (0, 0)
        var star = -1, mark = 0
        while j < s.count {
            if i < p.count, p[i] == "?" || p[i] == s[j] {
                i += 1
                j += 1
            } else if i < p.count, p[i] == "*" {
                star = i
                mark = j
                i += 1
            } else if star >= 0 {
                i = star + 1
                mark += 1
                j = mark
            } else {
                return false
            }
        }
        while i < p.count, p[i] == "*" { i += 1 }
        return i == p.count
    }
}
