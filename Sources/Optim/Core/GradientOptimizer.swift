import COptimSIMD

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
    /// ``update(_:_:_:)`` that also returns the metric sums of the range, in the same pass.
    static func updateCollecting(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients) -> MetricAccumulator
    /// Whether the optimizer keeps a first moment under these hyperparameters (for the metrics).
    static func keepsMoment(_ hyperparameters: Hyperparameters) -> Bool
    /// Logs advice about hyperparameters that are valid but likely mistaken; called when a group
    /// is configured. The default says nothing.
    static func advise(_ hyperparameters: Hyperparameters)
    /// The state buffers a parameter of `shape` keeps: names and element counts, in order. The
    /// default: every name of ``stateNames(_:)``, each the parameter's size. (Adafactor keeps a
    /// row and a column statistic for a matrix, a full `variance` for a vector.)
    static func stateLayout(_ hyperparameters: Hyperparameters, shape: [Int]) -> [StateBuffer]
    /// Whether the rule updates a whole tensor at a time (reductions over it, matrix products):
    /// then each step calls ``updateTensor(_:shape:_:kernels:pool:collectingMetrics:)`` once per
    /// tensor, on the calling thread, instead of chunking the elements across threads. Default: false.
    static var updatesWholeTensors: Bool { get }
    /// Updates one whole tensor of `shape` (see ``UpdateRule/updatesWholeTensors``); it may run its passes on
    /// `pool`, with `kernels`, the rule's loops compiled for the path the optimizer chose. Returns
    /// the metric sums when `collectingMetrics`. The default runs the elementwise update over the tensor.
    static func updateTensor(_ operands: KernelOperands, shape: [Int], _ coefficients: Coefficients, kernels: RuleKernels<Coefficients>,
                             pool: ThreadPool, collectingMetrics: Bool) -> MetricAccumulator
    /// One chunk of one pass of a ``TensorPassRule`` (the default, for other rules, is never called).
    static func pass(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients, _ pass: TensorPass) -> PassResult
    /// Whether the rule takes only 2-D parameters (Muon); others are refused when the optimizer
    /// is built, naming the parameter. Default: false.
    static var requiresMatrices: Bool { get }
    /// Whether a step over a row-sparse gradient (``Parameter/sparseRows``) visits only its rows,
    /// with ``KernelOperands/rowSparse`` set (``SparseAdam``). Otherwise, the default, the
    /// gradient is stepped as the dense one it also is.
    static var acceptsSparseGradients: Bool { get }
    /// The value each state buffer starts at, in ``stateNames(_:)`` order, when a parameter gets
    /// its state (its first update); empty for all zeros, the default. (Adagrad's `sum` starts at
    /// `initial_accumulator_value`, Rprop's `step_size` at the learning rate.)
    static func initialState(_ hyperparameters: Hyperparameters) -> [Float]
    /// Per-parameter scalars kept as state — torch's 0-dim state tensors (ASGD's `eta` and `mu`,
    /// NAdam's `mu_product`); empty, the default, for none. A rule with scalar state gets its
    /// coefficients from ``coefficients(_:initialLearningRate:step:scalars:)``, once per tensor.
    static func scalarStateNames(_ hyperparameters: Hyperparameters) -> [String]
    /// The scalars' values before a parameter's first update, in ``scalarStateNames(_:)`` order.
    static func initialScalars(_ hyperparameters: Hyperparameters) -> [Float]
    /// The coefficients of a parameter's step number `step`, for a rule with scalar state: reads
    /// and advances the parameter's `scalars`, as the reference does in its step.
    static func coefficients(_ hyperparameters: Hyperparameters, initialLearningRate: Double, step: Int,
                             scalars: inout [Float]) -> Coefficients
    /// Scalar state a parameter group keeps — a per-group step counter (MARS, SOAP), schedule-free's
    /// `k`, `lr_max`, `weight_sum` and mode — advanced once per ``Optimizer/step(collectingMetrics:)``
    /// for every group, whether or not any of its parameters has a gradient; empty, the default,
    /// for none. Checkpoints store it by name.
    static func groupStateNames(_ hyperparameters: Hyperparameters) -> [String]
    /// The group state before the first step, in ``UpdateRule/groupStateNames(_:)`` order (default zeros).
    static func initialGroupState(_ hyperparameters: Hyperparameters) -> [Double]
    /// Refuses a step the group's state does not allow (schedule-free in eval mode); called for
    /// every group before anything changes. The default allows every step.
    static func checkStep(_ hyperparameters: Hyperparameters, groupState: [Double]) throws(OptimError)
    /// Advances a group's state at the start of a step, before any coefficients are computed.
    static func advanceGroup(_ hyperparameters: Hyperparameters, initialLearningRate: Double, state: inout [Double])
    /// The coefficients of a parameter's step number `step` for a rule with group state: `groupState`
    /// is its group's, already advanced for this step. The default ignores it.
    static func coefficients(_ hyperparameters: Hyperparameters, initialLearningRate: Double, step: Int,
                             groupState: [Double], scalars: inout [Float]) -> Coefficients
    /// Fills the state buffers of a parameter at its first update, after they were set to
    /// ``initialState(_:)``; `parameter` holds its values then. The default does nothing.
    /// (Schedule-free's `z` starts as a copy of the parameter.)
    static func initializeState(_ hyperparameters: Hyperparameters, parameter: UnsafeBufferPointer<Float>,
                                state: [UnsafeMutableBufferPointer<Float>])
    /// For a rule whose parameters move between a training and an evaluation point (schedule-free):
    /// records the mode in `groupState` and returns whether the group's parameters must move —
    /// false when the group is in that mode already, and always for other rules (the default).
    static func setMode(training: Bool, _ hyperparameters: Hyperparameters, groupState: inout [Double]) -> Bool
    /// Moves one parameter that has state to the mode ``UpdateRule/setMode(training:_:groupState:)`` just set.
    static func moveParameter(training: Bool, _ hyperparameters: Hyperparameters, groupState: [Double],
                              parameter: UnsafeMutableBufferPointer<Float>, state: [UnsafeMutableBufferPointer<Float>])
    /// The state formats the rule can keep (``StateDType``), chosen per group by the
    /// hyperparameters' ``OptimizerHyperparameters/statePrecision``. Default: float32 only.
    static var stateDTypes: [StateDType] { get }
    /// The map each state buffer is quantized with when its parameter keeps 8-bit state, in
    /// ``stateNames(_:)`` order: ``DynamicQuantizationMap/signed`` for signed state (first
    /// moments), ``DynamicQuantizationMap/unsigned`` for second moments, as bitsandbytes pairs
    /// them. Empty (the default) for a rule without 8-bit state.
    static func quantizationMaps(_ hyperparameters: Hyperparameters) -> [DynamicQuantizationMap]
    /// The map each state buffer is quantized with when its parameter keeps 4-bit state
    /// (``StateDType/int4``), in ``stateNames(_:)`` order; empty (the default) for a rule without.
    static func fourBitMaps(_ hyperparameters: Hyperparameters) -> [FourBitMap]
    /// The update of elements `range` (whole blocks of ``BlockwiseQuantization/blockSize``, the
    /// last possibly partial) of a parameter with 8-bit state: `operands.codes0`/`codes1` hold
    /// the codes and `state0`/`state1` the blocks' absmax. One fused pass per block —
    /// dequantize, update, requantize — with no float32 copy of the state beyond one block.
    /// Returns the metric sums when `collectingMetrics`. Only called for rules whose
    /// ``stateDTypes`` include ``StateDType/int8`` or ``StateDType/int4``; for 4-bit state
    /// ``KernelOperands/packedCodes`` is set and the blocks are of ``FourBitQuantization/blockSize``.
    static func updateQuantized(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients,
                                collectingMetrics: Bool) -> MetricAccumulator
}

extension UpdateRule {
    public static func advise(_ hyperparameters: Hyperparameters) {}
    public static func keepsMoment(_ hyperparameters: Hyperparameters) -> Bool { true }
    public static func initialState(_ hyperparameters: Hyperparameters) -> [Float] { [] }
    public static var acceptsSparseGradients: Bool { false }
    public static func stateLayout(_ hyperparameters: Hyperparameters, shape: [Int]) -> [StateBuffer] {
        let count = shape.reduce(1, *)
        return stateNames(hyperparameters).map { StateBuffer(name: $0, count: count) }
    }
    public static var updatesWholeTensors: Bool { false }
    public static var requiresMatrices: Bool { false }
    public static func updateTensor(_ operands: KernelOperands, shape: [Int], _ coefficients: Coefficients, kernels: RuleKernels<Coefficients>,
                                    pool: ThreadPool, collectingMetrics: Bool) -> MetricAccumulator {
        if collectingMetrics { return kernels.updateCollecting(operands, 0..<operands.count, coefficients) }
        kernels.update(operands, 0..<operands.count, coefficients)
        return MetricAccumulator()
    }
    /// One chunk of one pass: never called for a rule that is not a ``TensorPassRule`` (stops the
    /// program).
    public static func pass(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients, _ pass: TensorPass) -> PassResult {
        preconditionFailure("\(name) is not a TensorPassRule")
    }
    public static func scalarStateNames(_ hyperparameters: Hyperparameters) -> [String] { [] }
    public static func initialScalars(_ hyperparameters: Hyperparameters) -> [Float] { [] }
    public static func coefficients(_ hyperparameters: Hyperparameters, initialLearningRate: Double, step: Int,
                                    scalars: inout [Float]) -> Coefficients {
        coefficients(hyperparameters, initialLearningRate: initialLearningRate, step: step)
    }
    public static func groupStateNames(_ hyperparameters: Hyperparameters) -> [String] { [] }
    public static func initialGroupState(_ hyperparameters: Hyperparameters) -> [Double] {
        Array(repeating: 0, count: groupStateNames(hyperparameters).count)
    }
    public static func checkStep(_ hyperparameters: Hyperparameters, groupState: [Double]) throws(OptimError) {}
    public static func advanceGroup(_ hyperparameters: Hyperparameters, initialLearningRate: Double, state: inout [Double]) {}
    public static func coefficients(_ hyperparameters: Hyperparameters, initialLearningRate: Double, step: Int,
                                    groupState: [Double], scalars: inout [Float]) -> Coefficients {
        coefficients(hyperparameters, initialLearningRate: initialLearningRate, step: step, scalars: &scalars)
    }
    public static func initializeState(_ hyperparameters: Hyperparameters, parameter: UnsafeBufferPointer<Float>,
                                       state: [UnsafeMutableBufferPointer<Float>]) {}
    public static func setMode(training: Bool, _ hyperparameters: Hyperparameters, groupState: inout [Double]) -> Bool { false }
    public static func moveParameter(training: Bool, _ hyperparameters: Hyperparameters, groupState: [Double],
                                     parameter: UnsafeMutableBufferPointer<Float>, state: [UnsafeMutableBufferPointer<Float>]) {}
    public static var stateDTypes: [StateDType] { [.float32] }
    public static func quantizationMaps(_ hyperparameters: Hyperparameters) -> [DynamicQuantizationMap] { [] }
    public static func fourBitMaps(_ hyperparameters: Hyperparameters) -> [FourBitMap] { [] }
    @_transparent
    public static func updateQuantized(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        preconditionFailure("\(name) keeps no 8-bit state")
    }
}

extension UpdateRule {
    /// Whether the rule updates bfloat16 parameters (``ParameterDType/bfloat16``): an elementwise
    /// rule that keeps low-precision state — its new values are rounded chunk by chunk
    /// (``BFloat16Rounding``). Rules over whole tensors or sparse rows update float32 parameters only.
    public static var updatesBFloat16Parameters: Bool {
        !updatesWholeTensors && !acceptsSparseGradients && stateDTypes.contains(.bfloat16)
    }
}

extension UpdateRule where Self: VectorKernel {
    /// Runs the rule's vector kernel over `range` (``Elementwise/run(_:_:_:_:)``).
    @inlinable @inline(__always)
    public static func update(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients) {
        Elementwise.run(Self.self, operands, range, coefficients)
    }

    /// Runs the rule's vector kernel over `range` and returns the metric sums, in the same pass.
    @inlinable @inline(__always)
    public static func updateCollecting(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients) -> MetricAccumulator {
        Elementwise.runCollecting(Self.self, operands, range, coefficients)
    }
}

/// Coefficients with torch.optim's two gradient options (``Elementwise/torchGradient(_:parameter:maximize:l2:)``).
public protocol TorchGradientOptions {
    /// `maximize`: the gradient negated.
    var maximize: Bool { get set }
    /// The L2 term's `weight_decay`, 0 for none.
    var l2: Float { get set }
}

extension UpdateRule where Self: VectorKernel, Coefficients: TorchGradientOptions {
    /// Runs the rule's vector kernel over `range`; without `maximize` and an L2 term (the usual
    /// case) in a copy of the loop where both are constants, so that their tests leave the loop
    /// (LLVM rebuilt the parameter vector lane by lane around them in Adadelta's loop); the same bits.
    @inlinable @inline(__always)
    public static func update(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients) {
        if !coefficients.maximize && coefficients.l2 == 0 {
            var usual = coefficients
            (usual.maximize, usual.l2) = (false, 0)
            Elementwise.run(Self.self, operands, range, usual)
        } else {
            Elementwise.run(Self.self, operands, range, coefficients)
        }
    }
}

/// One state buffer of a parameter: its PyTorch name and element count.
public struct StateBuffer: Sendable, Equatable {
    /// The buffer's PyTorch name (`exp_avg`, …).
    public var name: String
    /// The buffer's element count.
    public var count: Int

    /// A buffer `name` of `count` elements.
    public init(name: String, count: Int) {
        self.name = name
        self.count = count
    }
}

/// What a rule that updates whole tensors (``UpdateRule/updatesWholeTensors``) needs not write:
/// the range-wise update, which the optimizer never calls for it.
public protocol WholeTensorRule: UpdateRule {}

extension WholeTensorRule {
    public static var updatesWholeTensors: Bool { true }
    /// Never called for a whole-tensor rule: stops the program.
    public static func update(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients) {
        preconditionFailure("\(name) updates whole tensors: GradientOptimizer calls updateTensor")
    }
    /// Never called for a whole-tensor rule: stops the program.
    public static func updateCollecting(_ operands: KernelOperands, _ range: Range<Int>, _ coefficients: Coefficients) -> MetricAccumulator {
        preconditionFailure("\(name) updates whole tensors: GradientOptimizer calls updateTensor")
    }
}

/// One parameter's bookkeeping. Deliberately outside the generic class: the class's methods run
/// unspecialised (they are reached through its vtable), and copying a generic-context struct
/// per tensor goes through runtime value witnesses — measured at ~1.5 µs a tensor.
struct Slot {
    let parameter: Parameter
    let group: Int
    var steps = 0
    /// Float32 state buffers; for 8-bit and 4-bit state (``quantized``) the blocks' scales of each buffer;
    /// for bfloat16 state empty slices, one per buffer held (the values are in ``halves``).
    var state: [UnsafeMutableBufferPointer<Float>] = []
    /// The codes of each state buffer when the state is 8-bit (one a byte) or 4-bit (two a byte), else empty.
    var codes: [UnsafeMutableBufferPointer<UInt8>] = []
    /// The bits of each state buffer when the state is bfloat16, else empty.
    var halves: [UnsafeMutableBufferPointer<UInt16>] = []
    /// The format its state is kept in: its group's ``StatePrecision/storage(count:)``.
    var storage = StateDType.float32
    /// Whether its state is quantized (8-bit or 4-bit).
    var quantized: Bool { storage.isQuantized }
    /// The element counts of the state buffers it holds, whatever their format.
    var heldCounts: [Int] {
        switch storage {
        case .float32: state.map(\.count)
        case .bfloat16: halves.map(\.count)
        case .int8: codes.map(\.count)
        case .int4: codes.map { $0.count * 2 }
        }
    }
    /// The state buffers its group's rule keeps for it (``UpdateRule/stateLayout(_:shape:)``).
    var layout: [StateBuffer] = []
    /// Scalar state (``UpdateRule/scalarStateNames(_:)``), empty until the first update.
    var scalars: [Float] = []
    /// The factor on the gradient in the next step (``Optimizer/scaleNextGradient(of:by:)``).
    var gradientScale: Float = 1
    /// The parameter's dtype when the optimizer was built: a step refuses a parameter whose dtype changed.
    var dtype = ParameterDType.float32
    /// What a bfloat16 parameter keeps beside it under its group's rounding
    /// (``BFloat16Rounding/parameterBufferName``): Kahan compensations or master-weight
    /// remainders, one 16-bit value an element; nil until its first update needs it.
    var parameterBuffer: UnsafeMutableBufferPointer<UInt16>?
}

/// A tensor updated this step: its pointers and the index of its coefficients in the step's table.
struct ActiveTensor {
    var operands: KernelOperands
    var coefficients: Int
    var slot: Int
    /// How its new values are rounded after the update: not at all (float32), or to bfloat16.
    var rounding = ParameterRoundingStep.none
    /// How its bfloat16 state is rounded when stored: `.none` for other state, `.nearestEven`, or
    /// stochastically under keys of the state's own domain (``ParameterRoundingStep/state(_:tensor:step:)``).
    var stateRounding = ParameterRoundingStep.none
}

/// The rounding of one bfloat16 parameter in one step (``BFloat16Rounding``).
enum ParameterRoundingStep: Equatable {
    case none
    case nearestEven
    /// Stochastic under `seed`, with the step's keys (``BFloat16Parameters/key(seed:tensor:step:)``).
    case stochastic(seed: UInt64, key0: UInt32, key1: UInt32)
    /// Nearest even with Kahan compensation, the compensation's bfloat16 bits at the pointer (element 0).
    case kahan(UnsafeMutablePointer<UInt16>)
    /// Joined with and split into the float32 master's remainders at the pointer (element 0):
    /// before the update as well as after it.
    case master(UnsafeMutablePointer<Int16>)

    /// The rounding of a parameter of `dtype`; `buffer` is its ``Slot/parameterBuffer`` (the
    /// roundings that keep one have it by the time a step runs).
    init(dtype: ParameterDType, rounding: BFloat16Rounding, tensor: Int, step: Int, buffer: UnsafeMutableBufferPointer<UInt16>?) {
        guard dtype == .bfloat16 else { self = .none; return }
        switch rounding {
        case .nearestEven: self = .nearestEven
        case let .stochastic(seed): self = Self.keyed(seed: seed, tensor: tensor, step: step)
        case .kahanSum: self = .kahan(buffer!.baseAddress!)
        case .masterWeights: self = .master(UnsafeMutableRawPointer(buffer!.baseAddress!).assumingMemoryBound(to: Int16.self))
        }
    }

    /// The rounding of a tensor's bfloat16 state: its random bits come from a seed of their own
    /// (the group's seed mixed with a constant), so they never repeat the parameter's.
    static func state(_ rounding: BFloat16Rounding, tensor: Int, step: Int) -> Self {
        switch rounding {
        case .nearestEven: .nearestEven
        case let .stochastic(seed): keyed(seed: BFloat16Parameters.splitmix64(seed ^ stateDomain), tensor: tensor, step: step)
        case .kahanSum, .masterWeights: .nearestEven  // refused for state (checkRounding)
        }
    }

    /// Mixed into the seed of the state's rounding ("STATE").
    static let stateDomain: UInt64 = 0x53_54_41_54_45

    /// The stochastic keys, nil for no or nearest rounding.
    var keys: (UInt32, UInt32)? {
        guard case let .stochastic(_, key0, key1) = self else { return nil }
        return (key0, key1)
    }

    /// The same rounding at step `step` of tensor `tensor`: stochastic rounding's keys change with the step.
    func at(tensor: Int, step: Int) -> Self {
        guard case let .stochastic(seed, _, _) = self else { return self }
        return Self.keyed(seed: seed, tensor: tensor, step: step)
    }

    private static func keyed(seed: UInt64, tensor: Int, step: Int) -> Self {
        let key = BFloat16Parameters.key(seed: seed, tensor: tensor, step: step)
        return .stochastic(seed: seed, key0: key.0, key1: key.1)
    }
}

/// An optimizer whose steps can reuse the last step's plan of tensors and chunks
/// (``GradientOptimizer``): a switch for the tests.
protocol PlanReusing: AnyObject {
    var reusesPlans: Bool { get set }
}

/// Parameters that share coefficients in a step: same group, same step count.
struct CoefficientKey: Hashable {
    var group: Int
    var steps: Int
}

/// An optimizer made of an ``UpdateRule``: parameter groups, per-parameter state and step
/// counts, and one fused, vectorised pass per step, chunked across all parameters at once
/// (multi-tensor apply) and spread over a ``ThreadPool``.
///
/// The named optimizers are type aliases of it (``SGD``, ``Adam``, ``Lion``, …).
public final class GradientOptimizer<Rule: UpdateRule>: TypedOptimizer, PlanReusing {
    /// The rule's hyperparameters: one value per group.
    public typealias Hyperparameters = Rule.Hyperparameters

    public var name: String { Rule.name }
    /// The registry name, ``UpdateRule/name``.
    public static var name: String { Rule.name }
    public var nonFinitePolicy: NonFinitePolicy = .propagate
    public internal(set) var skippedSteps = 0
    /// The parameter groups, each with its parameters and hyperparameters (the learning rate in
    /// force included).
    public internal(set) var groups: [ParameterGroup<Hyperparameters>]
    /// Each group's initial learning rate (`initial_lr`), to which schedules are relative.
    public internal(set) var initialLearningRates: [Double]
    /// The threads the update runs on.
    public let threadPool: ThreadPool
    /// The instruction set the update's kernels were compiled for, chosen when the optimizer was
    /// built (``KernelDispatch/current``; `baseline` for rules that update whole tensors).
    public let instructionSet: InstructionSet
    /// The update's kernels on ``instructionSet``.
    private let kernels: RuleKernels<Rule.Coefficients>
    /// The bfloat16 state's widening and rounding loops on ``instructionSet``.
    private let bfloat16Conversions: BFloat16State.Conversions

    var slots: [Slot]
    private var slotIndex: [ObjectIdentifier: Int]
    private var active: [ActiveTensor] = []
    private var plan = ChunkPlan()
    /// State storage: one allocation per state buffer for all tensors whose state starts in the
    /// same step, so a step over many small tensors streams through long contiguous runs.
    private var arenas: [UnsafeMutableBufferPointer<Float>] = []
    /// The same for the codes of 8-bit state.
    private var codeArenas: [UnsafeMutableBufferPointer<UInt8>] = []
    /// The same for bfloat16 state.
    private var halfArenas: [UnsafeMutableBufferPointer<UInt16>] = []
    /// Whether each group keeps scalar state (``UpdateRule/scalarStateNames(_:)``).
    var scalarGroups: [Bool]
    /// Each group's own state (``UpdateRule/groupStateNames(_:)``); empty arrays for rules without.
    var groupStates: [[Double]]
    /// Scratch, kept between steps: slots awaiting state.
    private var pending: [Int] = []
    /// The parallel part of a step, made once so that steps allocate nothing.
    private lazy var job: (Int) -> Void = { [unowned self] part in self.runPart(part) }
    /// Metric partial sums, one per chunk, while a step collects them.
    private var metricPartials: [MetricAccumulator] = []
    private var metricOutput: UnsafeMutablePointer<MetricAccumulator>?
    /// Coefficients of this step, one per distinct (group, step count).
    private var coefficientTable: [Rule.Coefficients] = []
    private var coefficientIndex: [CoefficientKey: Int] = [:]
    /// The (group, step count) of each entry of ``coefficientTable``.
    private var coefficientKeys: [CoefficientKey] = []
    /// Whether the step's plan (``active``, ``plan``, ``coefficientKeys``) may be reused by the
    /// next step: false until one is built, and again whenever state is allocated or layouts change.
    private var planValid = false
    /// Per slot, when the plan was made: the gradient's address (nil for none) and the step count
    /// after that step. The next step reuses the plan if every slot still matches, then only step
    /// counts, clipping factors and coefficients change — O(1) per tensor, no hashing or appends.
    private var planGradients: [UnsafeMutablePointer<Float>?] = []
    private var planSteps: [Int] = []
    /// Whether steps may reuse the last step's plan (``PlanReusing``); the tests turn it off to
    /// compare against plans rebuilt every step.
    var reusesPlans = true
    /// A buffer of one float that stands in for state an update rule doesn't keep.
    private let placeholder = FloatStorage.allocate(1)
    /// The same for bfloat16 state.
    private let placeholderHalf = UnsafeMutablePointer<UInt16>.allocate(capacity: 1)
    /// The low-precision kernels' scratch, ``KernelOperands/scratchCount`` floats per part of a
    /// step (one part per thread), so that they allocate nothing per call.
    private let scratch: UnsafeMutablePointer<Float>

    /// Builds the optimizer from groups; each group's learning rate is recorded as its initial one.
    public init(groups: [ParameterGroup<Hyperparameters>], threadPool: ThreadPool = .shared) throws(OptimError) {
        try validateParameterLists(groups.map(\.parameters), optimizer: Rule.name, bfloat16: Rule.updatesBFloat16Parameters)
        for group in groups {
            try group.hyperparameters.validate()
            try Self.checkRounding(group.hyperparameters)
            let dtype = group.hyperparameters.statePrecision.dtype
            guard Rule.stateDTypes.contains(dtype) else {
                throw StatePrecision.unsupported(dtype.rawValue, optimizer: Rule.name, supported: Rule.stateDTypes)
            }
            Rule.advise(group.hyperparameters)
            if Rule.requiresMatrices, let bad = group.parameters.first(where: { $0.shape.count != 2 }) {
                throw OptimError.invalidConfiguration(
                    "\(Rule.name): parameter '\(bad.name)' has shape \(bad.shape); it updates 2-D matrices only — give this parameter to another optimizer (AdamW, as Muon's authors do for biases, norms and embeddings)")
            }
        }
        self.groups = groups
        self.scalarGroups = groups.map { !Rule.scalarStateNames($0.hyperparameters).isEmpty }
        self.groupStates = groups.map { Rule.initialGroupState($0.hyperparameters) }
        self.initialLearningRates = groups.map(\.hyperparameters.learningRate)
        self.threadPool = threadPool
        self.scratch = .allocate(capacity: max(threadPool.threadCount, 1) * KernelOperands.scratchCount)
        (self.kernels, self.instructionSet) = KernelDispatch.kernels(Rule.self, on: KernelDispatch.current)
        self.bfloat16Conversions = KernelDispatch.bfloat16Conversions(on: self.instructionSet)
        var slots: [Slot] = []
        for (index, group) in groups.enumerated() {
            for parameter in group.parameters { slots.append(Slot(parameter: parameter, group: index, dtype: parameter.dtype)) }
        }
        self.slots = slots
        for index in self.slots.indices {
            let hyperparameters = groups[self.slots[index].group].hyperparameters
            self.slots[index].layout = Rule.stateLayout(hyperparameters, shape: self.slots[index].parameter.shape)
            self.slots[index].storage = hyperparameters.statePrecision.storage(count: self.slots[index].parameter.count)
        }
        self.slotIndex = Dictionary(uniqueKeysWithValues: slots.enumerated().map { (ObjectIdentifier($1.parameter), $0) })
    }

    /// Builds the optimizer over one group — PyTorch's `torch.optim.Adam(params, lr=…, betas=…)`
    /// is `Adam(params, hyperparameters: .init(learningRate: …, betas: …))`; the hyperparameters
    /// not written keep the reference defaults.
    public convenience init(_ parameters: [Parameter], hyperparameters: Hyperparameters, threadPool: ThreadPool = .shared) throws(OptimError) {
        try self.init(groups: [ParameterGroup(parameters, hyperparameters)], threadPool: threadPool)
    }

    /// Builds the optimizer over one group with the reference defaults (PyTorch's
    /// `torch.optim.Adam(params)`): the hyperparameters type's own defaults, so they are written
    /// in one place only.
    public convenience init(_ parameters: [Parameter], threadPool: ThreadPool = .shared) throws(OptimError) {
        try self.init(parameters, hyperparameters: try Hyperparameters([:]), threadPool: threadPool)
    }

    deinit {
        arenas.forEach(FloatStorage.deallocate)
        codeArenas.forEach(FloatStorage.deallocate)
        halfArenas.forEach(FloatStorage.deallocate)
        placeholderHalf.deallocate()
        scratch.deallocate()
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
        try Self.checkRounding(hyperparameters)
        guard Rule.stateDTypes.contains(hyperparameters.statePrecision.dtype) else {
            throw StatePrecision.unsupported(hyperparameters.statePrecision.dtype.rawValue, optimizer: Rule.name, supported: Rule.stateDTypes)
        }
        for slot in slots where slot.group == group && hyperparameters.statePrecision.storage(count: slot.parameter.count) != slot.storage {
            guard slot.state.isEmpty else {
                throw .invalidConfiguration("\(Rule.name): these hyperparameters would change parameter '\(slot.parameter.name)''s state from \(slot.storage) to \(hyperparameters.statePrecision.storage(count: slot.parameter.count)), which it already holds; build a new optimizer to change the state dtype. Nothing was changed")
            }
        }
        // State already allocated keeps its sizes: hyperparameters that would resize a buffer a
        // parameter has (SOAP's factor shapes) are refused, with nothing changed.
        for slot in slots where slot.group == group && !slot.state.isEmpty {
            let layout = Rule.stateLayout(hyperparameters, shape: slot.parameter.shape)
            for (buffer, held) in zip(layout, slot.heldCounts) where buffer.count != held {
                throw .invalidConfiguration("\(Rule.name): these hyperparameters would resize parameter '\(slot.parameter.name)''s state '\(buffer.name)' from \(held) to \(buffer.count) values; build a new optimizer to change them. Nothing was changed")
            }
        }
        Rule.advise(hyperparameters)
        if hyperparameters.statePrecision.parameterRounding != groups[group].hyperparameters.statePrecision.parameterRounding {
            // Compensations or remainders of another rounding mean nothing to the new one.
            for index in slots.indices where slots[index].group == group { slots[index].parameterBuffer?.update(repeating: 0) }
        }
        groups[group].hyperparameters = hyperparameters
        refreshLayouts(group: group)
        scalarGroups[group] = !Rule.scalarStateNames(hyperparameters).isEmpty
        if groupStates[group].count != Rule.groupStateNames(hyperparameters).count {
            groupStates[group] = Rule.initialGroupState(hyperparameters)
        }
    }

    /// Refuses a stochastic-rounding seed above ``BFloat16Rounding/largestSeed``, which the
    /// hyperparameter dictionary (and so a checkpoint) could not hold exactly.
    static func checkRounding(_ hyperparameters: Hyperparameters) throws(OptimError) {
        let precision = hyperparameters.statePrecision
        for case let .stochastic(seed) in [precision.parameterRounding, precision.stateRounding] where seed > BFloat16Rounding.largestSeed {
            throw .invalidHyperparameter(optimizer: Rule.name, name: "bf16_rounding_seed", value: String(seed), expected: BFloat16Rounding.seedRange)
        }
        if case let .stochastic(parameterSeed) = precision.parameterRounding, case let .stochastic(stateSeed) = precision.stateRounding,
           parameterSeed != stateSeed {
            throw .invalidHyperparameter(optimizer: Rule.name, name: "bf16_rounding_seed", value: "\(parameterSeed) and \(stateSeed)",
                                         expected: "one seed for the parameters' and the state's stochastic rounding")
        }
        switch precision.stateRounding {
        case .kahanSum, .masterWeights:
            throw .invalidHyperparameter(optimizer: Rule.name, name: "bf16_state_stochastic_round", value: "\(precision.stateRounding)",
                                         expected: "nearest even or stochastic rounding: Kahan compensation and master weights are for parameters")
        case .nearestEven, .stochastic: break
        }
        if precision.stateRounding != .nearestEven && precision.dtype != .bfloat16 {
            throw .invalidHyperparameter(optimizer: Rule.name, name: "bf16_state_stochastic_round", value: "true",
                                         expected: "false unless state_dtype is 'bfloat16' (state_dtype is '\(precision.dtype)')")
        }
    }

    /// Recomputes the state layout of a group's parameters after its hyperparameters changed.
    func refreshLayouts(group: Int) {
        planValid = false
        for index in slots.indices where slots[index].group == group {
            slots[index].layout = Rule.stateLayout(groups[group].hyperparameters, shape: slots[index].parameter.shape)
            slots[index].storage = groups[group].hyperparameters.statePrecision.storage(count: slots[index].parameter.count)
        }
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
        var result: [String: [Float]] = [:]
        for (buffer, values) in zip(slot.layout, floatState(slot)) { result[buffer.name] = values }
        for (name, value) in zip(Rule.scalarStateNames(groups[slot.group].hyperparameters), slot.scalars) { result[name] = [value] }
        if let buffer = slot.parameterBuffer, let name = parameterBufferName(slot) {
            // The float32 masters themselves, or the compensations as floats.
            if name == BFloat16Rounding.masterWeights.parameterBufferName {
                result["master_weight"] = zip(slot.parameter.values, buffer).map { BFloat16Parameters.master(value: $0, remainder: Int16(bitPattern: $1)) }
            } else {
                result[name] = buffer.map(BFloat16State.value)
            }
        }
        return result
    }

    /// A slot's state buffers as float32 values: copies, widened for bfloat16 state, dequantized
    /// for 8-bit and 4-bit state.
    func floatState(_ slot: Slot) -> [[Float]] {
        if slot.storage == .bfloat16 { return slot.halves.map { $0.map(BFloat16State.value) } }
        guard slot.quantized else { return slot.state.map { Array($0) } }
        if slot.storage == .int4 {
            return zip(zip(slot.codes, slot.state), Rule.fourBitMaps(groups[slot.group].hyperparameters)).map { pair, map in
                FourBitQuantization.dequantize(codes: Array(pair.0), scales: Array(pair.1), map: map)
            }
        }
        let maps = Rule.quantizationMaps(groups[slot.group].hyperparameters)
        return zip(zip(slot.codes, slot.state), maps).map { pair, map in
            var values = [Float](repeating: 0, count: pair.0.count)
            values.withUnsafeMutableBufferPointer { BlockwiseQuantization.dequantize(codes: UnsafeBufferPointer(pair.0), absmax: UnsafeBufferPointer(pair.1), map: map, into: $0) }
            return values
        }
    }

    public func scaleNextGradient(of parameter: Parameter, by factor: Float) throws(OptimError) {
        slots[try slot(of: parameter)].gradientScale *= factor
    }

    @discardableResult
    public func step(collectingMetrics: Bool) throws -> OptimizerMetrics? {
        // Through buffer pointers: this method runs unspecialised, and iterating the arrays as
        // collections (zip) allocated a coroutine frame per element — 2 heap allocations a step.
        try groups.withUnsafeBufferPointer { groups throws(OptimError) in
            try groupStates.withUnsafeBufferPointer { states throws(OptimError) in
                for index in 0..<groups.count { try Rule.checkStep(groups[index].hyperparameters, groupState: states[index]) }
            }
        }
        for slot in slots where slot.parameter.dtype != slot.dtype {
            throw OptimError.invalidConfiguration("\(Rule.name): parameter '\(slot.parameter.name)' became \(slot.parameter.dtype) after the optimizer was built over it as \(slot.dtype); build a new optimizer. Nothing was changed")
        }
        if nonFinitePolicy != .propagate, let bad = firstNonFiniteGradient() {
            if nonFinitePolicy == .throw { throw OptimError.nonFiniteGradient(parameter: bad.name) }
            skippedSteps += 1
            for index in slots.indices { slots[index].gradientScale = 1 }
            return nil
        }
        for index in groupStates.indices where !groupStates[index].isEmpty {
            Rule.advanceGroup(groups[index].hyperparameters, initialLearningRate: initialLearningRates[index], state: &groupStates[index])
        }
        // The last step's plan when nothing changed (its tensors have their state already), else
        // state for the parameters that get their first update, and a new plan.
        if !reusePlan() {
            pending.removeAll(keepingCapacity: true)
            for index in slots.indices where slots[index].parameter.gradient != nil && slots[index].state.count < slots[index].layout.count {
                pending.append(index)
            }
            if !pending.isEmpty { allocateState(pending) }
            allocateParameterBuffers()
            buildPlan()
        }
        guard collectingMetrics else {
            metricOutput = nil
            runParts()
            return nil
        }
        metricPartials.removeAll(keepingCapacity: true)
        metricPartials.append(contentsOf: repeatElement(MetricAccumulator(), count: plan.items.count))
        metricPartials.withUnsafeMutableBufferPointer { partials in
            metricOutput = partials.baseAddress
            runParts()
            metricOutput = nil
        }
        return metrics()
    }

    /// Builds the step's plan: for every parameter with a gradient, its step count advanced, its
    /// coefficients (one entry per distinct group and step count) and its pointers, cut into chunks.
    private func buildPlan() {
        // The scratch storage is moved into locals for the loop (and back after): touching class
        // properties per tensor costs a dynamic exclusivity check each time.
        var active = self.active, plan = self.plan, table = self.coefficientTable, index = self.coefficientIndex, keys = self.coefficientKeys
        self.coefficientKeys = []
        keys.removeAll(keepingCapacity: true)
        self.active = []
        self.plan = ChunkPlan()
        self.coefficientTable = []
        self.coefficientIndex = [:]
        active.removeAll(keepingCapacity: true)
        plan.reset()
        table.removeAll(keepingCapacity: true)
        index.removeAll(keepingCapacity: true)
        var lastKey = CoefficientKey(group: -1, steps: -1), lastCoefficients = 0
        let groups = self.groups, initialLearningRates = self.initialLearningRates, placeholder = self.placeholder.baseAddress!
        let scalarGroups = self.scalarGroups, groupStates = self.groupStates
        var noScalars: [Float] = []
        slots.withUnsafeMutableBufferPointer { slots in
            for slot in slots.indices {
                guard let gradient = slots[slot].parameter.gradient else { continue }
                slots[slot].steps += 1
                let key = CoefficientKey(group: slots[slot].group, steps: slots[slot].steps)
                let hyperparameters = groups[key.group].hyperparameters
                if scalarGroups[key.group] {
                    // Scalar state is the parameter's own: coefficients per tensor, not shared.
                    if slots[slot].scalars.isEmpty { slots[slot].scalars = Rule.initialScalars(hyperparameters) }
                    lastCoefficients = table.count
                    keys.append(key)
                    table.append(Rule.coefficients(hyperparameters, initialLearningRate: initialLearningRates[key.group],
                                                   step: key.steps, groupState: groupStates[key.group], scalars: &slots[slot].scalars))
                    lastKey = CoefficientKey(group: -1, steps: -1)
                } else if key != lastKey {
                    if let known = index[key] {
                        lastCoefficients = known
                    } else {
                        lastCoefficients = table.count
                        index[key] = lastCoefficients
                        keys.append(key)
                        table.append(Rule.coefficients(hyperparameters, initialLearningRate: initialLearningRates[key.group], step: key.steps,
                                                       groupState: groupStates[key.group], scalars: &noScalars))
                    }
                    lastKey = key
                }
                let count = gradient.count
                var operands = slots[slot].state.withUnsafeBufferPointer { state in
                    KernelOperands(
                        parameter: slots[slot].parameter.values.baseAddress!,
                        gradient: gradient.baseAddress!,
                        state0: state.count > 0 ? state[0].baseAddress! : placeholder,
                        state1: state.count > 1 ? state[1].baseAddress! : placeholder,
                        state2: state.count > 2 ? state[2].baseAddress! : placeholder,
                        state3: state.count > 3 ? state[3].baseAddress! : placeholder,
                        count: count, gradientScale: slots[slot].gradientScale)
                }
                if slots[slot].quantized {
                    let codes = slots[slot].codes
                    operands.codes0 = codes.count > 0 ? codes[0].baseAddress! : nil
                    operands.codes1 = codes.count > 1 ? codes[1].baseAddress! : nil
                    operands.codes2 = codes.count > 2 ? codes[2].baseAddress! : nil
                    operands.packedCodes = slots[slot].storage == .int4
                } else if slots[slot].storage == .bfloat16 {
                    (operands.state0, operands.state1, operands.state2, operands.state3) = (placeholder, placeholder, placeholder, placeholder)
                    operands.bfloat16State = BFloat16StateBuffers(slots[slot].halves, placeholder: placeholderHalf)
                }
                slots[slot].gradientScale = 1
                if Rule.acceptsSparseGradients, let rows = slots[slot].parameter.sparseRows {
                    // Only the rows the gradient touches, in runs of consecutive rows.
                    var sparse = operands
                    sparse.rowSparse = true
                    let length = slots[slot].parameter.rowLength
                    var start = 0
                    while start < rows.count {
                        var end = start + 1
                        while end < rows.count, rows[end] == rows[end - 1] + 1 { end += 1 }
                        plan.add(tensor: active.count, range: (rows[start] * length)..<(rows[end - 1] * length + length))
                        start = end
                    }
                    active.append(ActiveTensor(operands: sparse, coefficients: lastCoefficients, slot: slot))
                } else {
                    if Rule.updatesWholeTensors {
                        plan.addWhole(tensor: active.count, count: count)
                    } else {
                        plan.add(tensor: active.count, count: count)
                    }
                    let rounding = ParameterRoundingStep(dtype: slots[slot].dtype, rounding: hyperparameters.statePrecision.parameterRounding,
                                                         tensor: slot, step: slots[slot].steps, buffer: slots[slot].parameterBuffer)
                    let stateRounding = slots[slot].storage == .bfloat16
                        ? ParameterRoundingStep.state(hyperparameters.statePrecision.stateRounding, tensor: slot, step: slots[slot].steps) : .none
                    active.append(ActiveTensor(operands: operands, coefficients: lastCoefficients, slot: slot, rounding: rounding,
                                               stateRounding: stateRounding))
                }
            }
        }
        (self.active, self.plan, self.coefficientTable, self.coefficientIndex) = (active, plan, table, index)
        self.coefficientKeys = keys
        recordPlan()
    }

    /// Records what the plan was made from, for ``reusePlan()``.
    private func recordPlan() {
        planGradients.removeAll(keepingCapacity: true)
        planSteps.removeAll(keepingCapacity: true)
        slots.withUnsafeBufferPointer { slots in
            for slot in slots.indices {
                planGradients.append(slots[slot].parameter.gradient?.baseAddress)
                planSteps.append(slots[slot].steps)
            }
        }
        // Sparse gradients change their rows, scalar state its coefficients per tensor: rebuilt each step.
        planValid = !Rule.acceptsSparseGradients && !Rule.updatesWholeTensors && !scalarGroups.contains(true)
    }

    /// Takes this step with the last step's plan if the same parameters have gradients, at the same
    /// addresses, and no step count or state changed since: advances the step counts, moves the
    /// clipping factors into the operands and recomputes the coefficients (each entry's step count
    /// one more). Returns false, changing nothing, when the plan must be rebuilt.
    private func reusePlan() -> Bool {
        guard planValid, reusesPlans else { return false }
        let matches = slots.withUnsafeBufferPointer { slots in
            planGradients.withUnsafeBufferPointer { gradients in
                planSteps.withUnsafeBufferPointer { steps in
                    guard gradients.count == slots.count else { return false }
                    for slot in slots.indices where slots[slot].parameter.gradient?.baseAddress != gradients[slot] || slots[slot].steps != steps[slot] {
                        return false
                    }
                    return true
                }
            }
        }
        guard matches else { return false }
        var active = self.active, steps = self.planSteps
        (self.active, self.planSteps) = ([], [])
        slots.withUnsafeMutableBufferPointer { slots in
            active.withUnsafeMutableBufferPointer { active in
                steps.withUnsafeMutableBufferPointer { steps in
                    for tensor in active.indices {
                        let slot = active[tensor].slot
                        slots[slot].steps += 1
                        steps[slot] = slots[slot].steps
                        active[tensor].operands.gradientScale = slots[slot].gradientScale
                        slots[slot].gradientScale = 1
                        active[tensor].rounding = active[tensor].rounding.at(tensor: slot, step: slots[slot].steps)
                        active[tensor].stateRounding = active[tensor].stateRounding.at(tensor: slot, step: slots[slot].steps)
                    }
                }
            }
        }
        (self.active, self.planSteps) = (active, steps)
        var table = self.coefficientTable, keys = self.coefficientKeys
        (self.coefficientTable, self.coefficientKeys) = ([], [])
        var noScalars: [Float] = []
        for entry in keys.indices {
            keys[entry].steps += 1
            let group = keys[entry].group
            table[entry] = Rule.coefficients(groups[group].hyperparameters, initialLearningRate: initialLearningRates[group], step: keys[entry].steps,
                                             groupState: groupStates[group], scalars: &noScalars)
        }
        (self.coefficientTable, self.coefficientKeys) = (table, keys)
        return true
    }

    private func runParts() {
        if Rule.updatesWholeTensors {
            // One tensor at a time, on this thread; the rule spreads its own passes over the pool.
            for (index, tensor) in active.enumerated() {
                let sums = Rule.updateTensor(tensor.operands, shape: slots[tensor.slot].parameter.shape, coefficientTable[tensor.coefficients], kernels: kernels,
                                             pool: threadPool, collectingMetrics: metricOutput != nil)
                metricOutput?[index] = sums
            }
            return
        }
        if plan.isParallel(on: threadPool) {
            threadPool.run(threadPool.threadCount, job)
        } else {
            runPart(nil)
        }
    }

    /// The metrics of the step just taken, from the per-chunk partial sums added in chunk order.
    private func metrics() -> OptimizerMetrics {
        var perTensor = [MetricAccumulator](repeating: MetricAccumulator(), count: active.count)
        for (item, partial) in zip(plan.items, metricPartials) { perTensor[item.tensor] = perTensor[item.tensor] + partial }
        var sums: [String: ParameterMetricSums] = [:]
        for (tensor, total) in zip(active, perTensor) {
            let slot = slots[tensor.slot]
            let moment = Rule.keepsMoment(groups[slot.group].hyperparameters)
            sums[slot.parameter.name] = ParameterMetricSums(
                momentSquared: moment ? total.momentSquared : nil, parameterSquared: total.parameterSquared,
                updateSquared: total.updateSquared, gradientSquared: total.gradientSquared,
                updateDotGradient: total.updateDotGradient, momentDotGradient: moment ? total.momentDotGradient : nil)
        }
        return OptimizerMetrics(sums: sums)
    }

    /// Updates the chunks of part `part` of the step (all of them for `nil`).
    private func runPart(_ part: Int?) {
        let range = part.map { plan.items(part: $0, of: threadPool.threadCount) } ?? 0..<plan.items.count
        let output = metricOutput, kernels = self.kernels, placeholder = self.placeholder.baseAddress!, conversions = self.bfloat16Conversions
        // This part's own scratch: parts run on different threads at once.
        let scratch = self.scratch + (part ?? 0) * KernelOperands.scratchCount
        plan.items.withUnsafeBufferPointer { items in
            active.withUnsafeBufferPointer { active in
                coefficientTable.withUnsafeBufferPointer { table in
                    guard !range.isEmpty else { return }
                    // This method runs unspecialised: copying a generic `Coefficients` out of the
                    // table goes through its value witness, so it is done only when it changes
                    // (once per group and step count, not per tensor).
                    var current = active[items[range.lowerBound].tensor].coefficients
                    var coefficients = table[current]
                    for index in range {
                        let item = items[index], tensor = active[item.tensor]
                        if index + 1 < range.upperBound {
                            let next = items[index + 1]
                            if next.tensor != item.tensor { Self.prefetchStart(of: active[next.tensor].operands, at: next.range, unused: placeholder) }
                        }
                        if tensor.coefficients != current {
                            current = tensor.coefficients
                            coefficients = table[current]
                        }
                        if case let .master(remainders) = tensor.rounding {
                            // The chunk's float32 master values, which the update steps.
                            conversions.joinMaster(tensor.operands.parameter + item.range.lowerBound, remainders + item.range.lowerBound,
                                                   item.range.count)
                        }
                        if tensor.operands.bfloat16State != nil {
                            var operands = tensor.operands
                            operands.scratch = scratch
                            let sums = BFloat16State.run(operands, item.range, coefficients, kernels: kernels, conversions: conversions,
                                                         stochasticKeys: tensor.stateRounding.keys, collectingMetrics: output != nil)
                            output?[index] = sums
                        } else if tensor.operands.codes0 != nil {
                            // 8-bit or 4-bit state: the blockwise kernel (chunks are whole blocks: 2¹⁵ is a multiple of 256 and 128).
                            var operands = tensor.operands
                            operands.scratch = scratch
                            let sums = kernels.updateQuantized?(operands, item.range, coefficients, output != nil)
                                ?? Rule.updateQuantized(operands, item.range, coefficients, collectingMetrics: output != nil)
                            output?[index] = sums
                        } else if let output {
                            output[index] = kernels.updateCollecting(tensor.operands, item.range, coefficients)
                        } else {
                            kernels.update(tensor.operands, item.range, coefficients)
                        }
                        // A bfloat16 parameter: the chunk's new values rounded while they are in cache.
                        switch tensor.rounding {
                        case .none: break
                        case .nearestEven:
                            conversions.roundNearest(tensor.operands.parameter + item.range.lowerBound, item.range.count)
                        case let .stochastic(_, key0, key1):
                            conversions.roundStochastically(tensor.operands.parameter + item.range.lowerBound, item.range.count,
                                                            item.range.lowerBound, key0, key1)
                        case let .kahan(compensation):
                            conversions.roundCompensated(tensor.operands.parameter + item.range.lowerBound, compensation + item.range.lowerBound,
                                                         item.range.count)
                        case let .master(remainders):
                            conversions.splitMaster(tensor.operands.parameter + item.range.lowerBound, remainders + item.range.lowerBound,
                                                    item.range.count)
                        }
                    }
                }
            }
        }
    }

    /// Cache lines asked for at the start of each stream of the next tensor (``prefetchStart(of:at:unused:)``).
    static var prefetchLines: Int { ChunkPlan.prefetchLines }

    /// Asks for the first cache lines of every stream a tensor's update reads (parameter, gradient,
    /// float32 state other than `unused`, the stand-in for state a rule doesn't keep) from element
    /// `range.lowerBound`, while the tensor before it is updated: the
    /// hardware prefetchers pick up a stream only after its first misses, and a tensor of a few
    /// thousand elements would otherwise start with a miss per stream. A hint, never a fault;
    /// changes no value.
    @inline(__always)
    private static func prefetchStart(of operands: KernelOperands, at range: Range<Int>, unused: UnsafeMutablePointer<Float>) {
        let lines = min(prefetchLines, (range.count + 15) / 16), start = range.lowerBound
        let quantized = operands.codes0 != nil
        for line in 0..<lines {
            let offset = start + line * 16
            optim_prefetch(operands.parameter + offset)
            optim_prefetch(operands.gradient + offset)
            guard !quantized else { continue }
            // Four tests, not a loop over an array: an array literal here could allocate per tensor.
            if operands.state0 != unused { optim_prefetch(operands.state0 + offset) }
            if operands.state1 != unused { optim_prefetch(operands.state1 + offset) }
            if operands.state2 != unused { optim_prefetch(operands.state2 + offset) }
            if operands.state3 != unused { optim_prefetch(operands.state3 + offset) }
        }
    }

    /// The first parameter whose gradient holds NaN or ±Inf, checked in parallel.
    private func firstNonFiniteGradient() -> Parameter? {
        let withGradient = slots.map(\.parameter).filter { $0.gradient != nil }
        let flags = Finiteness.check(withGradient.map { UnsafeBufferPointer($0.gradient!) }, on: threadPool)
        return flags.firstIndex(of: false).map { withGradient[$0] }
    }

    /// Gives each bfloat16 parameter about to be updated the buffer its group's rounding keeps
    /// beside it (``BFloat16Rounding/parameterBufferName``), zero-filled: no compensation yet, a
    /// master equal to the parameter.
    func allocateParameterBuffers() {
        for index in slots.indices where slots[index].dtype == .bfloat16 && slots[index].parameterBuffer == nil
            && slots[index].parameter.gradient != nil
            && groups[slots[index].group].hyperparameters.statePrecision.parameterRounding.parameterBufferName != nil {
            _ = heldParameterBuffer(index)
        }
    }

    /// Slot `index`'s parameter buffer, allocated (zero-filled, kept until the optimizer is freed)
    /// if it has none yet.
    func heldParameterBuffer(_ index: Int) -> UnsafeMutableBufferPointer<UInt16> {
        if let buffer = slots[index].parameterBuffer { return buffer }
        let count = slots[index].parameter.count, buffer = FloatStorage.allocateHalves(count)
        halfArenas.append(buffer)
        slots[index].parameterBuffer = UnsafeMutableBufferPointer(rebasing: buffer[0..<count])
        planValid = false
        return slots[index].parameterBuffer!
    }

    /// The name of the buffer `slot` keeps beside its parameter, nil for none (a float32
    /// parameter, or a rounding without one).
    func parameterBufferName(_ slot: Slot) -> String? {
        slot.dtype == .bfloat16 ? groups[slot.group].hyperparameters.statePrecision.parameterRounding.parameterBufferName : nil
    }

    /// Sets the float32 master weights of a bfloat16 parameter whose group keeps them
    /// (``BFloat16Rounding/masterWeights``): its values become the masters rounded to the nearest
    /// bfloat16 (ties away from zero) and the remainders keep the rest, so the next step starts
    /// from `values` exactly. This is how a run starts bfloat16 training from float32 weights
    /// without losing their low bits (``Parameter/convert(to:)`` rounds them away). Throws,
    /// changing nothing, for an unknown parameter, one without master weights, or a count that
    /// is not the parameter's.
    public func setMasterWeights(_ values: [Float], of parameter: Parameter) throws(OptimError) {
        let index = try slot(of: parameter)
        guard parameterBufferName(slots[index]) == BFloat16Rounding.masterWeights.parameterBufferName else {
            throw .invalidConfiguration("\(Rule.name): parameter '\(parameter.name)' keeps no master weights (it is \(slots[index].dtype), rounded \(groups[slots[index].group].hyperparameters.statePrecision.parameterRounding)); set master_weights true for its group and convert it to bfloat16 first")
        }
        guard values.count == parameter.count else { throw .sizeMismatch(parameter: parameter.name, expected: parameter.count, got: values.count) }
        let remainders = heldParameterBuffer(index)
        for (element, master) in values.enumerated() {
            let (value, remainder) = BFloat16Parameters.split(master: master)
            parameter.values[element] = value
            remainders[element] = UInt16(bitPattern: remainder)
        }
    }

    /// Gives the `pending` slots their missing state buffers, zero-filled, as consecutive
    /// 64-byte-aligned slices of one new allocation per buffer.
    func allocateState(_ pending: [Int]) {
        planValid = false
        let alignment = FloatStorage.alignment / MemoryLayout<Float>.stride
        func padded(_ count: Int) -> Int { (count + alignment - 1) / alignment * alignment }
        var buffer = 0
        while true {
            let needing = pending.filter { slots[$0].state.count <= buffer && buffer < slots[$0].layout.count }
            if needing.isEmpty { break }
            // Quantized state keeps one float (the scale) per block here, its codes in a byte arena;
            // bfloat16 state keeps nothing here, its bits in a 16-bit arena.
            func floatCount(_ index: Int) -> Int {
                let count = slots[index].layout[buffer].count, storage = slots[index].storage
                switch storage {
                case .float32: return count
                case .bfloat16: return 0
                case .int8, .int4: return storage.scaleCount(count: count)
                }
            }
            func codeCount(_ index: Int) -> Int { slots[index].storage.codeBytes(count: slots[index].layout[buffer].count) }
            let arena = FloatStorage.allocate(needing.reduce(0) { $0 + padded(floatCount($1)) })
            arenas.append(arena)
            let quantized = needing.filter { slots[$0].quantized }
            let codeArena = quantized.isEmpty ? nil : FloatStorage.allocateBytes(quantized.reduce(0) { $0 + padded(codeCount($1)) })
            if let codeArena { codeArenas.append(codeArena) }
            let halved = needing.filter { slots[$0].storage == .bfloat16 }
            let halfArena = halved.isEmpty ? nil : FloatStorage.allocateHalves(halved.reduce(0) { $0 + padded(slots[$1].layout[buffer].count) })
            if let halfArena { halfArenas.append(halfArena) }
            var offset = 0, codeOffset = 0, halfOffset = 0
            for index in needing {
                let count = floatCount(index)
                let slice = UnsafeMutableBufferPointer(rebasing: arena[offset..<(offset + count)])
                let initial = Rule.initialState(groups[slots[index].group].hyperparameters)
                // Quantized state starts at zero, as bitsandbytes' and torchao's do (zero codes, zero scales).
                precondition(!slots[index].quantized || buffer >= initial.count || initial[buffer] == 0,
                             "\(Rule.name): quantized state must start at zero")
                if buffer < initial.count, initial[buffer] != 0 { slice.update(repeating: initial[buffer]) }
                slots[index].state.append(slice)
                offset += padded(count)
                if slots[index].storage == .bfloat16, let halfArena {
                    // The initial value rounded to bfloat16, as the state is after every step.
                    let elements = slots[index].layout[buffer].count
                    let halves = UnsafeMutableBufferPointer(rebasing: halfArena[halfOffset..<(halfOffset + elements)])
                    if buffer < initial.count, initial[buffer] != 0 { halves.update(repeating: BFloat16State.bits(initial[buffer])) }
                    slots[index].halves.append(halves)
                    halfOffset += padded(elements)
                }
                if slots[index].quantized, let codeArena {
                    // Zero codes with zero scales: a state of zeros, as bitsandbytes and torchao start it.
                    let elements = codeCount(index)
                    slots[index].codes.append(UnsafeMutableBufferPointer(rebasing: codeArena[codeOffset..<(codeOffset + elements)]))
                    codeOffset += padded(elements)
                }
            }
            buffer += 1
        }
        for index in pending {
            Rule.initializeState(groups[slots[index].group].hyperparameters, parameter: UnsafeBufferPointer(slots[index].parameter.values),
                                 state: slots[index].state)
        }
    }

    /// Puts the parameters at the point for training, as schedule-free's `optimizer.train()`;
    /// nothing for a rule without modes. Idempotent.
    public func train() { switchMode(training: true) }

    /// Puts the parameters at the point for evaluation, as schedule-free's `optimizer.eval()`;
    /// nothing for a rule without modes. Idempotent.
    public func eval() { switchMode(training: false) }

    private func switchMode(training: Bool) {
        for group in groups.indices where Rule.setMode(training: training, groups[group].hyperparameters, groupState: &groupStates[group]) {
            for slot in slots where slot.group == group && !slot.state.isEmpty {
                Rule.moveParameter(training: training, groups[group].hyperparameters, groupState: groupStates[group],
                                   parameter: slot.parameter.values, state: slot.state)
            }
        }
    }
}
