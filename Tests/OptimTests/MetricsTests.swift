import Foundation
import MetricsTestKit
import Optim
import Testing

@Suite struct MetricsTests {
    // MARK: against the reference code

    struct ReferenceCase: Decodable, Sendable, CustomTestStringConvertible {
        struct Tensor: Decodable, Sendable { var name: String; var shape: [Int]; var data: [Float] }
        struct Step: Decodable, Sendable { var grads: [String: [Float]] }
        var name: String
        var optimizer: String
        var hyperparameters: [String: HyperparameterJSON]
        var params: [Tensor]
        var steps: [Step]
        var reported: [String: Double]
        var pre_reduced: [String: Double]
        var applied: [String: Double]
        var testDescription: String { name }
    }

    enum HyperparameterJSON: Decodable, Sendable {
        case number(Double), numbers([Double])
        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let value = try? container.decode(Double.self) { self = .number(value) } else { self = .numbers(try container.decode([Double].self)) }
        }
        var value: HyperparameterValue {
            switch self {
            case let .number(x): return .number(x)
            case let .numbers(x): return .numbers(x)
            }
        }
    }

    struct ReferenceFile: Decodable { var cases: [ReferenceCase] }

    static let referenceCases: [ReferenceCase] = {
        let url = Paths.repository.appendingPathComponent("Tests/Fixtures/metrics/reference_metrics.json")
        guard let data = try? Data(contentsOf: url) else { return [] }
        return (try? JSONDecoder().decode(ReferenceFile.self, from: data).cases) ?? []
    }()

    func close(_ got: Double?, _ want: Double, _ what: String, rtol: Double = 1e-5, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let got else {
            Issue.record("\(what) missing", sourceLocation: sourceLocation)
            return
        }
        #expect(abs(got - want) <= 1e-7 + rtol * abs(want), "\(what): got \(got), want \(want)", sourceLocation: sourceLocation)
    }

    @Test func referenceFixturesArePresent() { #expect(Self.referenceCases.count == 3) }

    @Test(arguments: referenceCases)
    func matchesTheReferenceImplementation(_ testCase: ReferenceCase) throws {
        let parameters = try testCase.params.map { try Parameter(name: $0.name, shape: $0.shape, values: $0.data) }
        let optimizer = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: testCase.optimizer, hyperparameters: testCase.hyperparameters.mapValues(\.value)), parameters: parameters)
        var metrics: OptimizerMetrics?
        for (index, step) in testCase.steps.enumerated() {
            for parameter in parameters { try parameter.setGradient(step.grads[parameter.name]!) }
            metrics = try optimizer.step(collectingMetrics: index == testCase.steps.count - 1)
        }
        let values = try #require(metrics).values, preReduced = metrics!.preReduced
        // Moment, parameter and gradient norms and the moment–gradient cosine: the reference's own report.
        for (key, want) in testCase.reported where !key.contains("update") {
            close(values[key], want, key)
            close(preReduced[key], testCase.pre_reduced[key]!, "pre-reduced \(key)")
        }
        // The update: the step actually applied, measured two-pass in torch.
        for (key, want) in testCase.applied { close(values[key], want, key) }
        // Without weight decay composer's reported update is the applied one too.
        if testCase.optimizer == "decoupled_adamw" {
            for parameter in parameters { close(values["l2_norm/update/\(parameter.name)"], testCase.reported["l2_norm/update/\(parameter.name)"]!, "composer update") }
        }
    }

    // MARK: against a plain two-pass computation

    @Test(arguments: vectorOptimizers)
    func fusedMetricsEqualATwoPassComputation(name: String) throws {
        var random = SplitMix(seed: 31)
        let shapes = [("w", [70_001]), ("b", [13])]  // 70,001: several chunks, a partial last vector
        let start = shapes.map { random.floats($0.1.reduce(1, *)) }
        let gradients = (0..<3).map { _ in shapes.map { random.floats($0.1.reduce(1, *)) } }
        let configuration = defaultConfiguration(name, name == "lookahead" ? ["k": .number(2)] : name == "sgd" ? ["momentum": .number(0.9), "lr": .number(0.01)] : ["lr": .number(0.01)])

        func run(collecting: Bool) throws -> (parameters: [Parameter], optimizer: any Optimizer, before: [[Float]], metrics: OptimizerMetrics?) {
            let parameters = try zip(shapes, start).map { try Parameter(name: $0.0, shape: $0.1, values: $1) }
            let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: parameters)
            var before: [[Float]] = [], metrics: OptimizerMetrics?
            for (index, step) in gradients.enumerated() {
                for (parameter, gradient) in zip(parameters, step) { try parameter.setGradient(gradient) }
                before = parameters.map(\.valueArray)
                metrics = try optimizer.step(collectingMetrics: collecting && index == 2)
            }
            return (parameters, optimizer, before, metrics)
        }
        let fused = try run(collecting: true), plain = try run(collecting: false)
        #expect(plain.metrics == nil)
        let metrics = try #require(fused.metrics)
        for (index, parameter) in plain.parameters.enumerated() {
            #expect(bits(parameter.valueArray) == bits(fused.parameters[index].valueArray), "collecting metrics changed the update")
            let after = parameter.valueArray.map(Double.init), before = plain.before[index].map(Double.init)
            let gradient = gradients[2][index].map(Double.init)
            let update = zip(before, after).map { Double(Float($0) - Float($1)) }
            func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
            let sums = try #require(metrics.sums[parameter.name])
            close(sums.parameterSquared, dot(after, after), "\(name) Σp²", rtol: 1e-6)
            close(sums.gradientSquared, dot(gradient, gradient), "\(name) Σg²", rtol: 1e-6)
            close(sums.updateSquared, dot(update, update), "\(name) Σu²", rtol: 1e-6)
            close(sums.updateDotGradient, dot(update, gradient), "\(name) Σu·g", rtol: 1e-5)
            let state = try plain.optimizer.state(of: parameter)
            // The first moment under the reference's name: torch's, or bitsandbytes' AdEMAMix's and optax's
            // (ASGD's scalar `mu` is no moment).
            let momentName = ["ademamix": "m1", "lamb": "mu", "lars": "trace", "adan": "m"][name]
            if let moment = (state["exp_avg"] ?? state["momentum_buffer"] ?? momentName.flatMap { state[$0] })?.map(Double.init) {
                close(sums.momentSquared, dot(moment, moment), "\(name) Σm²", rtol: 1e-6)
                close(sums.momentDotGradient, dot(moment, gradient), "\(name) Σm·g", rtol: 1e-5)
            } else {
                #expect(sums.momentSquared == nil)
            }
        }
    }

    @Test func sgdWithoutMomentumReportsNoMoment() throws {
        let w = try Parameter(name: "w", shape: [3], values: [1, 2, 3])
        let optimizer = try SGD([w], hyperparameters: .init(learningRate: 0.1))
        try w.setGradient([1, 1, 1])
        let values = try #require(try optimizer.step(collectingMetrics: true)).values
        #expect(values.keys.sorted() == ["cosine/update_grad/w", "l2_norm/grad/w", "l2_norm/param/w", "l2_norm/update/w"])
        close(values["cosine/update_grad/w"], 1, "cosine of SGD's update with its gradient")
    }

    // MARK: reduction across ranks

    @Test(arguments: OptimizerRegistry.all.filter { !$0.updatesWholeTensors && !$0.requiresMatrices }.map(\.name), [2, 3, 7])
    func shardedMetricsReduceToTheWholeModelMetrics(name: String, ranks: Int) throws {
        var random = SplitMix(seed: UInt64(40 + ranks))
        let shapes = [("w", 1_000), ("b", 10)]  // 10 over 7 ranks: uneven, some shards of one element
        let start = shapes.map { random.floats($0.1) }
        let gradients = (0..<3).map { _ in shapes.map { random.floats($0.1) } }
        let configuration = defaultConfiguration(name, name == "lookahead" ? ["k": .number(2)] : ["lr": .number(0.01)])

        func metrics(_ slices: [Range<Int>]) throws -> OptimizerMetrics {
            let parameters = try zip(shapes, zip(start, slices)).map { shape, data in
                try Parameter(name: shape.0, shape: [data.1.count], values: Array(data.0[data.1]))
            }
            let optimizer = try OptimizerRegistry.makeOptimizer(configuration, parameters: parameters)
            var result: OptimizerMetrics?
            for (index, step) in gradients.enumerated() {
                for (parameter, (gradient, slice)) in zip(parameters, zip(step, slices)) { try parameter.setGradient(Array(gradient[slice])) }
                result = try optimizer.step(collectingMetrics: index == 2)
            }
            return result!
        }
        let whole = try metrics(shapes.map { 0..<$0.1 }).values
        var shardForms: [[String: Double]] = []
        for rank in 0..<ranks {
            let slices = shapes.map { shape in (shape.1 * rank / ranks)..<(shape.1 * (rank + 1) / ranks) }
            shardForms.append(try metrics(slices).preReduced)
        }
        let reduced = OptimizerMetrics.finalize(OptimizerMetrics.sum(shardForms))
        #expect(Set(reduced.keys) == Set(whole.keys))
        // Sums accumulate in Float within 256-element blocks: shard boundaries move the rounding.
        for (key, want) in whole { close(reduced[key], want, "\(name) over \(ranks) ranks: \(key)", rtol: 1e-6) }
    }

    @Test func preReducedAndFinalFormsFollowTheSeed() {
        // pre_reduce_metrics: l2 squared; cosine × ‖A‖·‖B‖ (a dot product). Final: √, dot / (‖A‖·‖B‖).
        let metrics = OptimizerMetrics(sums: ["w": ParameterMetricSums(momentSquared: 4, parameterSquared: 9, updateSquared: 16,
                                                                        gradientSquared: 25, updateDotGradient: 10, momentDotGradient: -5)])
        #expect(metrics.preReduced["l2_norm/update/w"] == 16)
        #expect(metrics.preReduced["cosine/moment_grad/w"] == -5)
        let values = metrics.values
        #expect(values["l2_norm/param/w"] == 3)
        #expect(values["cosine/update_grad/w"] == 10.0 / 20.0)
        #expect(values["cosine/moment_grad/w"] == -5.0 / 10.0)
        #expect(OptimizerMetrics.sum([["a": 1, "b": 2], ["a": 3]]) == ["a": 4, "b": 2])
    }

    // MARK: export

    @Test func exportsToSwiftMetricsAndJSONLines() throws {
        let w = try Parameter(name: "fc1.weight", shape: [2], values: [3, 4])
        let optimizer = try Adam([w], hyperparameters: .init(learningRate: 0.1))
        try w.setGradient([1, 1])
        let metrics = try #require(try optimizer.step(collectingMetrics: true))
        let test = TestMetrics()
        metrics.record(dimensions: [("run", "test")], factory: test)
        let gauge = try test.expectGauge("optim_l2_norm_param", [("run", "test"), ("param", "fc1.weight")])
        #expect(gauge.lastValue == metrics.values["l2_norm/param/fc1.weight"])
        #expect(try test.expectGauge("optim_cosine_moment_grad", [("run", "test"), ("param", "fc1.weight")]).lastValue != nil)

        let line = try metrics.jsonLine(step: 7, extra: ["loss": 0.5])
        #expect(!line.contains("\n"))
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        #expect(object["step"] as? Int == 7)
        #expect(object["loss"] as? Double == 0.5)
        #expect((object["metrics"] as? [String: Double])?["l2_norm/param/fc1.weight"] == metrics.values["l2_norm/param/fc1.weight"])
    }
}
