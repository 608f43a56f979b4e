import Optim
import OptimDistributed
import Testing

/// One spelling per idea: betas as a struct with synthesized `Equatable` hyperparameters, defaults
/// written once, typed and string-keyed groups accepted by the same helpers, and scoped access to a
/// parameter's storage.
@Suite struct ConsistentAPITests {
    static func makeParameters() throws -> [Parameter] {
        [try Parameter(name: "layers.0.weight", shape: [3, 2], values: [0.5, -1, 2, 0.25, -0.75, 1.5]),
         try Parameter(name: "layers.0.bias", shape: [3], values: [0.1, -0.2, 0.3]),
         try Parameter(name: "layers.1.weight", shape: [2, 3], values: [1, 2, 3, -1, -2, -3])]
    }

    /// The message of the error `body` throws, or a recorded issue.
    func message(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        do {
            try body()
            Issue.record("no error", sourceLocation: sourceLocation)
            return ""
        } catch {
            return "\(error)"
        }
    }

    // MARK: Betas

    @Test func betasCompareByValueAndPrintAsPyTorchDoes() {
        #expect(Betas(0.9, 0.999) == Betas(0.9, 0.999))
        #expect(Betas(0.9, 0.999) != Betas(0.9, 0.99))
        #expect(Betas(0.9, 0.999) != Betas(0.999, 0.9))
        #expect(Set([Betas(0.9, 0.999), Betas(0.9, 0.999), Betas(0.5, 0.5)]).count == 2)
        #expect(Betas(0.9, 0.999).description == "(0.9, 0.999)")
        var betas = Betas(0.9, 0.999)
        betas.second = 0.95
        #expect(betas == Betas(0.9, 0.95) && betas.first == 0.9)
    }

    @Test func betasOutOfRangeAreRefusedByName() throws {
        let w = try Self.makeParameters()
        let first = message { _ = try Adam(w, hyperparameters: .init(betas: .init(1, 0.999))) }
        #expect(first == "adam: invalid betas.0 (betas[0]) = 1; expected a number in [0, 1)")
        let second = message { _ = try AdamW(w, hyperparameters: .init(betas: .init(0.9, -0.5))) }
        #expect(second == "adamw: invalid betas.1 (betas[1]) = -0.5; expected a number in [0, 1)")
        let adopt = message { _ = try ADOPT(w, hyperparameters: .init(betas: .init(0.9, 1.5))) }
        #expect(adopt.contains("betas.1") && adopt.contains("[0, 1)"))
        // Lion's references allow 1, not more.
        _ = try Lion(w, hyperparameters: .init(betas: .init(1, 1)))
        let lion = message { _ = try DecoupledLionW(w, hyperparameters: .init(betas: .init(1.25, 0.99))) }
        #expect(lion == "decoupled_lionw: invalid betas.0 (betas[0]) = 1.25; expected a number in [0, 1]")
    }

    @Test func betasAreTheListOfTwoNumbersInDictionaries() throws {
        let adamw = try AdamW.Hyperparameters(["betas": .numbers([0.8, 0.95])])
        #expect(adamw.betas == Betas(0.8, 0.95))
        #expect(adamw.dictionary["betas"] == .numbers([0.8, 0.95]))
        #expect(try Lion.Hyperparameters(["betas": .numbers([0.95, 0.98])]).betas == Betas(0.95, 0.98))
        #expect(try ADOPT.Hyperparameters(["betas": .numbers([0.9, 0.999])]).betas == Betas(0.9, 0.999))
        let wrongLength = message { _ = try Adam.Hyperparameters(["betas": .numbers([0.9, 0.99, 0.999])]) }
        #expect(wrongLength.contains("betas") && wrongLength.contains("a list of two numbers"))
    }

    // MARK: Synthesized Equatable, defaults written once

    /// Field by field: two values differing in one field are unequal, and the dictionary round
    /// trip gives back an equal value.
    func expectEquatable<H: OptimizerHyperparameters>(_ base: H, _ changes: [(String, (inout H) -> Void)],
                                                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(try H(base.dictionary) == base, sourceLocation: sourceLocation)
        for (field, change) in changes {
            var changed = base
            change(&changed)
            #expect(changed != base, "changing \(field) left the value equal", sourceLocation: sourceLocation)
            #expect(try H(changed.dictionary) == changed, "\(field) does not survive the dictionary", sourceLocation: sourceLocation)
        }
    }

    @Test func hyperparametersAreEqualFieldByField() throws {
        try expectEquatable(Adam.Hyperparameters(), [
            ("learningRate", { $0.learningRate = 0.01 }), ("betas.first", { $0.betas.first = 0.8 }), ("betas.second", { $0.betas.second = 0.99 }),
            ("eps", { $0.eps = 1e-6 }), ("weightDecay", { $0.weightDecay = 0.1 }), ("amsgrad", { $0.amsgrad = true }), ("maximize", { $0.maximize = true }),
        ])
        try expectEquatable(AdamW.Hyperparameters(), [("betas", { $0.betas = .init(0.9, 0.95) }), ("weightDecay", { $0.weightDecay = 0 })])
        try expectEquatable(DecoupledAdamW.Hyperparameters(), [("betas", { $0.betas = .init(0.95, 0.95) }), ("amsgrad", { $0.amsgrad = true })])
        try expectEquatable(Lion.Hyperparameters(), [("betas.first", { $0.betas.first = 0.95 }), ("weightDecay", { $0.weightDecay = 0.1 })])
        try expectEquatable(DecoupledLionW.Hyperparameters(), [("betas.second", { $0.betas.second = 0.98 }), ("learningRate", { $0.learningRate = 1 })])
        try expectEquatable(ADOPT.Hyperparameters(), [
            ("betas", { $0.betas = .init(0.9, 0.999) }), ("clipExponent", { $0.clipExponent = nil }), ("decouple", { $0.decouple = true }),
        ])
        // maximize, which DecoupledAdamW does not offer, no longer hides behind the dictionary.
        var ascending = DecoupledAdamW.Hyperparameters()
        ascending.maximize = true
        #expect(ascending != DecoupledAdamW.Hyperparameters())
    }

    @Test func theMemberwiseDefaultsAreTheDictionaryDefaults() throws {
        #expect(try Adam.Hyperparameters([:]) == Adam.Hyperparameters())
        #expect(try AdamW.Hyperparameters([:]) == AdamW.Hyperparameters())
        #expect(try DecoupledAdamW.Hyperparameters([:]) == DecoupledAdamW.Hyperparameters())
        #expect(try Lion.Hyperparameters([:]) == Lion.Hyperparameters())
        #expect(try DecoupledLionW.Hyperparameters([:]) == DecoupledLionW.Hyperparameters())
        #expect(try ADOPT.Hyperparameters([:]) == ADOPT.Hyperparameters())
        #expect(try SGD.Hyperparameters([:]) == SGD.Hyperparameters())
        // Each variant's own betas and decay.
        #expect(Adam.Hyperparameters().betas == Betas(0.9, 0.999) && Adam.Hyperparameters().weightDecay == 0)
        #expect(AdamW.Hyperparameters().weightDecay == 1e-2)
        #expect(DecoupledAdamW.Hyperparameters().betas == Betas(0.9, 0.95) && DecoupledAdamW.Hyperparameters().weightDecay == 1e-5)
        #expect(ADOPT.Hyperparameters().betas == Betas(0.9, 0.9999))
    }

    @Test func anOptimizerWithoutHyperparametersTakesTheReferenceDefaults() throws {
        func check<Rule: UpdateRule>(_ optimizer: GradientOptimizer<Rule>, _ explicit: GradientOptimizer<Rule>) throws {
            #expect(try optimizer.hyperparameters(group: 0) == explicit.hyperparameters(group: 0), "\(Rule.name)")
            #expect(try optimizer.hyperparameters(group: 0) == OptimizerRegistry.info(named: Rule.name).defaults, "\(Rule.name)")
        }
        try check(Adam(try Self.makeParameters()), Adam(try Self.makeParameters(), hyperparameters: .init()))
        try check(AdamW(try Self.makeParameters()), AdamW(try Self.makeParameters(), hyperparameters: .init()))
        try check(DecoupledAdamW(try Self.makeParameters()), DecoupledAdamW(try Self.makeParameters(), hyperparameters: .init()))
        try check(Lion(try Self.makeParameters()), Lion(try Self.makeParameters(), hyperparameters: .init()))
        try check(DecoupledLionW(try Self.makeParameters()), DecoupledLionW(try Self.makeParameters(), hyperparameters: .init()))
        try check(ADOPT(try Self.makeParameters()), ADOPT(try Self.makeParameters(), hyperparameters: .init()))
        try check(SGD(try Self.makeParameters()), SGD(try Self.makeParameters(), hyperparameters: .init()))
        #expect(try AdamW(Self.makeParameters()).groups[0].hyperparameters == AdamW.Hyperparameters())
    }

    @Test func lookaheadsDefaultsAreWrittenOnce() throws {
        let lookahead = try Lookahead(SGD(try Self.makeParameters()))
        #expect(lookahead.k == Lookahead.defaultK && lookahead.alpha == Lookahead.defaultAlpha)
        #expect(Lookahead.defaultK == 5 && Lookahead.defaultAlpha == 0.5)
        #expect(try OptimizerRegistry.info(named: "lookahead").defaults == ["k": .number(5), "alpha": .number(0.5)])
        let built = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "lookahead", base: .init(name: "sgd")), parameters: try Self.makeParameters())
        #expect((built as? Lookahead)?.k == 5 && (built as? Lookahead)?.alpha == 0.5)
    }

    // MARK: Typed and string-keyed groups

    /// The groups of two optimizers: parameter names and hyperparameters by PyTorch name.
    func expectSameGroups(_ a: any Optimizer, _ b: any Optimizer, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(a.name == b.name, sourceLocation: sourceLocation)
        #expect(a.groupCount == b.groupCount, sourceLocation: sourceLocation)
        for group in 0..<min(a.groupCount, b.groupCount) {
            #expect(try a.parameters(group: group).map(\.name) == b.parameters(group: group).map(\.name), sourceLocation: sourceLocation)
            #expect(try a.hyperparameters(group: group) == b.hyperparameters(group: group), sourceLocation: sourceLocation)
        }
    }

    @Test func typedConfigurationHoldsEveryHyperparameter() throws {
        let hyperparameters = AdamW.Hyperparameters(learningRate: 3e-3, betas: .init(0.9, 0.95), weightDecay: 0.1)
        let configuration = OptimizerConfiguration(AdamW.self, hyperparameters: hyperparameters)
        #expect(configuration.name == "adamw" && configuration.base == nil)
        #expect(configuration.hyperparameters == hyperparameters.dictionary)
        #expect(try AdamW.Hyperparameters(configuration.hyperparameters) == hyperparameters)
        #expect(OptimizerConfiguration(Prodigy.self, hyperparameters: .init()).name == "prodigy")
        #expect(AdamW.name == "adamw" && Prodigy.name == "prodigy")
    }

    @Test func typedWeightDecayGroupsEqualTheConfigurationOnes() throws {
        let hyperparameters = AdamW.Hyperparameters(learningRate: 0.01, weightDecay: 0.1)
        let typed = try ParameterGrouping.weightDecayGroups(try Self.makeParameters(), hyperparameters: hyperparameters)
        #expect(typed.map { $0.parameters.map(\.name) } == [["layers.0.weight", "layers.1.weight"], ["layers.0.bias"]])
        #expect(typed[0].hyperparameters == hyperparameters)
        var exempt = hyperparameters
        exempt.weightDecay = 0
        #expect(typed[1].hyperparameters == exempt)

        let configuration = OptimizerConfiguration(AdamW.self, hyperparameters: hyperparameters)
        let parameters = try Self.makeParameters()
        let byName = try OptimizerRegistry.makeOptimizer(configuration, groups: ParameterGrouping.weightDecayGroups(parameters, for: configuration))
        try expectSameGroups(try AdamW(groups: ParameterGrouping.weightDecayGroups(parameters, hyperparameters: hyperparameters)), byName)

        // Without a weight decay: one group, as for a configuration.
        let rprop = try ParameterGrouping.weightDecayGroups(parameters, hyperparameters: Rprop.Hyperparameters())
        #expect(rprop.count == 1 && rprop[0].parameters.count == 3 && rprop[0].hyperparameters == Rprop.Hyperparameters())
    }

    @Test func typedNamePatternAndLayerwiseGroupsEqualTheConfigurationOnes() throws {
        let parameters = try Self.makeParameters()
        let rules: [(pattern: String, overrides: HyperparameterDictionary)] = [("*.bias", ["weight_decay": .number(0)]), ("layers.1.*", ["lr": .number(0.5)])]
        let hyperparameters = SGD.Hyperparameters(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
        let typed = try ParameterGrouping.byNamePattern(parameters, hyperparameters: hyperparameters, rules: rules)
        #expect(typed.map { $0.parameters.map(\.name) } == [["layers.0.bias"], ["layers.1.weight"], ["layers.0.weight"]])
        #expect(typed.map(\.hyperparameters.weightDecay) == [0, 1e-4, 1e-4])
        #expect(typed.map(\.hyperparameters.learningRate) == [0.1, 0.5, 0.1])
        let configuration = OptimizerConfiguration(SGD.self, hyperparameters: hyperparameters)
        try expectSameGroups(try SGD(groups: typed),
                             try OptimizerRegistry.makeOptimizer(configuration, groups: ParameterGrouping.byNamePattern(parameters, rules: rules)))
        // An override the hyperparameters don't have is refused, as the registry refuses it.
        #expect(throws: OptimError.self) {
            try ParameterGrouping.byNamePattern(parameters, hyperparameters: hyperparameters, rules: [("*", ["betas": .numbers([0.9, 0.99])])])
        }

        let lion = Lion.Hyperparameters(learningRate: 1e-3)
        let layer: (Parameter) -> Int? = { $0.name.hasPrefix("layers.0") ? 0 : 1 }
        let layerwise = try ParameterGrouping.layerwiseLearningRateDecay(parameters, hyperparameters: lion, decay: 0.5, layers: 1, layer: layer)
        #expect(layerwise.map(\.hyperparameters.learningRate) == [5e-4, 1e-3])
        let lionConfiguration = OptimizerConfiguration(Lion.self, hyperparameters: lion)
        try expectSameGroups(try Lion(groups: layerwise), try OptimizerRegistry.makeOptimizer(
            lionConfiguration, groups: ParameterGrouping.layerwiseLearningRateDecay(parameters, learningRate: 1e-3, decay: 0.5, layers: 1, layer: layer)))
    }

    @Test func aStringKeyedGroupBecomesATypedOne() throws {
        let w = try Self.makeParameters()
        let group = try ParameterGroup<Adam.Hyperparameters>(ParameterGroupConfiguration(w, overrides: ["lr": .number(0.5)]), over: ["eps": .number(1e-6)])
        #expect(group.parameters == w)
        #expect(group.hyperparameters == Adam.Hyperparameters(learningRate: 0.5, eps: 1e-6))
        let overTyped = try ParameterGroup(ParameterGroupConfiguration(w, overrides: ["amsgrad": .bool(true)]), over: Adam.Hyperparameters(learningRate: 0.1))
        #expect(overTyped.hyperparameters == Adam.Hyperparameters(learningRate: 0.1, amsgrad: true))
        #expect(throws: OptimError.self) { try ParameterGroup<SGD.Hyperparameters>(ParameterGroupConfiguration(w, overrides: ["betas": .numbers([0.9, 0.99])])) }
    }

    /// Two ranks step a sharded AdamW built one way or the other; the parameters match bit for bit.
    @Test func typedShardedOptimizerEqualsTheConfigurationOne() throws {
        let hyperparameters = AdamW.Hyperparameters(learningRate: 0.05, betas: .init(0.8, 0.9), weightDecay: 0.1)
        func run(typed: Bool) throws -> [[[Float]]] {
            let group = try LocalCommunicatorGroup(size: 2, timeout: 60)
            return try group.run { communicator in
                let parameters = try Self.makeParameters()
                let optimizer = typed
                    ? try ShardedOptimizer(AdamW.self, groups: ParameterGrouping.weightDecayGroups(parameters, hyperparameters: hyperparameters),
                                           communicator: communicator)
                    : try ShardedOptimizer(OptimizerConfiguration(AdamW.self, hyperparameters: hyperparameters),
                                           groups: ParameterGrouping.weightDecayGroups(parameters, weightDecay: 0.1), communicator: communicator)
                guard optimizer.configuration.name == "adamw",
                      try optimizer.shardOptimizer.hyperparameters(group: 1)["weight_decay"] == .number(0) else { return [] }
                for step in 0..<4 {
                    for parameter in parameters {
                        try parameter.setGradient(parameter.valueArray.enumerated().map { Float($0.offset + step) * 0.1 - $0.element })
                    }
                    try optimizer.step()
                }
                return parameters.map(\.valueArray)
            }.map { try $0.get() }
        }
        let typed = try run(typed: true), byName = try run(typed: false)
        #expect(typed.count == 2 && typed.allSatisfy { $0.count == 3 })
        #expect(typed.map { $0.map { $0.map(\.bitPattern) } } == byName.map { $0.map { $0.map(\.bitPattern) } })
        #expect(typed[0] != (try Self.makeParameters()).map(\.valueArray))
    }

    // MARK: Scoped access to values and gradient

    struct Refusal: Error, Equatable { var code: Int }

    @Test func scopedValuesReadAndWriteInPlace() throws {
        let p = try Parameter(name: "w", shape: [2, 2], values: [1, 2, 3, 4])
        #expect(p.withUnsafeValues { Array($0) } == [1, 2, 3, 4])
        #expect(p.withUnsafeValues { $0.count } == 4)
        p.withUnsafeValues { values in
            for i in values.indices { values[i] = values[i] * 10 + Float(i) }
        }
        #expect(p.valueArray == [10, 21, 32, 43])
        #expect(p.values[3] == 43)  // the raw buffer is the same storage
        // The body's error comes out with its type.
        do throws(Refusal) {
            try p.withUnsafeValues { _ throws(Refusal) -> Void in throw Refusal(code: 7) }
            Issue.record("no error")
        } catch {
            #expect(error == Refusal(code: 7))
        }
        #expect(p.valueArray == [10, 21, 32, 43])
    }

    @Test func scopedGradientIsNilWithoutOneAndWritesTheOneTheStepUses() throws {
        let p = try Parameter(name: "w", shape: [3], values: [1, 2, 3])
        var called = false
        let none: Void? = p.withUnsafeGradient { _ in called = true }
        #expect(none == nil)
        #expect(!called)
        try p.setGradient([0.5, -1, 2])
        #expect(p.withUnsafeGradient { Array($0) } == [0.5, -1, 2])
        p.withUnsafeGradient { gradient in gradient[1] = 4 }
        #expect(p.gradientArray == [0.5, 4, 2])
        let sgd = try SGD([p], hyperparameters: .init(learningRate: 1))
        try sgd.step()
        #expect(p.valueArray == [0.5, -2, 1])
        #expect(throws: Refusal.self) { try p.withUnsafeGradient { _ -> Void in throw Refusal(code: 1) } }
        p.zeroGradient()
        #expect(p.withUnsafeGradient { $0.count } == nil)
    }
}
