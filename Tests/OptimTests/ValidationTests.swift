import Optim
import Testing

/// Every invalid input is a thrown ``OptimError`` whose message names the value and the range.
@Suite struct ValidationTests {
    func parameter(_ name: String = "w") throws -> Parameter { try Parameter(name: name, shape: [2], values: [1, 2]) }

    func expectInvalid(_ name: String, _ hyperparameters: HyperparameterDictionary, mentions: [String],
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let configuration = defaultConfiguration(name, hyperparameters)
        let w = try parameter()
        do {
            _ = try OptimizerRegistry.makeOptimizer(configuration, parameters: [w])
            Issue.record("\(name) accepted \(hyperparameters)", sourceLocation: sourceLocation)
        } catch {
            for text in mentions {
                #expect("\(error)".contains(text), "'\(error)' does not mention '\(text)'", sourceLocation: sourceLocation)
            }
        }
    }

    static let withLearningRate = vectorOptimizers.filter { $0 != "lookahead" }

    @Test(arguments: withLearningRate)
    func learningRateMustBePositiveAndFinite(name: String) throws {
        for bad in [0, -1e-3, .nan, .infinity] {
            try expectInvalid(name, ["lr": .number(bad)], mentions: ["lr", "> 0"])
        }
    }

    @Test(arguments: OptimizerRegistry.all.filter { $0.defaults["weight_decay"] != nil && !$0.requiresMatrices }.map(\.name))
    func weightDecayMustBeNonNegativeAndFinite(name: String) throws {
        for bad in [-1e-4, .nan, .infinity] {
            try expectInvalid(name, ["weight_decay": .number(bad)], mentions: ["weight_decay", ">= 0"])
        }
    }

    @Test(arguments: ["adam", "adamw", "decoupled_adamw", "adopt"])
    func betasMustBeInTheUnitInterval(name: String) throws {
        try expectInvalid(name, ["betas": .numbers([-0.1, 0.9])], mentions: ["betas[0]", "[0, 1)"])
        try expectInvalid(name, ["betas": .numbers([0.9, 1])], mentions: ["betas[1]", "[0, 1)"])
        try expectInvalid(name, ["betas": .numbers([0.9])], mentions: ["betas", "two numbers"])
    }

    @Test(arguments: ["lion", "decoupled_lionw"])
    func lionBetasMayReachOneButNotBeyond(name: String) throws {
        let w = try parameter()
        _ = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: name, hyperparameters: ["betas": .numbers([1, 1])]), parameters: [w])
        try expectInvalid(name, ["betas": .numbers([1.01, 0.9])], mentions: ["betas[0]", "[0, 1]"])
        try expectInvalid(name, ["betas": .numbers([0.9, -0.5])], mentions: ["betas[1]", "[0, 1]"])
    }

    @Test(arguments: ["adam", "adamw", "decoupled_adamw", "adopt"])
    func epsilonMustBePositive(name: String) throws {
        for bad in [0, -1e-8, .nan] { try expectInvalid(name, ["eps": .number(bad)], mentions: ["eps", "> 0"]) }
    }

    @Test func sgdMomentumAndNesterovRules() throws {
        try expectInvalid("sgd", ["momentum": .number(-0.1)], mentions: ["momentum", ">= 0"])
        try expectInvalid("sgd", ["nesterov": .bool(true)], mentions: ["nesterov", "momentum > 0"])
        try expectInvalid("sgd", ["nesterov": .bool(true), "momentum": .number(0.9), "dampening": .number(0.1)], mentions: ["nesterov", "dampening = 0"])
    }

    @Test func adoptClipExponentMustBeNonNegative() throws {
        try expectInvalid("adopt", ["clip_exponent": .number(-1)], mentions: ["clip_exponent", ">= 0"])
    }

    @Test func lookaheadKAndAlpha() throws {
        try expectInvalid("lookahead", ["k": .number(0)], mentions: ["k", ">= 1"])
        try expectInvalid("lookahead", ["k": .number(2.5)], mentions: ["k", "integer"])
        try expectInvalid("lookahead", ["alpha": .number(1.5)], mentions: ["alpha", "[0, 1]"])
        try expectInvalid("lookahead", ["alpha": .number(-0.1)], mentions: ["alpha", "[0, 1]"])
        #expect(throws: OptimError.self) { try Lookahead(SGD([try parameter()]), k: 0) }
        #expect(throws: OptimError.invalidConfiguration("lookahead needs a base optimizer to wrap")) {
            try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "lookahead"), parameters: [try parameter()])
        }
    }

    @Test func unknownNamesAndWrongTypes() throws {
        try expectInvalid("adam", ["momentum": .number(0.9)], mentions: ["adam", "unknown hyperparameter 'momentum'"])
        try expectInvalid("decoupled_adamw", ["maximize": .bool(true)], mentions: ["unknown hyperparameter 'maximize'"])
        try expectInvalid("sgd", ["nesterov": .number(1)], mentions: ["nesterov", "must be a boolean"])
        try expectInvalid("sgd", ["lr": .bool(true)], mentions: ["lr", "must be a number"])
        #expect(throws: OptimError.unknownOptimizer(name: "adagard", known: OptimizerRegistry.names)) {
            try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adagard"), parameters: [try parameter()])
        }
    }

    @Test(arguments: vectorOptimizers)
    func emptyAndDuplicatedParameterLists(name: String) throws {
        let configuration = defaultConfiguration(name)
        #expect(throws: OptimError.emptyParameterList(optimizer: name == "lookahead" ? "adamw" : name)) {
            try OptimizerRegistry.makeOptimizer(configuration, parameters: [])
        }
        let w = try parameter()
        #expect(throws: OptimError.duplicateParameter(name: "w")) { try OptimizerRegistry.makeOptimizer(configuration, parameters: [w, w]) }
        #expect(throws: OptimError.duplicateParameter(name: "w")) {
            try OptimizerRegistry.makeOptimizer(configuration, groups: [.init([w]), .init([try parameter("w")])])
        }
        #expect(throws: OptimError.emptyParameterList(optimizer: name == "lookahead" ? "adamw" : name)) {
            try OptimizerRegistry.makeOptimizer(configuration, groups: [.init([w]), .init([])])
        }
    }

    @Test func shapesAndSizes() throws {
        #expect(throws: OptimError.invalidShape(parameter: "w", shape: [2, -1])) { try Parameter(name: "w", shape: [2, -1]) }
        #expect(throws: OptimError.invalidShape(parameter: "w", shape: [Int.max, 2])) { try Parameter(name: "w", shape: [Int.max, 2]) }
        #expect(throws: OptimError.sizeMismatch(parameter: "w", expected: 6, got: 5)) { try Parameter(name: "w", shape: [2, 3], values: [1, 2, 3, 4, 5]) }
        #expect(throws: OptimError.invalidParameterName("")) { try Parameter(name: "", shape: [1]) }
        let w = try parameter()
        #expect(throws: OptimError.sizeMismatch(parameter: "w", expected: 2, got: 3)) { try w.setGradient([1, 2, 3]) }
        #expect(w.gradient == nil)
        let scalar = try Parameter(name: "s", shape: [], values: [4])
        #expect(scalar.count == 1)
    }

    @Test func learningRateChangesAndGroupIndicesAreChecked() throws {
        let optimizer = try Adam([try parameter()])
        #expect(throws: OptimError.invalidGroup(index: 1, groupCount: 1)) { try optimizer.setLearningRate(0.1, group: 1) }
        #expect(throws: OptimError.self) { try optimizer.setLearningRate(-1, group: 0) }
        #expect(try optimizer.learningRate(group: 0) == 1e-3)
        #expect(throws: OptimError.unknownParameter(name: "other")) { try optimizer.stepCount(of: try parameter("other")) }
    }

    @Test func errorMessagesNameValueAndRange() throws {
        do {
            _ = try Adam([try parameter()], hyperparameters: .init(learningRate: -0.5))
            Issue.record("accepted a negative learning rate")
        } catch {
            #expect("\(error)" == "adam: invalid learningRate (lr) = -0.5; expected a finite number > 0")
        }
    }
}
