/// Lookahead (Zhang et al., 2019, arXiv:1907.08610) around any optimizer, as the paper's Algorithm 1.
///
/// The wrapped ("fast") optimizer steps as usual; every `k` steps each parameter is pulled
/// towards a slow copy and the slow copy catches up:
/// ```
/// fast ← α·fast + (1 − α)·slow;   slow ← fast
/// ```
/// The slow weights start as a copy of the parameters when the wrapper is built, and every
/// parameter of every group is synchronised, with or without a gradient that step.
/// Defaults: `k` 5, `alpha` 0.5. Paper: arXiv:1907.08610.
public final class Lookahead: Optimizer {
    /// Forwards to the wrapped optimizer (schedule-free's mode switch).
    public func train() throws { try base.train() }
    /// Forwards to the wrapped optimizer (schedule-free's mode switch).
    public func eval() throws { try base.eval() }

    /// The registry name.
    public static let name = "lookahead"

    /// The wrapped optimizer.
    public let base: any Optimizer
    /// The paper's defaults, `k` 5 and `alpha` 0.5: the initialiser's and the registry's.
    public static let defaultK = 5
    /// See ``defaultK``.
    public static let defaultAlpha = 0.5

    /// Steps between synchronisations.
    public let k: Int
    /// Weight of the fast weights when synchronising.
    public let alpha: Double
    /// `step()` calls so far (PyTorch's `step_counter`, its name in checkpoints); per-parameter
    /// counts are ``stepCount(of:)``.
    public internal(set) var stepCount = 0
    /// The threads the slow-weight updates run on.
    public let threadPool: ThreadPool

    let tracked: [Parameter]
    var slowWeights: [UnsafeMutableBufferPointer<Float>]
    private var plan = ChunkPlan()

    /// Wraps `base`; throws when `k < 1` or `alpha` is outside [0, 1].
    public init(_ base: any Optimizer, k: Int = Lookahead.defaultK, alpha: Double = Lookahead.defaultAlpha, threadPool: ThreadPool = .shared) throws(OptimError) {
        guard k >= 1 else {
            throw .invalidHyperparameter(optimizer: Self.name, name: "k", value: String(k), expected: "an integer >= 1")
        }
        try Validate.unitInterval(alpha, "alpha", Self.name)
        // Its blend of slow and fast weights is float32 arithmetic on the values.
        try refuseBFloat16(base.parameters, optimizer: Self.name)
        self.base = base
        self.k = k
        self.alpha = alpha
        self.threadPool = threadPool
        self.tracked = base.parameters
        self.slowWeights = tracked.map { FloatStorage.allocate(copying: UnsafeBufferPointer($0.values)) }
        for (index, parameter) in tracked.enumerated() { plan.add(tensor: index, count: parameter.count) }
        _ = syncJob  // made now, so that no step allocates it
    }

    deinit { slowWeights.forEach(FloatStorage.deallocate) }

    public var name: String { Self.name }
    public var parameters: [Parameter] { tracked }
    public var groupCount: Int { base.groupCount }
    public func parameters(group: Int) throws(OptimError) -> [Parameter] { try base.parameters(group: group) }
    public func learningRate(group: Int) throws(OptimError) -> Double { try base.learningRate(group: group) }
    public func setLearningRate(_ learningRate: Double, group: Int) throws(OptimError) {
        try base.setLearningRate(learningRate, group: group)
    }
    public func initialLearningRate(group: Int) throws(OptimError) -> Double { try base.initialLearningRate(group: group) }
    public func hyperparameters(group: Int) throws(OptimError) -> HyperparameterDictionary { try base.hyperparameters(group: group) }
    public func stepCount(of parameter: Parameter) throws(OptimError) -> Int { try base.stepCount(of: parameter) }

    /// The wrapped optimizer's state, plus the parameter's `slow_weights`.
    public func state(of parameter: Parameter) throws(OptimError) -> [String: [Float]] {
        var state = try base.state(of: parameter)
        guard let index = tracked.firstIndex(where: { $0 === parameter }) else { throw .unknownParameter(name: parameter.name) }
        state["slow_weights"] = Array(slowWeights[index])
        return state
    }

    public func scaleNextGradient(of parameter: Parameter, by factor: Float) throws(OptimError) {
        try base.scaleNextGradient(of: parameter, by: factor)
    }

    /// The wrapped optimizer's policy; a step it skips is not counted towards `k`.
    public var nonFinitePolicy: NonFinitePolicy {
        get { base.nonFinitePolicy }
        set { base.nonFinitePolicy = newValue }
    }

    public var skippedSteps: Int { base.skippedSteps }

    /// The wrapped optimizer's (the synchronisation pass, every `k` steps, runs the baseline).
    public var instructionSet: InstructionSet { base.instructionSet }

    /// Steps the wrapped optimizer (its metrics are those returned: the synchronisation every
    /// `k` steps is not part of them), then synchronises every `k` steps.
    @discardableResult
    public func step(collectingMetrics: Bool) throws -> OptimizerMetrics? {
        let skipped = base.skippedSteps
        let metrics = try base.step(collectingMetrics: collectingMetrics)
        guard base.skippedSteps == skipped else { return nil }
        stepCount += 1
        guard stepCount % k == 0 else { return metrics }
        defer { synchronise() }
        return metrics
    }

    private func synchronise() {
        if plan.isParallel(on: threadPool) {
            threadPool.run(threadPool.threadCount, syncJob)
        } else {
            synchronise(nil)
        }
    }

    /// The synchronisation, made once so that steps allocate nothing.
    private lazy var syncJob: (Int) -> Void = { [unowned self] part in self.synchronise(part) }

    /// Synchronises the chunks of part `part` (all of them for `nil`).
    private func synchronise(_ part: Int?) {
        let coefficients = LookaheadSync.Coefficients(alpha: Float(alpha), complement: Float(1 - alpha))
        let range = part.map { plan.items(part: $0, of: threadPool.threadCount) } ?? 0..<plan.items.count
        plan.items.withUnsafeBufferPointer { items in
            for item in items[range] {
                let fast = tracked[item.tensor].values.baseAddress!, slow = slowWeights[item.tensor].baseAddress!
                let operands = KernelOperands(parameter: fast, gradient: slow, state0: slow, state1: slow, state2: slow, state3: slow, count: 0)
                Elementwise.run(LookaheadSync.self, operands, item.range, coefficients)
            }
        }
    }
}

/// The synchronisation pass: `fast ← α·fast + (1 − α)·slow; slow ← fast`; state0 is the slow copy.
enum LookaheadSync: VectorKernel {
    struct Coefficients {
        var alpha: Float
        var complement: Float
    }

    @inline(__always)
    static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let p = before * c.alpha + c.complement * Elementwise.load(o.state0, i, n)
        Elementwise.store(p, o.parameter, i, n)
        Elementwise.store(p, o.state0, i, n)
        return UpdateLanes(before: before, after: p, gradient: FloatVector(), moment: FloatVector())
    }
}

extension Lookahead: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        name: name, typeName: "Lookahead",
        reference: .init(library: "the paper's algorithm", version: "Algorithm 1", symbol: "Lookahead",
                         paper: "Zhang, Lucas, Hinton & Ba, 2019, \"Lookahead Optimizer: k steps forward, 1 step back\", arXiv:1907.08610"),
        defaults: ["k": .number(Double(defaultK)), "alpha": .number(defaultAlpha)], isWrapper: true,
        suggested: [:],
        samples: .init(basic: .init(name: name, hyperparameters: ["k": .number(2)], base: .init(name: "adamw", hyperparameters: ["lr": .number(0.01)])),
                       quadratic: .init(name: name, base: .init(name: "adamw", hyperparameters: ["lr": .number(0.05), "weight_decay": .number(0)])),
                       rosenbrock: .init(name: name, base: .init(name: "adamw", hyperparameters: ["lr": .number(0.02), "weight_decay": .number(0)]))),
        benchmark: .init(configuration: .init(name: name, base: .init(name: "adamw")),
                         reference: .wrapper(sync: "lookahead_sync", every: 5, coefficients: [0.5, 0.5])),
        make: make)

    static func make(_ configuration: OptimizerConfiguration, _ groups: [ParameterGroupConfiguration],
                     _ pool: ThreadPool) throws(OptimError) -> any Optimizer {
        guard let baseConfiguration = configuration.base else {
            throw .invalidConfiguration("lookahead needs a base optimizer to wrap")
        }
        var reader = HyperparameterReader(configuration.hyperparameters, optimizer: Lookahead.name)
        let k = try reader.number("k", default: Double(Lookahead.defaultK))
        let alpha = try reader.number("alpha", default: Lookahead.defaultAlpha)
        try reader.finish()
        guard k.isFinite, k == k.rounded(), k >= 1, k <= Double(Int32.max) else {
            throw .invalidHyperparameter(optimizer: Lookahead.name, name: "k", value: HyperparameterValue.format(k), expected: "an integer >= 1")
        }
        let base = try OptimizerRegistry.makeOptimizer(baseConfiguration, groups: groups, threadPool: pool)
        return try Lookahead(base, k: Int(k), alpha: alpha, threadPool: pool)
    }
}
