import Foundation
import Optim
import OptimFixtures
import Testing

/// The registry table (``OptimizerInfo``) is complete and consistent: every entry's defaults are
/// the reference's, its samples and benchmark configuration build, its reference names a paper.
@Suite struct RegistryTests {
    @Test func namesAreUniqueFixtureNames() {
        let names = OptimizerRegistry.names
        #expect(Set(names).count == names.count)
        for name in names { #expect(name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" }, "\(name)") }
    }

    /// The defaults are those the reference constructors have: each optimizer's `<name>-defaults`
    /// fixture writes every hyperparameter as the generator read it off the reference (which it
    /// checks against the constructor's signature).
    @Test(arguments: OptimizerRegistry.names)
    func defaultsMatchTheReference(name: String) throws {
        let path = Paths.referenceFixtures.appendingPathComponent("\(name)-defaults.json")
        let fixture = try Fixture(contentsOf: path)
        // Keys of this library's own, beyond the reference's (documented in tools/reference/README.md):
        // Muon's `ns_dtype`, whose default is the reference's behaviour.
        let ownKeys: Set = ["ns_dtype"]
        var expected = fixture.configuration.hyperparameters
        // Where the reference default learning rate is impractical for a short fixture (schedule-free
        // SGD's 1.0), `-defaults` uses a smaller one and `<name>-lr-default` has the default.
        let learningRateFixture = Paths.referenceFixtures.appendingPathComponent("\(name)-lr-default.json")
        if FileManager.default.fileExists(atPath: learningRateFixture.path) {
            expected["lr"] = try Fixture(contentsOf: learningRateFixture).configuration.hyperparameters["lr"]
        }
        var defaults = try OptimizerRegistry.info(named: name).defaults.filter { !ownKeys.contains($0.key) }
        // optax's learning rate has no default (the fixtures always write one); ours is our own.
        if try OptimizerRegistry.info(named: name).reference.library == "optax" {
            #expect(defaults["lr"] != nil)
            defaults["lr"] = expected["lr"]
        }
        #expect(defaults == expected)
    }

    @Test(arguments: OptimizerRegistry.names)
    func entryIsComplete(name: String) throws {
        let info = try OptimizerRegistry.info(named: name)
        #expect(!info.typeName.isEmpty)
        #expect(!info.reference.library.isEmpty)
        #expect(!info.reference.symbol.isEmpty)
        let paperHasYear = info.reference.paper.contains { $0.isNumber }
        #expect(paperHasYear, "\(name): the paper needs its year and number")
        #expect(!info.reference.description.lowercased().contains("seed"), "\(name): cite the library and the paper")
        if info.isWrapper {
            #expect(info.suggested.isEmpty, "a wrapper takes its wrapped optimizer's suggestions")
        } else {
            guard case let .number(lr)? = info.suggested["lr"] else {
                Issue.record("\(name) has no suggested learning rate for the example tasks")
                return
            }
            #expect(lr > 0)
            // The suggestions are valid hyperparameters.
            let w = try Parameter(name: "w", shape: testShape(name, 2), values: [1, 2])
            _ = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: name, hyperparameters: info.suggested), parameters: [w])
        }
        for sample in [info.samples.basic, info.samples.quadratic, info.samples.rosenbrock, info.benchmark.configuration] {
            #expect(sample.name == name)
            let w = try Parameter(name: "w", shape: testShape(name, 2), values: [1, 2])
            _ = try OptimizerRegistry.makeOptimizer(sample, parameters: [w])
        }
    }

    /// Every C reference the table names exists in the benchmark's C file, with the state buffers
    /// the optimizer really keeps.
    @Test(arguments: OptimizerRegistry.names)
    func benchmarkReferenceExists(name: String) throws {
        let info = try OptimizerRegistry.info(named: name)
        let source = try String(contentsOf: Paths.repository.appendingPathComponent("Sources/optim/Resources/reference_kernels.c"), encoding: .utf8)
        switch info.benchmark.reference {
        case let .kernel(symbol, stateBuffers, coefficients):
            #expect(source.contains("KERNEL(\(symbol))"), "reference_kernels.c has no KERNEL(\(symbol))")
            #expect(!coefficients.isEmpty)
            let w = try Parameter(name: "w", shape: testShape(name, 3), values: [1, 2, 3])
            let optimizer = try OptimizerRegistry.makeOptimizer(info.benchmark.configuration, parameters: [w])
            try w.setGradient([0.5, -0.5, 1])
            try optimizer.step()
            try optimizer.step()
            let buffers = try optimizer.state(of: w).values.filter { $0.count == w.count }  // not the scalar state
            #expect(buffers.count == stateBuffers, "\(name): the C kernel's state buffers differ from the optimizer's")
        case let .globalKernel(symbol, stateBuffers, coefficients, globals):
            #expect(source.contains("GLOBAL_KERNEL(\(symbol))"), "reference_kernels.c has no GLOBAL_KERNEL(\(symbol))")
            #expect(!coefficients.isEmpty && !globals.isEmpty)
            let w = try Parameter(name: "w", shape: testShape(name, 3), values: [1, 2, 3])
            let optimizer = try OptimizerRegistry.makeOptimizer(info.benchmark.configuration, parameters: [w])
            try w.setGradient([0.5, -0.5, 1])
            try optimizer.step()
            try optimizer.step()
            let buffers = try optimizer.state(of: w).values.filter { $0.count == w.count }
            #expect(buffers.count == stateBuffers, "\(name): the C kernel's state buffers differ from the optimizer's")
        case let .wrapper(sync, every, _):
            #expect(source.contains("ref_\(sync)("), "reference_kernels.c has no ref_\(sync)")
            #expect(every >= 1)
            #expect(info.benchmark.configuration.base != nil)
        case let .none(reason):
            #expect(!reason.isEmpty)
        }
    }

    @Test(arguments: OptimizerRegistry.names)
    func buildsFromNameAndReportsItsHyperparameters(name: String) throws {
        let a = try Parameter(name: "a", shape: testShape(name, 2), values: [1, 2])
        let b = try Parameter(name: "b", shape: testShape(name, 3), values: [1, 2, 3])
        if name == "lbfgs" {
            // torch's L-BFGS takes one group; so does ours.
            #expect(throws: OptimError.self) { try OptimizerRegistry.makeOptimizer(defaultConfiguration(name), groups: [.init([a]), .init([b])]) }
            let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name, ["lr": .number(0.5)]), groups: [.init([a, b])])
            #expect(optimizer.parameters == [a, b] && optimizer.groupCount == 1)
            #expect(try optimizer.hyperparameters(group: 0)["lr"] == .number(0.5))
            return
        }
        // prodigyopt's groups share one step size: each group's lr is the largest one or 0.
        let rate = name == "prodigy" ? 0 : 0.5
        if name == "prodigy" {
            #expect(throws: OptimError.self) {
                try OptimizerRegistry.makeOptimizer(defaultConfiguration(name), groups: [.init([a]), .init([b], overrides: ["lr": .number(0.5)])])
            }
        }
        let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration(name), groups: [.init([a]), .init([b], overrides: ["lr": .number(rate)])])
        #expect(optimizer.name == name)
        #expect(optimizer.groupCount == 2)
        #expect(optimizer.parameters == [a, b])
        #expect(try optimizer.learningRate(group: 1) == rate)
        #expect(try optimizer.initialLearningRate(group: 1) == rate)
        #expect(try optimizer.hyperparameters(group: 1)["lr"] == .number(rate))
    }
}
