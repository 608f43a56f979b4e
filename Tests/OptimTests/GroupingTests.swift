import Optim
import Testing

@Suite struct GroupingTests {
    func parameters() throws -> [Parameter] {
        try [("embed.weight", [10, 4]), ("layers.0.attn.weight", [4, 4]), ("layers.0.attn.bias", [4]), ("layers.0.norm.weight", [4]),
             ("layers.1.attn.weight", [4, 4]), ("layers.1.ln_f.scale", [4, 1]), ("head.weight", [3, 4]), ("temperature", [])]
            .map { try Parameter(name: $0.0, shape: $0.1) }
    }

    @Test func noDecayForBiasesNormsAndLowRankParameters() throws {
        let groups = ParameterGrouping.weightDecayGroups(try parameters(), weightDecay: 0.1)
        #expect(groups.count == 2)
        #expect(groups[0].parameters.map(\.name) == ["embed.weight", "layers.0.attn.weight", "layers.1.attn.weight", "head.weight"])
        #expect(groups[0].overrides == ["weight_decay": .number(0.1)])
        #expect(groups[1].parameters.map(\.name) == ["layers.0.attn.bias", "layers.0.norm.weight", "layers.1.ln_f.scale", "temperature"])
        #expect(groups[1].overrides == ["weight_decay": .number(0)])
        // The groups build any optimizer of the registry.
        let optimizer = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw"), groups: groups)
        #expect(try optimizer.hyperparameters(group: 1)["weight_decay"] == .number(0))
    }

    @Test func namePatternsFirstMatchWins() throws {
        let groups = ParameterGrouping.byNamePattern(try parameters(), rules: [
            ("head.*", ["lr": .number(1e-2)]), ("*.attn.*", ["lr": .number(1e-4)]), ("layers.0.*", ["lr": .number(0.5)]),
        ])
        #expect(groups.map { $0.parameters.map(\.name) } == [
            ["head.weight"], ["layers.0.attn.weight", "layers.0.attn.bias", "layers.1.attn.weight"],
            ["layers.0.norm.weight"], ["embed.weight", "layers.1.ln_f.scale", "temperature"],
        ])
        #expect(groups[3].overrides.isEmpty)
    }

    @Test func layerwiseDecay() throws {
        let groups = ParameterGrouping.layerwiseLearningRateDecay(try parameters(), learningRate: 1, decay: 0.5, layers: 2) { parameter in
            if parameter.name.hasPrefix("embed") { return 0 }
            if parameter.name.hasPrefix("layers.") { return Int(parameter.name.split(separator: ".")[1])! + 1 }
            return nil
        }
        #expect(groups.map { $0.overrides["lr"] } == [.number(0.25), .number(0.5), .number(1)])
        #expect(groups[0].parameters.map(\.name) == ["embed.weight"])
        #expect(groups[2].parameters.map(\.name) == ["layers.1.attn.weight", "layers.1.ln_f.scale", "head.weight", "temperature"])
    }

    @Test func globs() {
        #expect(ParameterGrouping.globMatches("*.bias", "fc1.bias"))
        #expect(!ParameterGrouping.globMatches("*.bias", "fc1.bias2"))
        #expect(ParameterGrouping.globMatches("layer?.*", "layer3.weight"))
        #expect(ParameterGrouping.globMatches("*", ""))
        #expect(!ParameterGrouping.globMatches("a*b", "acb.c"))
        #expect(ParameterGrouping.globMatches("a*b*c", "axxbyyc"))
    }
}
