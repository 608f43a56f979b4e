import Foundation
import Optim
import OptimDistributed
import OptimMPI
import Safetensors
import Testing

/// The DocC articles' code, compiled and run.
///
/// Every ```swift block of the catalogs `Sources/Optim/Optim.docc` and
/// `Sources/OptimDistributed/OptimDistributed.docc` is copied, line for line, into
/// one of the tests below between a `// docs: ARTICLE` line and a `// docs: end` line, in the
/// article's order; ``articleBlocksAreTheTestedCode()`` reads both files and fails on any
/// difference, so an article cannot show code that these tests do not compile and run. (An
/// article's `import` lines are checked against this file's imports instead.)
@Suite struct DocumentationExampleTests {
    // MARK: the blocks and their twins

    static let sources = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources")
    /// The catalogs whose articles are checked.
    static let catalogs = [sources.appendingPathComponent("Optim/Optim.docc"),
                           sources.appendingPathComponent("OptimDistributed/OptimDistributed.docc")]

    /// The ```swift blocks of a Markdown text, each as its lines.
    static func swiftBlocks(in text: String) -> [[String]] {
        var blocks: [[String]] = [], current: [String]?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if current == nil, trimmed == "```swift" {
                current = []
            } else if current != nil, trimmed == "```" {
                blocks.append(current!)
                current = nil
            } else if current != nil {
                current!.append(line)
            }
        }
        return blocks
    }

    /// This file's marked regions, by article name, in order.
    static func testedRegions(in source: String) -> [String: [[String]]] {
        var regions: [String: [[String]]] = [:], current: (article: String, lines: [String])?
        for line in source.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("// docs: ") {
                let name = String(trimmed.dropFirst("// docs: ".count))
                if name == "end", let region = current {
                    regions[region.article, default: []].append(region.lines)
                    current = nil
                } else {
                    current = (name, [])
                }
            } else if current != nil {
                current!.lines.append(line)
            }
        }
        return regions
    }

    /// Lines without their common indentation; blank lines become empty.
    static func dedented(_ lines: [String]) -> [String] {
        let indent = lines.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            .map { $0.prefix(while: { $0 == " " }).count }.min() ?? 0
        return lines.map { $0.trimmingCharacters(in: .whitespaces).isEmpty ? "" : String($0.dropFirst(indent)) }
    }

    @Test func articleBlocksAreTheTestedCode() throws {
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let regions = Self.testedRegions(in: source)
        let articles = try Self.catalogs.flatMap { catalog in
            try FileManager.default.contentsOfDirectory(atPath: catalog.path).filter { $0.hasSuffix(".md") }.sorted()
                .map { catalog.appendingPathComponent($0) }
        }
        #expect(articles.map(\.lastPathComponent) == ["Checkpoints.md", "ChoosingAnOptimizer.md", "GettingStarted.md", "MigratingFromPyTorch.md",
                                                     "Optim.md", "DistributedTraining.md", "OptimDistributed.md"])
        var checked = 0
        for url in articles {
            let file = url.lastPathComponent
            let article = String(file.dropLast(3))
            let text = try String(contentsOf: url, encoding: .utf8)
            let blocks = Self.swiftBlocks(in: text).map { block in
                block.filter { line in
                    guard line.hasPrefix("import ") else { return true }
                    #expect(source.contains("\n\(line)\n"), "\(file) imports a module this file does not: \(line)")
                    return false
                }
            }
            let twins = regions[article] ?? []
            #expect(blocks.count == twins.count, "\(file): \(blocks.count) swift blocks, \(twins.count) regions marked `// docs: \(article)` here")
            for (index, (block, twin)) in zip(blocks, twins).enumerated() {
                let (want, got) = (Self.dedented(block), Self.dedented(twin))
                if want != got {
                    let line = Array(zip(want, got)).firstIndex { $0 != $1 } ?? min(want.count, got.count)
                    Issue.record("""
                        \(file), swift block \(index + 1), line \(line + 1) differs from its twin in this file:
                          article: \(line < want.count ? want[line] : "(end of block)")
                          test:    \(line < got.count ? got[line] : "(end of region)")
                        """)
                }
                checked += 1
            }
        }
        for article in regions.keys { #expect(articles.contains { $0.lastPathComponent == article + ".md" }, "regions marked for a missing article \(article)") }
        #expect(checked >= 20, "only \(checked) blocks checked")
    }

    @Test func theCheckFindsADifference() {
        let article = "Text.\n\n```swift\nlet a = 1\n  print(a)\n```\n\n```sh\nls\n```\n"
        #expect(Self.swiftBlocks(in: article) == [["let a = 1", "  print(a)"]])
        let regions = Self.testedRegions(in: "    // docs: Text\n    let a = 1\n      print(a)\n    // docs: end\n")
        #expect(regions["Text"].map { $0.map(Self.dedented) } == [Self.dedented(["let a = 1", "  print(a)"])])
        #expect(Self.dedented(["let a = 2", "  print(a)"]) != Self.dedented(["let a = 1", "  print(a)"]))
    }
}

// MARK: the articles' code

extension DocumentationExampleTests {
    @Test func landingPage() throws {
        // docs: Optim
        let weight = try Parameter(name: "fc.weight", shape: [4, 3], repeating: 0.1)
        let optimizer = try AdamW([weight], hyperparameters: .init(learningRate: 1e-3, weightDecay: 0.01))
        try weight.setGradient(.init(repeating: 0.5, count: 12))   // what a backward pass writes
        try optimizer.step()
        // docs: end
        // AdamW's first step moves every element by lr (m̂/√v̂ = 1), after decay by lr·λ.
        let want = Float(0.1 * (1 - 1e-3 * 0.01) - 1e-3)
        for value in weight.valueArray { #expect(abs(value - want) < 1e-6, "\(value)") }
    }

    @Test func gettingStarted() throws {
        // docs: GettingStarted
        let w = try Parameter(name: "w", shape: [1], values: [0])
        let b = try Parameter(name: "b", shape: [1], values: [0])
        let optimizer = try SGD([w, b], hyperparameters: .init(learningRate: 0.05, momentum: 0.9))
        // docs: end
        #expect(optimizer.groups[0].hyperparameters.dampening == 0 && !optimizer.groups[0].hyperparameters.nesterov)

        // docs: GettingStarted
        let xs: [Float] = [-2, -1, 0, 1, 2, 3]
        let ys = xs.map { 2 * $0 + 1 }                     // the line to recover: w = 2, b = 1

        // Forward and backward by hand: the mean squared error, and its gradient set on each parameter.
        func backward() throws -> Float {
            var loss: Float = 0, dw: Float = 0, db: Float = 0
            for (x, y) in zip(xs, ys) {
                let error = w.values[0] * x + b.values[0] - y
                loss += error * error / Float(xs.count)
                dw += 2 * error * x / Float(xs.count)
                db += 2 * error / Float(xs.count)
            }
            try w.setGradient([dw])
            try b.setGradient([db])
            return loss
        }

        for step in 0..<200 {
            let loss = try backward()
            try optimizer.step()
            optimizer.zeroGradients()                           // torch's zero_grad(): no gradient until the next backward
            if step % 50 == 0 { print("step \(step): loss \(loss)") }
        }
        print(w.values[0], b.values[0])                    // about 2 and 1
        // docs: end
        #expect(abs(w.values[0] - 2) < 1e-3 && abs(b.values[0] - 1) < 1e-3, "\(w.valueArray) \(b.valueArray)")
        #expect(w.gradient == nil && b.gradient == nil)

        // docs: GettingStarted
        let loss = try optimizer.step { try backward() }
        // docs: end
        #expect(loss < 1e-6 && w.gradient != nil)
        #expect(try optimizer.stepCount(of: w) == 201)

        try w.setValues([0])
        try b.setValues([0])
        // docs: GettingStarted
        let adamw = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(0.1), "weight_decay": .number(1e-4)]),
            groups: [
                ParameterGroupConfiguration([w]),
                ParameterGroupConfiguration([b], overrides: ["weight_decay": .number(0)]),
            ])
        let scheduler = try LearningRateScheduler(adamw, schedule: SequentialSchedule.warmupCosine(warmupSteps: 20, totalSteps: 300, floor: 0.01))

        for _ in 0..<300 {
            _ = try backward()
            try adamw.clipGradientNorm(maxNorm: 1)         // torch.nn.utils.clip_grad_norm_
            try adamw.step()
            try scheduler.step()                           // after the optimizer's step, as in PyTorch
        }
        // docs: end
        #expect(abs(w.values[0] - 2) < 0.02 && abs(b.values[0] - 1) < 0.02, "\(w.valueArray) \(b.valueArray)")
        #expect(try adamw.hyperparameters(group: 1)["weight_decay"] == .number(0))
        #expect(scheduler.stepCount == 300)

        // docs: GettingStarted
        do {
            _ = try SGD([w], hyperparameters: .init(learningRate: -1))
        } catch {
            print(error)   // sgd: invalid learningRate (lr) = -1; expected a finite number > 0
        }
        // docs: end
        #expect(throws: OptimError.self) { try SGD([w], hyperparameters: .init(learningRate: -1)) }
        do {
            _ = try SGD([w], hyperparameters: .init(learningRate: -1))
        } catch {
            #expect("\(error)" == "sgd: invalid learningRate (lr) = -1; expected a finite number > 0")
        }
    }

    @Test func checkpoints() throws {
        // docs: Checkpoints
        struct Run {
            let weight: Parameter
            let optimizer: any Optimizer
            let scheduler: LearningRateScheduler

            init() throws {
                weight = try Parameter(name: "fc.weight", shape: [2, 3], repeating: 0.5)
                optimizer = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw"), parameters: [weight])
                scheduler = try LearningRateScheduler(optimizer, schedule: CosineDecaySchedule(steps: 100))
            }

            func train(steps: Int) throws {
                for _ in 0..<steps {
                    try weight.setGradient(weight.valueArray.map { $0 - 1 })   // the gradient of ½‖w − 1‖²
                    try optimizer.step()
                    try scheduler.step()
                }
            }
        }
        // docs: end

        // docs: Checkpoints
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("run-\(UUID()).safetensors")
        let run = try Run()
        try run.train(steps: 10)
        try Checkpoint.save(run.optimizer, scheduler: run.scheduler, to: url, metadata: ["epoch": "1"])
        // docs: end
        defer { try? FileManager.default.removeItem(at: url) }

        // docs: Checkpoints
        let resumed = try Run()
        let metadata = try Checkpoint.load(from: url, into: resumed.optimizer, scheduler: resumed.scheduler)
        print(metadata["epoch"]!, resumed.scheduler.stepCount)   // 1 10
        try resumed.train(steps: 10)
        // docs: end
        #expect(metadata["epoch"] == "1" && metadata["format"] == Checkpoint.format)
        // The first run, continued without stopping, gives the same bits.
        try run.train(steps: 10)
        #expect(resumed.weight.valueArray.map(\.bitPattern) == run.weight.valueArray.map(\.bitPattern))
        #expect(resumed.optimizer.snapshot() == run.optimizer.snapshot())
        #expect(resumed.scheduler.stepCount == 20 && run.scheduler.stepCount == 20)
        #expect(try resumed.optimizer.learningRate(group: 0) == run.optimizer.learningRate(group: 0))

        // docs: Checkpoints
        let lion = try Lion([try Parameter(name: "fc.weight", shape: [2, 3])], hyperparameters: .init())
        do {
            try Checkpoint.load(from: url, into: lion)
        } catch {
            print(error)   // names the mismatch: the file holds adamw's state, not lion's
        }
        // docs: end
        var message = ""
        do { try Checkpoint.load(from: url, into: lion) } catch { message = "\(error)" }
        #expect(message.contains("adamw") && message.contains("lion"), "\(message)")
        let untouched = try Lion([try Parameter(name: "fc.weight", shape: [2, 3])], hyperparameters: .init())
        #expect(lion.parameters[0].valueArray == [0, 0, 0, 0, 0, 0] && lion.snapshot() == untouched.snapshot())

        // docs: Checkpoints
        let file = try SafetensorsFile(contentsOf: url)
        print(file.metadata["format"]!)                          // swift-optim-checkpoint/1
        print(file.tensors.map(\.name).sorted())                 // fc.weight, state/fc.weight/exp_avg, …
        // docs: end
        #expect(file.metadata["format"] == "swift-optim-checkpoint/1")
        #expect(file.tensors.map(\.name).sorted() == ["fc.weight", "state/fc.weight/exp_avg", "state/fc.weight/exp_avg_sq"])
    }
}

extension DocumentationExampleTests {
    @Test func migratingFromPyTorch() throws {
        // docs: MigratingFromPyTorch
        let weight = try Parameter(name: "fc.weight", shape: [8, 4], repeating: 0.1)
        let params = [weight]

        // torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
        let sgd = try SGD(params, hyperparameters: .init(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4, nesterov: true))
        // torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, amsgrad=True)
        let adam = try Adam(params, hyperparameters: .init(learningRate: 1e-3, betas: .init(0.9, 0.999), eps: 1e-8, amsgrad: true))
        // torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        let adamw = try AdamW(params, hyperparameters: .init(learningRate: 1e-3, weightDecay: 0.01))
        // torch.optim.ASGD(params, lr=0.01, lambd=1e-4, alpha=0.75, t0=1e6)
        let asgd = try ASGD(params, hyperparameters: .init(learningRate: 0.01, lambd: 1e-4, alpha: 0.75, t0: 1e6))
        // torch.optim.Adadelta(params, lr=1.0, rho=0.9, eps=1e-6)
        let adadelta = try Adadelta(params, hyperparameters: .init(learningRate: 1.0, rho: 0.9, eps: 1e-6))
        // torch.optim.Adafactor(params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0)
        let adafactor = try Adafactor(params, hyperparameters: .init(learningRate: 1e-2, beta2Decay: -0.8, eps1: nil, eps2: 1e-3, d: 1))
        // torch.optim.Adagrad(params, lr=0.01, lr_decay=0, initial_accumulator_value=0.1)
        let adagrad = try Adagrad(params, hyperparameters: .init(learningRate: 0.01, learningRateDecay: 0, initialAccumulatorValue: 0.1))
        // torch.optim.Adamax(params, lr=2e-3, betas=(0.9, 0.999))
        let adamax = try Adamax(params, hyperparameters: .init(learningRate: 2e-3, betas: .init(0.9, 0.999)))
        // torch.optim.LBFGS(params, lr=1, max_iter=20, history_size=100, line_search_fn="strong_wolfe")
        let lbfgs = try LBFGS(params, hyperparameters: .init(learningRate: 1, maxIterations: 20, historySize: 100, strongWolfe: true))
        // torch.optim.Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True)   -- matrices only
        let muon = try Muon(params, hyperparameters: .init(learningRate: 1e-3, weightDecay: 0.1, momentum: 0.95, nesterov: true))
        // torch.optim.NAdam(params, lr=2e-3, momentum_decay=4e-3, decoupled_weight_decay=False)
        let nadam = try NAdam(params, hyperparameters: .init(learningRate: 2e-3, momentumDecay: 4e-3, decoupledWeightDecay: false))
        // torch.optim.RAdam(params, lr=1e-3, weight_decay=0.01, decoupled_weight_decay=True)
        let radam = try RAdam(params, hyperparameters: .init(learningRate: 1e-3, weightDecay: 0.01, decoupledWeightDecay: true))
        // torch.optim.RMSprop(params, lr=0.01, alpha=0.99, momentum=0.9, centered=True)
        let rmsprop = try RMSprop(params, hyperparameters: .init(learningRate: 0.01, alpha: 0.99, momentum: 0.9, centered: true))
        // torch.optim.Rprop(params, lr=0.01, etas=(0.5, 1.2), step_sizes=(1e-6, 50))
        let rprop = try Rprop(params, hyperparameters: .init(learningRate: 0.01, etas: .init(0.5, 1.2), stepSizes: .init(1e-6, 50)))
        // torch.optim.SparseAdam(params, lr=1e-3)   -- with row-sparse gradients (setSparseGradient)
        let sparseAdam = try SparseAdam(params, hyperparameters: .init(learningRate: 1e-3))
        // docs: end
        let built: [any Optimizer] = [sgd, adam, adamw, asgd, adadelta, adafactor, adagrad, adamax, lbfgs, muon, nadam, radam, rmsprop, rprop, sparseAdam]
        #expect(built.map(\.name) == ["sgd", "adam", "adamw", "asgd", "adadelta", "adafactor", "adagrad", "adamax", "lbfgs", "muon",
                                        "nadam", "radam", "rmsprop", "rprop", "sparse_adam"])
        // The Swift values are the ones PyTorch's keywords give, by PyTorch name.
        #expect(try sgd.hyperparameters(group: 0)["nesterov"] == .bool(true))
        #expect(try adagrad.hyperparameters(group: 0)["initial_accumulator_value"] == .number(0.1))
        #expect(try lbfgs.hyperparameters(group: 0)["line_search_fn"] == .string("strong_wolfe"))
        #expect(try rprop.hyperparameters(group: 0)["step_sizes"] == .numbers([1e-6, 50]))
        #expect(try radam.hyperparameters(group: 0)["decoupled_weight_decay"] == .bool(true))

        // docs: MigratingFromPyTorch
        // torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        let byName = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: "adamw", hyperparameters: [
                "lr": .number(1e-3), "betas": .numbers([0.9, 0.95]), "weight_decay": .number(0.1),
            ]),
            parameters: params)
        // docs: end
        #expect(try byName.hyperparameters(group: 0) == adamw.hyperparameters(group: 0).merging(
            ["betas": .numbers([0.9, 0.95]), "weight_decay": .number(0.1)]) { $1 })
        // torch's implementation switches are refused by name.
        for name in ["foreach", "fused", "capturable", "differentiable"] {
            #expect(throws: OptimError.self) {
                try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw", hyperparameters: [name: .bool(true)]), parameters: params)
            }
        }

        // docs: MigratingFromPyTorch
        let bias = try Parameter(name: "fc.bias", shape: [8])
        // torch.optim.AdamW([{"params": [weight]}, {"params": [bias], "weight_decay": 0.0}], lr=1e-3, weight_decay=0.01)
        let grouped = try AdamW(groups: [
            ParameterGroup([weight], .init(learningRate: 1e-3, weightDecay: 0.01)),
            ParameterGroup([bias], .init(learningRate: 1e-3, weightDecay: 0)),
        ])
        // docs: end
        #expect(try grouped.hyperparameters(group: 1)["weight_decay"] == .number(0) && grouped.groupCount == 2)
        #expect(ParameterGrouping.weightDecayGroups([weight, bias], weightDecay: 0.01).map(\.parameters) == [[weight], [bias]])

        // docs: MigratingFromPyTorch
        let sameGroups = try AdamW(groups: ParameterGrouping.weightDecayGroups([weight, bias], hyperparameters: .init(learningRate: 1e-3, weightDecay: 0.01)))
        // docs: end
        #expect(sameGroups.groups.map(\.parameters) == grouped.groups.map(\.parameters))
        #expect(sameGroups.groups.map(\.hyperparameters) == grouped.groups.map(\.hyperparameters))

        // docs: MigratingFromPyTorch
        // LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=100)
        let linear = LinearSchedule(from: 0.01, to: 1.0, steps: 100)
        // CosineAnnealingLR(optimizer, T_max=1000, eta_min=0.1 * lr)
        let cosine = CosineDecaySchedule(steps: 1000, floor: 0.1)
        // StepLR(optimizer, step_size=30, gamma=0.1)
        let stepDecay = StepDecaySchedule(stepSize: 30, gamma: 0.1)
        // MultiStepLR(optimizer, milestones=[30, 80], gamma=0.1)
        let multiStep = MultiStepSchedule(milestones: [30, 80], gamma: 0.1)
        // ExponentialLR(optimizer, gamma=0.99)
        let exponential = ExponentialSchedule(gamma: 0.99)
        // PolynomialLR(optimizer, total_iters=1000, power=2.0)
        let polynomial = PolynomialSchedule(steps: 1000, power: 2)
        // OneCycleLR(optimizer, max_lr=lr, total_steps=1000)   -- the group's learning rate is the peak
        let oneCycle = OneCycleSchedule(totalSteps: 1000)
        // ConstantLR(optimizer, factor=0.5, total_iters=10)
        let constant = SequentialSchedule([(schedule: ConstantSchedule(0.5), steps: 10)], then: ConstantSchedule(1))
        // SequentialLR(optimizer, [LinearLR(optimizer, start_factor=0.01, total_iters=100),
        //                          CosineAnnealingLR(optimizer, T_max=900)], milestones=[100])
        let warmupCosine = SequentialSchedule([(schedule: LinearSchedule.warmup(steps: 100, startFactor: 0.01), steps: 100)],
                                              then: CosineDecaySchedule(steps: 900))
        // LambdaLR(optimizer, lr_lambda=lambda step: 0.95 ** (step // 10))
        struct EveryTenSteps: LearningRateSchedule {
            func multiplier(at step: Int) -> Double { pow(0.95, Double(step / 10)) }
        }
        // scheduler = SequentialLR(...)
        let scheduler = try LearningRateScheduler(adamw, schedule: warmupCosine)
        // docs: end
        #expect(abs(linear.multiplier(at: 0) - 0.01) < 1e-12 && abs(linear.multiplier(at: 100) - 1) < 1e-12)
        #expect(abs(cosine.multiplier(at: 1000) - 0.1) < 1e-12 && abs(cosine.multiplier(at: 500) - 0.55) < 1e-12)
        #expect(abs(stepDecay.multiplier(at: 30) - 0.1) < 1e-12 && stepDecay.multiplier(at: 29) == 1)
        #expect(abs(multiStep.multiplier(at: 80) - 0.01) < 1e-12)
        #expect(abs(exponential.multiplier(at: 2) - 0.9801) < 1e-12)
        #expect(abs(polynomial.multiplier(at: 500) - 0.25) < 1e-12)
        #expect(abs(oneCycle.multiplier(at: 0) - 1 / 25.0) < 1e-9 && oneCycle.multiplier(at: 999) < 1e-5)
        #expect(constant.multiplier(at: 9) == 0.5 && constant.multiplier(at: 10) == 1)
        #expect(abs(warmupCosine.multiplier(at: 0) - 0.01) < 1e-12 && abs(warmupCosine.multiplier(at: 100) - 1) < 1e-12)
        #expect(abs(EveryTenSteps().multiplier(at: 25) - 0.95 * 0.95) < 1e-12)
        let startingRate = try adamw.learningRate(group: 0)
        #expect(abs(startingRate - 1e-5) < 1e-15, "the scheduler starts at 0.01 × lr")

        // docs: MigratingFromPyTorch
        // loss.backward()   -- your backward pass writes the gradients
        try weight.setGradient(.init(repeating: 0.5, count: 32))
        // torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=0.25)
        try GradientClipping.clipByValue([weight], maxValue: 0.25)
        // total_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        let totalNorm = try adamw.clipGradientNorm(maxNorm: 1.0)
        // optimizer.step()
        try adamw.step()
        // scheduler.step()
        try scheduler.step()
        // optimizer.zero_grad()   -- set_to_none=True, PyTorch's default and ours
        adamw.zeroGradients()
        // docs: end
        // clip_grad_value_ clamped 0.5 to 0.25; the norm was taken after it, over 32 elements.
        #expect(abs(totalNorm - (32 * 0.0625).squareRoot()) < 1e-6)
        #expect(scheduler.stepCount == 1 && weight.gradient == nil)
        #expect(try adamw.stepCount(of: weight) == 1)

        // docs: MigratingFromPyTorch
        // state = optimizer.state_dict()
        let state = adamw.snapshot()
        // optimizer.load_state_dict(state)
        try adamw.restore(state)
        // optimizer.state[weight]["exp_avg"]
        let expAvg = try adamw.state(of: weight)["exp_avg"]
        // optimizer.param_groups[0]["lr"] = 3e-4
        try adamw.setLearningRate(3e-4, group: 0)
        // optimizer.param_groups[0]["weight_decay"]
        let weightDecay = try adamw.hyperparameters(group: 0)["weight_decay"]
        // scheduler.state_dict()["last_epoch"]
        let schedulerStep = scheduler.stepCount
        // scheduler.load_state_dict(saved)
        try scheduler.restore(stepCount: schedulerStep)
        // docs: end
        #expect(state == adamw.snapshot())
        #expect(expAvg?.count == 32 && weightDecay == .number(0.01))
        let restoredRate = try adamw.learningRate(group: 0)
        #expect(schedulerStep == 1 && abs(restoredRate - 1e-3 * warmupCosine.multiplier(at: 1)) < 1e-15)

        // docs: MigratingFromPyTorch
        // bitsandbytes.optim.AdamW8bit(params, lr=1e-3)
        let adamw8bit = try AdamW(params, hyperparameters: .init(learningRate: 1e-3, statePrecision: .init(dtype: .int8)))
        // torchao.optim.AdamW4bit(params, lr=1e-3)
        let adamw4bit = try AdamW(params, hyperparameters: .init(learningRate: 1e-3, statePrecision: .init(dtype: .int4)))
        // bitsandbytes.optim.Lion8bit(params, lr=1e-4, min_8bit_size=16384)
        let lion8bit = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: "lion", hyperparameters: [
                "lr": .number(1e-4), "state_dtype": .string("int8"), "min_8bit_size": .number(16384),
            ]),
            parameters: params)
        // weight.grad = gradient.to(torch.bfloat16): pass its 16-bit patterns
        try weight.setGradient(bfloat16: [UInt16](repeating: 0x3F80, count: weight.count))
        // docs: end
        #expect(weight.gradient.map(Array.init) == [Float](repeating: 1, count: 32))
        #expect(try adamw8bit.hyperparameters(group: 0)["state_dtype"] == .string("int8"))
        #expect(try adamw4bit.hyperparameters(group: 0)["state_dtype"] == .string("int4"))
        #expect(try lion8bit.hyperparameters(group: 0)["min_8bit_size"] == .number(16384))
        try adamw4bit.step()
        #expect(try adamw4bit.state(of: weight)["exp_avg"]?.count == 32)  // 32 elements: float32 state

        // docs: MigratingFromPyTorch
        // model.to(torch.bfloat16); torchao.optim.AdamW8bit(params, lr=1e-3, bf16_stochastic_round=True)
        let embedding = try Parameter(name: "embedding", shape: [64, 32], repeating: 0.02)
        embedding.convert(to: .bfloat16)
        let adamwBF16 = try AdamW([embedding], hyperparameters: .init(
            learningRate: 1e-3, statePrecision: .init(dtype: .int8, parameterRounding: .stochastic(seed: 0))))
        // docs: end
        #expect(try adamwBF16.hyperparameters(group: 0)["bf16_stochastic_round"] == .bool(true))
        try embedding.setGradient([Float](repeating: 0.5, count: embedding.count))
        try adamwBF16.step()
        #expect(embedding.dtype == .bfloat16 && BFloat16Parameters.holdsBFloat16(UnsafeBufferPointer(embedding.values)))
        #expect(embedding.valueArray != [Float](repeating: BFloat16Parameters.roundNearest(0.02), count: embedding.count))

        // docs: MigratingFromPyTorch
        // master = [p.float().clone() for p in model_fp32.parameters()]; model.to(torch.bfloat16)
        let projection = try Parameter(name: "projection", shape: [4, 4], repeating: 0.1)
        let float32Weights = projection.valueArray
        projection.convert(to: .bfloat16)
        let mixed = try OptimizerRegistry.makeOptimizer(
            OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(1e-3), "master_weights": .bool(true)]),
            parameters: [projection])
        try mixed.setMasterWeights(float32Weights, of: projection)  // the float32 values, kept whole
        // docs: end
        #expect(try mixed.state(of: projection)["master_weight"] == float32Weights)
        #expect(projection.valueArray != float32Weights && BFloat16Parameters.holdsBFloat16(UnsafeBufferPointer(projection.values)))
    }
}

extension DocumentationExampleTests {
    @Test func choosingAnOptimizer() throws {
        // docs: ChoosingAnOptimizer
        for info in OptimizerRegistry.all where !info.isWrapper {
            let learningRate = info.suggested["lr"].map { "\($0)" } ?? "default"
            print(info.name, "lr", learningRate, "—", info.reference)
        }
        // docs: end
        let listed = OptimizerRegistry.all.filter { !$0.isWrapper }
        #expect(listed.count == OptimizerRegistry.all.count - 1 && listed.allSatisfy { $0.suggested["lr"] != nil })
        #expect(try OptimizerRegistry.info(named: "decoupled_lionw").suggested["lr"] != nil)
    }

    @Test func distributedTraining() throws {
        // docs: DistributedTraining
        @Sendable func train(on communicator: any Communicator, shardState: Bool) throws -> [Float] {
            let weight = try Parameter(name: "fc.weight", shape: [4, 3], repeating: 0.1)
            let bias = try Parameter(name: "fc.bias", shape: [4])
            let model = [weight, bias]

            // Collective: checks that every rank has the same parameters, then broadcasts rank 0's values.
            let dataParallel = try DataParallel(model, communicator: communicator)
            let configuration = OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(1e-2)])
            let optimizer: any Optimizer = shardState
                ? try ShardedOptimizer(configuration, parameters: model, communicator: communicator)
                : try OptimizerRegistry.makeOptimizer(configuration, parameters: model)

            for step in 0..<20 {
                // This rank's gradients, from its share of the global batch (made up here).
                let scale = Float(communicator.rank + 1) * Float(step + 1) / 20
                try weight.setGradient(weight.valueArray.map { ($0 - 1) * scale })
                try bias.setGradient(.init(repeating: scale, count: 4))
                try dataParallel.averageGradients()          // the mean over ranks, on every rank
                try optimizer.clipGradientNorm(maxNorm: 1)   // the global norm, the same on every rank
                try optimizer.step()                         // collective for a ShardedOptimizer
            }
            return weight.valueArray + bias.valueArray
        }
        // docs: end

        // docs: DistributedTraining
        let ranks = try LocalCommunicatorGroup(size: 3)
        let results = ranks.run { communicator in try train(on: communicator, shardState: true) }
        let parameters = try results.map { try $0.get() }   // one array per rank, all the same
        // docs: end
        #expect(parameters.count == 3 && parameters[0].count == 16)
        for rank in parameters { #expect(rank.map(\.bitPattern) == parameters[0].map(\.bitPattern)) }
        // The unsharded optimizer gives the same bits, and the parameters moved.
        let unsharded = try LocalCommunicatorGroup(size: 3).run { communicator in try train(on: communicator, shardState: false) }
        for rank in unsharded { #expect(try rank.get().map(\.bitPattern) == parameters[0].map(\.bitPattern)) }
        #expect(parameters[0][0] != 0.1 && parameters[0][12] != 0)

        // Under MPI (the trait, and a launcher) the article's entry point runs; in a build without
        // the trait, MPIRuntime.world() throws, as the article says.
        func mpiMain() throws {
            // docs: DistributedTraining
            let communicator = try MPIRuntime.world()   // MPI_Init_thread on first use
            try communicator.abortingOnError {           // an error on one rank ends the whole job
                _ = try train(on: communicator, shardState: true)
            }
            try MPIRuntime.finalize()
            // docs: end
        }
        if !MPIRuntime.isAvailable {
            #expect(throws: DistributedError.self) { try mpiMain() }
        } else if MPIRuntime.isLaunchedByMPI {
            try mpiMain()
        }
    }
}

extension DocumentationExampleTests {
    @Test func shardedGradientsArticleExample() throws {
        // docs: DistributedTraining
        @Sendable func trainWithShardedGradients(on communicator: any Communicator) throws -> [Float] {
            let layers = try (0..<4).map { try Parameter(name: "layer\($0).weight", shape: [8, 8], repeating: 0.1) }
            _ = try DataParallel(layers, communicator: communicator)   // the start-up check and broadcast
            let optimizer = try ShardedOptimizer(OptimizerConfiguration(name: "adamw"), parameters: layers,
                                                 communicator: communicator, bucketBytes: 256, stage: .two)
            for step in 0..<10 {
                try optimizer.beginGradientReduction(averaging: true)
                for layer in layers.reversed() {                       // backward: the last layer first
                    try layer.setGradient(layer.valueArray.map { $0 * Float(communicator.rank + step + 1) })
                    optimizer.gradientsReady([layer])                  // its bucket may start now
                }
                try optimizer.finishGradientReduction()                // this rank's shard of the mean
                try optimizer.clipGradientNorm(maxNorm: 1)             // the norm over every rank's shard
                try optimizer.step()                                   // the shard's step, then the allgather
            }
            return layers.flatMap(\.valueArray)
        }
        // docs: end
        let results = try LocalCommunicatorGroup(size: 3).run { try trainWithShardedGradients(on: $0) }.map { try $0.get() }
        for rank in results { #expect(rank.map(\.bitPattern) == results[0].map(\.bitPattern)) }
        // The same run with full gradients averaged by DataParallel and ZeRO-1 (the clipping norm
        // adds in another order: within float rounding).
        let zeroOne = try LocalCommunicatorGroup(size: 3).run { communicator in
            let layers = try (0..<4).map { try Parameter(name: "layer\($0).weight", shape: [8, 8], repeating: 0.1) }
            let dataParallel = try DataParallel(layers, communicator: communicator)
            let optimizer = try ShardedOptimizer(OptimizerConfiguration(name: "adamw"), parameters: layers, communicator: communicator)
            for step in 0..<10 {
                for layer in layers { try layer.setGradient(layer.valueArray.map { $0 * Float(communicator.rank + step + 1) }) }
                try dataParallel.averageGradients()
                try optimizer.clipGradientNorm(maxNorm: 1)
                try optimizer.step()
            }
            return layers.flatMap(\.valueArray)
        }.map { try $0.get() }
        for (a, b) in zip(results[0], zeroOne[0]) { #expect(abs(a - b) <= 1e-6) }
        #expect(results[0][0] != 0.1)
    }

    @Test func optimDistributedLandingPage() throws {
        // docs: OptimDistributed
        let ranks = try LocalCommunicatorGroup(size: 2)
        let results = ranks.run { communicator in
            let weight = try Parameter(name: "w", shape: [8], repeating: 1)
            let dataParallel = try DataParallel([weight], communicator: communicator)
            let optimizer = try ShardedOptimizer(OptimizerConfiguration(name: "adamw"), parameters: [weight], communicator: communicator)
            try weight.setGradient(.init(repeating: Float(communicator.rank + 1), count: 8))
            try dataParallel.averageGradients()
            try optimizer.step()
            return weight.valueArray
        }
        // docs: end
        // Both ranks end with AdamW's first step from 1 (the mean gradient 1.5 only sets the sign).
        let values = try results.map { try $0.get() }
        #expect(values.count == 2 && values[0].map(\.bitPattern) == values[1].map(\.bitPattern))
        #expect(values[0].allSatisfy { abs($0 - (1 - 1e-3 * 0.01 - 1e-3)) < 1e-6 })
    }
}
