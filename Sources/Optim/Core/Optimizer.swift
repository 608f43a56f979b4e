/// What every optimizer offers: PyTorch's `Optimizer` interface, spelled the Swift way.
///
/// Parameters are organised in groups, each with its own hyperparameters and the learning rate
/// it had when the optimizer was built (``initialLearningRate(group:)``, which decoupled weight
/// decay follows). ``step()`` updates every parameter that has a gradient and skips the rest.
public protocol Optimizer: AnyObject {
    /// The registry name (`"adam"`, `"decoupled_lionw"`, …).
    var name: String { get }
    /// Every parameter, group by group, in the order given.
    var parameters: [Parameter] { get }
    /// The number of parameter groups.
    var groupCount: Int { get }
    /// The parameters of one group.
    func parameters(group: Int) throws(OptimError) -> [Parameter]
    /// A group's current learning rate.
    func learningRate(group: Int) throws(OptimError) -> Double
    /// Sets a group's learning rate, as a scheduler does; the initial learning rate is unchanged.
    func setLearningRate(_ learningRate: Double, group: Int) throws(OptimError)
    /// A group's learning rate when the optimizer was built.
    func initialLearningRate(group: Int) throws(OptimError) -> Double
    /// A group's hyperparameters by PyTorch name.
    func hyperparameters(group: Int) throws(OptimError) -> HyperparameterDictionary
    /// Updates every parameter that has a gradient; with `collectingMetrics`, also returns the
    /// per-parameter optimizer metrics of this step, computed inside the same fused pass.
    /// Returns `nil` without metrics, or when the step was skipped (``NonFinitePolicy/skipStep``).
    @discardableResult
    func step(collectingMetrics: Bool) throws -> OptimizerMetrics?
    /// PyTorch's `step(closure)`: `closure` runs the forward and backward passes (it writes the
    /// gradients) and returns the loss. Most optimizers evaluate it once and step; ``LBFGS``
    /// evaluates it as often as its search needs. Returns the loss of the first evaluation.
    @discardableResult
    func step(closure: () throws -> Float) throws -> Float
    /// How many steps have updated `parameter` (steps where it had no gradient don't count).
    func stepCount(of parameter: Parameter) throws(OptimError) -> Int
    /// Copies of `parameter`'s state buffers by PyTorch name (`exp_avg`, `momentum_buffer`, …);
    /// empty before its first update. A bfloat16 parameter with master weights adds its float32
    /// masters as `master_weight`, one with Kahan compensation its `kahan_comp`.
    func state(of parameter: Parameter) throws(OptimError) -> [String: [Float]]
    /// Multiplies `parameter`'s gradient by `factor` inside the next step's fused pass, with no
    /// pass of its own (gradient clipping by norm uses this); factors multiply until a step
    /// consumes them.
    func scaleNextGradient(of parameter: Parameter, by factor: Float) throws(OptimError)
    /// What a step does when a gradient holds NaN or ±Inf.
    var nonFinitePolicy: NonFinitePolicy { get set }
    /// Steps skipped under ``NonFinitePolicy/skipStep``.
    var skippedSteps: Int { get }
    /// The instruction set its update kernels run with (``KernelDispatch``).
    var instructionSet: InstructionSet { get }
    /// A copy of everything the optimizer holds beyond the parameters' values (for checkpoints).
    func snapshot() -> OptimizerSnapshot
    /// Restores a snapshot of an optimizer of the same kind over the same parameters; checks all
    /// of it first and, on a mismatch, throws and changes nothing.
    func restore(_ snapshot: OptimizerSnapshot) throws(OptimError)
    /// Puts the parameters at the point to train from — schedule-free's `optimizer.train()`, which
    /// moves them from the average x back to y. Optimizers without modes ignore it. Idempotent.
    /// Collective for a `ShardedOptimizer` (it gathers the moved parameters).
    func train() throws
    /// Puts the parameters at the point to evaluate — schedule-free's `optimizer.eval()`, which
    /// moves them to the average x; call ``train()`` before the next step. Optimizers without
    /// modes ignore it. Idempotent. Collective for a `ShardedOptimizer`.
    func eval() throws
    /// Sets the float32 master weights of a bfloat16 parameter whose group keeps them (hyperparameter
    /// `master_weights`, ``BFloat16Rounding/masterWeights``): the parameter's values become them
    /// rounded to bfloat16 and the optimizer keeps the rest, so the next step starts from
    /// `values` exactly. Throws, changing nothing, when the parameter keeps no master weights.
    func setMasterWeights(_ values: [Float], of parameter: Parameter) throws(OptimError)
}

/// What a step does with a gradient that holds NaN or ±Inf.
public enum NonFinitePolicy: String, Sendable, CaseIterable {
    /// Update anyway, as the references do: the non-finite values flow into parameters and state.
    case propagate
    /// Leave every parameter and state buffer untouched, bit for bit, and count a skipped step
    /// (the loss-scaling behaviour of mixed-precision training).
    case skipStep
    /// Throw ``OptimError/nonFiniteGradient(parameter:)`` before touching anything.
    case `throw`
}

extension Optimizer {
    public func train() {}
    public func eval() {}

    /// Refuses: an optimizer that keeps no master weights.
    public func setMasterWeights(_ values: [Float], of parameter: Parameter) throws(OptimError) {
        throw .invalidConfiguration("\(name) keeps no master weights for parameter '\(parameter.name)'")
    }

    /// `baseline` unless the optimizer says otherwise (an optimizer whose update is not made of
    /// dispatched kernels).
    public var instructionSet: InstructionSet { .baseline }

    /// Updates every parameter that has a gradient.
    public func step() throws {
        try step(collectingMetrics: false)
    }

    /// Evaluates `closure` (which typically runs the forward and backward passes), then steps,
    /// and returns the closure's loss — PyTorch's `step(closure)`.
    @discardableResult
    public func step(closure: () throws -> Float) throws -> Float {
        let loss = try closure()
        try step()
        return loss
    }

    /// Clears every parameter's gradient — PyTorch's `optimizer.zero_grad()` (see
    /// ``Parameter/zeroGradient(setToNone:)``, the same for one parameter).
    public func zeroGradients(setToNone: Bool = true) {
        for parameter in parameters { parameter.zeroGradient(setToNone: setToNone) }
    }

    /// Sets every group's learning rate to `factor` times its initial learning rate.
    public func scaleLearningRates(by factor: Double) throws(OptimError) {
        for group in 0..<groupCount {
            try setLearningRate(try initialLearningRate(group: group) * factor, group: group)
        }
    }
}

/// A group of parameters sharing hyperparameters — PyTorch's param group (`{"params": [...],
/// "lr": 1e-3}`), typed.
///
/// Its string-keyed twin is ``ParameterGroupConfiguration`` (overrides by PyTorch name, for the
/// registry); ``init(_:over:)-(ParameterGroupConfiguration,HyperparameterDictionary)`` converts
/// it to this one.
public struct ParameterGroup<Hyperparameters: OptimizerHyperparameters>: Sendable {
    /// The group's parameters.
    public var parameters: [Parameter]
    /// The group's hyperparameters.
    public var hyperparameters: Hyperparameters

    /// A group of `parameters` with `hyperparameters`.
    public init(_ parameters: [Parameter], _ hyperparameters: Hyperparameters) {
        self.parameters = parameters
        self.hyperparameters = hyperparameters
    }

    /// A string-keyed group as a typed one: `base` (by PyTorch name; names it omits take the
    /// reference defaults) with the group's overrides on top, as the registry builds each group
    /// from an ``OptimizerConfiguration``. Throws for an unknown name or a wrongly typed value.
    public init(_ group: ParameterGroupConfiguration, over base: HyperparameterDictionary = [:]) throws(OptimError) {
        self.init(group.parameters, try Hyperparameters(base.merging(group.overrides) { $1 }))
    }

    /// A string-keyed group as a typed one: `base` with the group's overrides on top.
    public init(_ group: ParameterGroupConfiguration, over base: Hyperparameters) throws(OptimError) {
        try self.init(group, over: base.dictionary)
    }

    /// String-keyed groups as typed ones, each over `base` (``init(_:over:)-(ParameterGroupConfiguration,Hyperparameters)``).
    static func groups(_ groups: [ParameterGroupConfiguration], over base: Hyperparameters) throws(OptimError) -> [Self] {
        var result: [Self] = []
        for group in groups { result.append(try Self(group, over: base)) }
        return result
    }
}

/// An optimizer whose hyperparameters are a Swift type and which is built from typed groups:
/// every ``GradientOptimizer`` (``Adam``, ``SGD``, ``Lion``, …) and ``Prodigy``.
///
/// What takes an ``OptimizerConfiguration`` (the registry's string-keyed form) takes such an
/// optimizer type and its typed hyperparameters too: ``OptimizerConfiguration/init(_:hyperparameters:)``,
/// `ShardedOptimizer.init(_:groups:communicator:bucketBytes:threadPool:)`.
public protocol TypedOptimizer: Optimizer {
    /// The hyperparameters of one group.
    associatedtype Hyperparameters: OptimizerHyperparameters
    /// The registry name, the same as every instance's ``Optimizer/name``.
    static var name: String { get }
    /// Builds the optimizer from groups; each group's learning rate is recorded as its initial one.
    init(groups: [ParameterGroup<Hyperparameters>], threadPool: ThreadPool) throws(OptimError)
}

/// Checks that groups are non-empty, no parameter (or name) appears twice, and — unless the
/// optimizer updates bfloat16 parameters (`bfloat16`) — that every parameter is float32.
package func validateParameterLists(_ lists: [[Parameter]], optimizer: String, bfloat16: Bool = false) throws(OptimError) {
    guard !lists.isEmpty, lists.allSatisfy({ !$0.isEmpty }) else { throw .emptyParameterList(optimizer: optimizer) }
    var names = Set<String>()
    for parameter in lists.joined() where !names.insert(parameter.name).inserted {
        throw .duplicateParameter(name: parameter.name)
    }
    if !bfloat16 { try refuseBFloat16(lists.joined(), optimizer: optimizer) }
}

/// Refuses the first parameter that is not float32, for an optimizer that updates float32
/// parameters only: one line naming it and the optimizers that take bfloat16 parameters.
package func refuseBFloat16(_ parameters: some Sequence<Parameter>, optimizer: String) throws(OptimError) {
    guard let low = parameters.first(where: { $0.dtype != .float32 }) else { return }
    let offering = OptimizerRegistry.all.filter(\.updatesBFloat16Parameters).map(\.name).joined(separator: ", ")
    throw .invalidConfiguration("\(optimizer): parameter '\(low.name)' is \(low.dtype); \(optimizer) updates float32 parameters only (bfloat16 parameters: \(offering))")
}
