/// The element-wise update of one optimizer: its hyperparameters, the state it keeps per
/// parameter, the scalars it derives for each step, and the fused kernel that applies them.
///
/// An optimizer is one `UpdateRule` (one file under `Optimizers/`) plus one registry entry;
/// ``GradientOptimizer`` supplies groups, state, step counts and the parallel multi-tensor loop.
public protocol UpdateRule: Sendable {
    associatedtype Hyperparameters: OptimizerHyperparameters
    /// Per-parameter scalars for one step (step size, bias corrections, decay factor, …).
    associatedtype Coefficients: Sendable

    /// The registry name.
    static var name: String { get }
    /// Names of the state buffers kept per parameter under these hyperparameters (PyTorch's).
    static func stateNames(_ hyperparameters: Hyperparameters) -> [String]
    /// The scalars for a parameter's step number `step` (1 on its first update).
    static func coefficients(_ hyperparameters: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients
    /// Applies the update to elements `range` of `operands`, reading and writing each once.
    static func update(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients)
    /// Logs advice about hyperparameters that are valid but likely mistaken; called when a group
    /// is configured. The default says nothing.
    static func advise(_ hyperparameters: Hyperparameters)
}

extension UpdateRule {
    public static func advise(_ hyperparameters: Hyperparameters) {}
}

/// An optimizer made of an ``UpdateRule``: parameter groups, per-parameter state and step
/// counts, and one fused, vectorised pass per step, chunked across all parameters at once
/// (multi-tensor apply) and spread over a ``ThreadPool``.
///
/// The named optimizers are type aliases of it (``SGD``, ``Adam``, ``Lion``, …).
public final class GradientOptimizer<Rule: UpdateRule>: Optimizer {
    public typealias Hyperparameters = Rule.Hyperparameters

    struct Slot {
        let parameter: Parameter
        let group: Int
        var steps = 0
        var state: [UnsafeMutableBufferPointer<Float>] = []
    }

    struct ActiveTensor {
        var operands: KernelOperands
        var coefficients: Rule.Coefficients
    }

    public var name: String { Rule.name }
    public private(set) var groups: [ParameterGroup<Hyperparameters>]
    public let initialLearningRates: [Double]
    /// The threads the update runs on.
    public let threadPool: ThreadPool

    private var slots: [Slot]
    private var slotIndex: [ObjectIdentifier: Int]
    private var active: [ActiveTensor] = []
    private var plan = ChunkPlan()
    /// A buffer of one float that stands in for state an update rule doesn't keep.
    private let placeholder = FloatStorage.allocate(1)

    /// Builds the optimizer from groups; each group's learning rate is recorded as its initial one.
    public init(groups: [ParameterGroup<Hyperparameters>], threadPool: ThreadPool = .shared) throws(OptimError) {
        try validateParameterLists(groups.map(\.parameters), optimizer: Rule.name)
        for group in groups {
            try group.hyperparameters.validate()
            Rule.advise(group.hyperparameters)
        }
        self.groups = groups
        self.initialLearningRates = groups.map(\.hyperparameters.learningRate)
        self.threadPool = threadPool
        var slots: [Slot] = []
        for (index, group) in groups.enumerated() {
            for parameter in group.parameters { slots.append(Slot(parameter: parameter, group: index)) }
        }
        self.slots = slots
        self.slotIndex = Dictionary(uniqueKeysWithValues: slots.enumerated().map { (ObjectIdentifier($1.parameter), $0) })
    }

    /// Builds the optimizer over one group.
    public convenience init(_ parameters: [Parameter], hyperparameters: Hyperparameters, threadPool: ThreadPool = .shared) throws(OptimError) {
        try self.init(groups: [ParameterGroup(parameters, hyperparameters)], threadPool: threadPool)
    }

    deinit {
        for slot in slots { slot.state.forEach(FloatStorage.deallocate) }
        FloatStorage.deallocate(placeholder)
    }

    public var parameters: [Parameter] { slots.map(\.parameter) }
    public var groupCount: Int { groups.count }

    private func checkGroup(_ group: Int) throws(OptimError) {
        guard groups.indices.contains(group) else { throw .invalidGroup(index: group, groupCount: groups.count) }
    }

    public func parameters(group: Int) throws(OptimError) -> [Parameter] {
        try checkGroup(group)
        return groups[group].parameters
    }

    public func learningRate(group: Int) throws(OptimError) -> Double {
        try checkGroup(group)
        return groups[group].hyperparameters.learningRate
    }

    public func setLearningRate(_ learningRate: Double, group: Int) throws(OptimError) {
        try checkGroup(group)
        try Validate.learningRate(learningRate, Rule.name)
        groups[group].hyperparameters.learningRate = learningRate
    }

    public func initialLearningRate(group: Int) throws(OptimError) -> Double {
        try checkGroup(group)
        return initialLearningRates[group]
    }

    public func hyperparameters(group: Int) throws(OptimError) -> HyperparameterDictionary {
        try checkGroup(group)
        return groups[group].hyperparameters.dictionary
    }

    /// Replaces a group's hyperparameters after validating them; the initial learning rate stays.
    public func setHyperparameters(_ hyperparameters: Hyperparameters, group: Int) throws(OptimError) {
        try checkGroup(group)
        try hyperparameters.validate()
        Rule.advise(hyperparameters)
        groups[group].hyperparameters = hyperparameters
    }

    private func slot(of parameter: Parameter) throws(OptimError) -> Int {
        guard let index = slotIndex[ObjectIdentifier(parameter)] else { throw .unknownParameter(name: parameter.name) }
        return index
    }

    public func stepCount(of parameter: Parameter) throws(OptimError) -> Int {
        slots[try slot(of: parameter)].steps
    }

    public func state(of parameter: Parameter) throws(OptimError) -> [String: [Float]] {
        let slot = slots[try slot(of: parameter)]
        let names = Rule.stateNames(groups[slot.group].hyperparameters)
        var result: [String: [Float]] = [:]
        for (name, buffer) in zip(names, slot.state) { result[name] = Array(buffer) }
        return result
    }

    public func step() throws {
        active.removeAll(keepingCapacity: true)
        plan.reset()
        for index in slots.indices {
            guard let gradient = slots[index].parameter.gradient else { continue }
            let parameter = slots[index].parameter
            let group = slots[index].group
            let hyperparameters = groups[group].hyperparameters
            let stateCount = Rule.stateNames(hyperparameters).count
            while slots[index].state.count < stateCount {
                slots[index].state.append(FloatStorage.allocate(parameter.count))
            }
            slots[index].steps += 1
            let state = slots[index].state
            let operands = KernelOperands(
                parameter: parameter.values.baseAddress!,
                gradient: gradient.baseAddress!,
                state0: state.count > 0 ? state[0].baseAddress! : placeholder.baseAddress!,
                state1: state.count > 1 ? state[1].baseAddress! : placeholder.baseAddress!,
                state2: state.count > 2 ? state[2].baseAddress! : placeholder.baseAddress!,
                count: parameter.count)
            let coefficients = Rule.coefficients(hyperparameters, initialLearningRate: initialLearningRates[group], step: slots[index].steps)
            plan.add(tensor: active.count, count: parameter.count)
            active.append(ActiveTensor(operands: operands, coefficients: coefficients))
        }
        active.withUnsafeBufferPointer { active in
            plan.run(on: threadPool) { tensor, range in
                Rule.update(active[tensor].operands, range, active[tensor].coefficients)
            }
        }
    }
}
