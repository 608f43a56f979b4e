import Foundation

/// Prodigy (Mishchenko & Defazio, 2023): Adam whose step size `d` is estimated on the fly from
/// how far the parameters have moved from their starting point — matching prodigyopt's `Prodigy`
/// (1.1.2) step for step.
///
/// `d` is one number for the whole model, so a step is two passes over every parameter with a
/// global update of `d` between them. With `lr` the largest group learning rate, `k` the global
/// step count, `d0` a group's initial estimate, `g` the gradient (plus `λ·p` when decay is
/// coupled), `ĝ`, `p̂`, `p̂₀` every `slice_p`-th element of the gradient, the parameter and the
/// parameter at its first gradient:
/// ```
/// β3 = beta3 ?? √β2;   bc = √(1 − β2^(k+1)) / (1 − β1^(k+1)) if use_bias_correction else 1
/// dlr = d·lr·bc;   r ← β3·r                                     (r: d_numerator)
/// pass 1, groups with lr > 0:
///   r_step += (d/d0)·dlr·⟨ĝ, p̂₀ − p̂⟩                           (float32 dot, summed in Double)
///   m ← β1·m + d(1 − β1)·g;   v ← β2·v + d²(1 − β2)·g²
///   s ← β3·s + (d/d0)·(safeguard_warmup ? d : dlr)·ĝ;   Σ|s| summed in Double
/// if Σ|s| = 0: stop here (the moments are kept; nothing moves; k, d and r stay)
/// r ← r + r_step;   d̂ = d_coef·r / Σ|s|
/// d ← max(d, d̂) if d = d0 (the last group's);   d_max ← max(d_max, d̂);   d ← min(d_max, d·growth_rate)
/// pass 2, every parameter with a gradient (lr-0 groups too; the old dlr, the new d):
///   p ← p − λ·dlr·p                                           if decouple
///   p ← p − dlr · m / (√v + d·ε)      (β1 > 0)      or      p ← p − dlr·d · g / (√v + d·ε)   (β1 = 0)
/// k ← k + 1
/// ```
/// Scalars are computed in Double and rounded to Float where prodigyopt hands a Python float to
/// a float32 tensor; element arithmetic is float32 in the reference's order. The two reductions
/// (the dot products, per group, and Σ|s|) are summed **exactly** (`ExactSum`: every term is a
/// product of two Floats, held in fixed-point limbs) and rounded to Double once, so they depend
/// neither on the thread count nor on where tensors are cut (prodigyopt sums them in float32 per
/// tensor: the difference is far inside the fixtures' tolerances). Both passes run over fixed
/// chunks of each tensor on the thread pool.
///
/// Groups: every group's `lr` must be the largest one or 0 (prodigyopt raises otherwise; here
/// ``step(collectingMetrics:)`` throws before anything changes); at least one group starts with
/// `lr` > 0. `betas`, `beta3`, `use_bias_correction`, `d_coef`, `growth_rate` and `decouple` are
/// read from the first group by the reference, so they are the optimizer's: a group that sets
/// another value is refused. `eps`, `weight_decay`, `safeguard_warmup`, `d0` and `slice_p` may
/// differ per group. `growth_rate` defaults to +∞ (no limit), which JSON cannot hold: in a
/// dictionary it is omitted (or `null`) for +∞. `fsdp_in_use` is accepted only as `false` (its
/// `true` path all-reduces through torch.distributed).
///
/// ZeRO-1: `ShardedOptimizer` takes it. Each rank steps its parts of the tensors, knowing where
/// each part starts (so `s` and `p0` hold the full tensor's every `slice_p`-th element that falls
/// in the part), adds its exact sums, and one allreduce of them per step (a few hundred bytes:
/// the limbs, which add exactly) gives every rank the unsharded sums — so a sharded run equals an
/// unsharded one bit for bit (parameters, gathered state, `d`), and the step returns early on
/// every rank together. Checkpoints move between sharded and unsharded runs and world sizes.
///
/// Defaults: `lr` 1, `betas` (0.9, 0.999), `beta3` null (√β2), `eps` 1e-8, `weight_decay` 0,
/// `decouple` true, `use_bias_correction` false, `safeguard_warmup` false, `d0` 1e-6, `d_coef` 1,
/// `growth_rate` +∞, `slice_p` 1. State per parameter: `exp_avg` (absent when β1 = 0),
/// `exp_avg_sq`, and the `s` and `p0` slices (`⌈n/slice_p⌉` each; `p0` is kept as a slice of
/// zeros where prodigyopt keeps a 0-d zero for an all-zero parameter — the same arithmetic):
/// 16 bytes per parameter at `slice_p` 1 (8 + 8/slice_p in general, 4 less without `exp_avg`);
/// global: `d`, `d_max`, `d_numerator`, `k` (and the last `d_hat`, `d_denom`), all saved in
/// checkpoints. Reference: `prodigyopt.Prodigy` (1.1.2); paper: Mishchenko & Defazio, 2023,
/// "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", arXiv:2306.06101.
public final class Prodigy: TypedOptimizer {
    /// The registry name.
    public static let name = "prodigy"

    /// The keys prodigyopt reads from the first group only: the optimizer's, never a group's.
    public static let globalKeys = ["betas", "beta3", "use_bias_correction", "d_coef", "growth_rate", "decouple", "fsdp_in_use"]

    /// The hyperparameters of Prodigy, under prodigyopt's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// Multiplies the estimated step size; 0 freezes a group's contribution to `d`.
        public var learningRate: Double
        /// `betas`: the decays of the first and second moments (the optimizer's, read from the first group).
        public var betas: Betas
        /// The decay of `d_numerator` and `s`; `nil` for √β2.
        public var beta3: Double?
        /// `eps`: `d·eps` is added to `√v` in the denominator.
        public var eps: Double
        /// `weight_decay`, λ: decoupled with ``decouple``, else `λ·p` added to the gradient.
        public var weightDecay: Double
        /// AdamW-style decay (`p ← p − λ·dlr·p`) rather than `λ·p` added to the gradient.
        public var decouple: Bool
        /// `use_bias_correction`: scale the step by Adam's bias correction
        /// `√(1 − β2^(k+1)) / (1 − β1^(k+1))`.
        public var useBiasCorrection: Bool
        /// Leaves `lr` out of the `s` accumulator (prodigyopt's warm-up safeguard).
        public var safeguardWarmup: Bool
        /// The initial estimate of `d`.
        public var d0: Double
        /// `d_coef`: the factor on the estimate `d̂`.
        public var dCoef: Double
        /// The most `d` may grow in one step, as a factor; +∞ for no limit.
        public var growthRate: Double
        /// `slice_p`: the estimate uses every `slice_p`-th element of each tensor.
        public var sliceP: Int

        /// The hyperparameters; those not written keep the defaults listed on ``Prodigy``.
        public init(learningRate: Double = 1, betas: Betas = Betas(0.9, 0.999), beta3: Double? = nil, eps: Double = 1e-8,
                    weightDecay: Double = 0, decouple: Bool = true, useBiasCorrection: Bool = false, safeguardWarmup: Bool = false,
                    d0: Double = 1e-6, dCoef: Double = 1, growthRate: Double = .infinity, sliceP: Int = 1) {
            self.learningRate = learningRate
            self.betas = betas
            self.beta3 = beta3
            self.eps = eps
            self.weightDecay = weightDecay
            self.decouple = decouple
            self.useBiasCorrection = useBiasCorrection
            self.safeguardWarmup = safeguardWarmup
            self.d0 = d0
            self.dCoef = dCoef
            self.growthRate = growthRate
            self.sliceP = sliceP
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: Prodigy.name)
            let d = Self()
            let betas = try reader.pair("betas", default: d.betas)
            let slice = try reader.number("slice_p", default: Double(d.sliceP))
            guard slice == slice.rounded(), slice >= 1, slice <= Double(Int32.max) else {
                throw Validate.fail(Prodigy.name, "sliceP (slice_p)", slice, "an integer >= 1")
            }
            if try reader.bool("fsdp_in_use", default: false) {
                throw .invalidHyperparameter(optimizer: Prodigy.name, name: "fsdp_in_use", value: "true",
                                             expected: "false: prodigyopt's FSDP path all-reduces through torch.distributed; here ShardedOptimizer refuses prodigy and DataParallel needs no flag")
            }
            self.init(learningRate: try reader.number("lr", default: d.learningRate), betas: betas,
                      beta3: try reader.optionalNumber("beta3", default: d.beta3),
                      eps: try reader.number("eps", default: d.eps),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      decouple: try reader.bool("decouple", default: d.decouple),
                      useBiasCorrection: try reader.bool("use_bias_correction", default: d.useBiasCorrection),
                      safeguardWarmup: try reader.bool("safeguard_warmup", default: d.safeguardWarmup),
                      d0: try reader.number("d0", default: d.d0),
                      dCoef: try reader.number("d_coef", default: d.dCoef),
                      growthRate: try reader.optionalNumber("growth_rate", default: d.growthRate) ?? .infinity,
                      sliceP: Int(slice))
            try reader.finish()
        }

        /// By prodigyopt's names; `growth_rate` is left out when it is +∞ (JSON has no infinity).
        public var dictionary: HyperparameterDictionary {
            var result: HyperparameterDictionary = [
                "lr": .number(learningRate), "betas": betas.value, "beta3": beta3.map { .number($0) } ?? .null, "eps": .number(eps),
                "weight_decay": .number(weightDecay), "decouple": .bool(decouple), "use_bias_correction": .bool(useBiasCorrection),
                "safeguard_warmup": .bool(safeguardWarmup), "d0": .number(d0), "d_coef": .number(dCoef),
                "fsdp_in_use": .bool(false), "slice_p": .number(Double(sliceP)),
            ]
            if growthRate != .infinity { result["growth_rate"] = .number(growthRate) }
            return result
        }

        /// Checks the values; a group's `lr` may be 0 (the optimizer checks that one is > 0).
        public func validate() throws(OptimError) {
            let name = Prodigy.name
            guard learningRate.isFinite, learningRate >= 0 else {
                throw Validate.fail(name, "learningRate (lr)", learningRate, "a finite number >= 0 (and > 0 in at least one group)")
            }
            try Validate.betas(betas, name)
            if let beta3 { try Validate.unitInterval(beta3, "beta3", name) }
            try Validate.epsilon(eps, name)
            try Validate.weightDecay(weightDecay, name)
            guard d0.isFinite, d0 > 0 else { throw Validate.fail(name, "d0", d0, "a finite number > 0") }
            guard dCoef.isFinite, dCoef > 0 else { throw Validate.fail(name, "dCoef (d_coef)", dCoef, "a finite number > 0") }
            guard growthRate > 0 else { throw Validate.fail(name, "growthRate (growth_rate)", growthRate, "a number > 0, or +inf (omitted or null) for no limit") }
            guard sliceP >= 1 else { throw Validate.fail(name, "sliceP (slice_p)", Double(sliceP), "an integer >= 1") }
        }

        /// The values of the keys prodigyopt reads from the first group only.
        var globalValues: [(String, String)] {
            [("betas", betas.description), ("beta3", beta3.map { "\($0)" } ?? "null"), ("use_bias_correction", "\(useBiasCorrection)"),
             ("d_coef", "\(dCoef)"), ("growth_rate", "\(growthRate)"), ("decouple", "\(decouple)")]
        }
    }

    /// One parameter's bookkeeping and state.
    struct Slot {
        let parameter: Parameter
        let group: Int
        /// Where the parameter starts in its full tensor: 0, or its shard's start under ZeRO-1
        /// (the `s`/`p0` slices take the full tensor's every `slice_p`-th element).
        var offset = 0
        var steps = 0
        var gradientScale: Float = 1
        var expAvg: UnsafeMutableBufferPointer<Float>?
        var expAvgSq: UnsafeMutableBufferPointer<Float>?
        var s: UnsafeMutableBufferPointer<Float>?
        var p0: UnsafeMutableBufferPointer<Float>?
        var hasState: Bool { expAvgSq != nil }
    }

    public var name: String { Self.name }
    public var nonFinitePolicy: NonFinitePolicy = .propagate
    public private(set) var skippedSteps = 0
    /// The parameter groups, each with its parameters and hyperparameters (the learning rate in
    /// force included).
    public private(set) var groups: [ParameterGroup<Hyperparameters>]
    /// Each group's initial learning rate (`initial_lr`), to which schedules are relative.
    public private(set) var initialLearningRates: [Double]
    /// The threads both passes run on.
    public let threadPool: ThreadPool
    /// The instruction set the passes' vector loops run with (``KernelDispatch``, chosen when
    /// the optimizer is built).
    public let instructionSet: InstructionSet
    /// The chunk loops on ``instructionSet``.
    let kernels: ProdigyKernels
    var slots: [Slot]
    private let slotIndex: [ObjectIdentifier: Int]

    /// The current step-size estimate.
    public private(set) var d: Double
    /// The largest estimate so far.
    public private(set) var dMax: Double
    /// The ranks whose shards of the parameters this optimizer steps with the others (ZeRO-1,
    /// set by `ShardedOptimizer`): the two sums of pass 1 are all-reduced through it.
    private var communicator: (any Communicator)?

    /// The weighted sum `r` of ⟨g, p0 − p⟩ terms (prodigyopt's `d_numerator`).
    public private(set) var dNumerator = 0.0
    /// The last step's `d̂` and Σ|s| (prodigyopt's `d_hat`, `d_denom`; informational).
    public private(set) var dHat: Double
    /// The last step's Σ|s| (prodigyopt's `d_denom`; informational).
    public private(set) var dDenominator = 0.0
    /// Steps that updated the parameters (prodigyopt's per-group `k`, equal in every group).
    public private(set) var k = 0

    /// Builds Prodigy over groups; checks the hyperparameters, the first-group-only keys, and the
    /// learning-rate rule (each group's lr the largest or 0, the largest > 0).
    public init(groups: [ParameterGroup<Hyperparameters>], threadPool: ThreadPool = .shared) throws(OptimError) {
        try validateParameterLists(groups.map(\.parameters), optimizer: Self.name)
        for group in groups { try group.hyperparameters.validate() }
        let first = groups[0].hyperparameters.globalValues
        for (index, group) in groups.enumerated().dropFirst() {
            for ((key, value), (_, own)) in zip(first, group.hyperparameters.globalValues) where value != own {
                throw .invalidConfiguration("prodigy: group \(index) sets \(key) = \(own), but prodigyopt reads \(key) from the first group only (\(value)); set it for the whole optimizer, not per group")
            }
        }
        let rates = groups.map(\.hyperparameters.learningRate)
        guard let largest = rates.max(), largest > 0 else {
            throw Validate.fail(Self.name, "learningRate (lr)", rates.max() ?? 0, "a finite number > 0 in at least one group (other groups may have 0)")
        }
        try Self.checkLearningRates(rates)
        self.groups = groups
        self.initialLearningRates = rates
        self.threadPool = threadPool
        (kernels, instructionSet) = KernelDispatch.prodigyKernels(on: KernelDispatch.current)
        var slots: [Slot] = []
        for (index, group) in groups.enumerated() {
            for parameter in group.parameters { slots.append(Slot(parameter: parameter, group: index)) }
        }
        self.slots = slots
        self.slotIndex = Dictionary(uniqueKeysWithValues: slots.enumerated().map { (ObjectIdentifier($1.parameter), $0) })
        d = groups[0].hyperparameters.d0
        dMax = d
        dHat = d
        _ = largest
    }

    /// Builds Prodigy over one group.
    public convenience init(_ parameters: [Parameter], hyperparameters: Hyperparameters = .init(), threadPool: ThreadPool = .shared) throws(OptimError) {
        try self.init(groups: [ParameterGroup(parameters, hyperparameters)], threadPool: threadPool)
    }

    deinit {
        for slot in slots { Self.release(slot) }
    }

    private static func release(_ slot: Slot) {
        for buffer in [slot.expAvg, slot.expAvgSq, slot.s, slot.p0] { if let buffer { FloatStorage.deallocate(buffer) } }
    }

    /// prodigyopt's rule: every group's lr is the largest one or 0 (`d` is shared by all groups).
    static func checkLearningRates(_ rates: [Double]) throws(OptimError) {
        let largest = rates.max() ?? 0
        for (index, rate) in rates.enumerated() where rate != largest && rate != 0 {
            throw .invalidConfiguration("prodigy: group \(index) has lr \(HyperparameterValue.format(rate)), but every group's lr must be the largest one (\(HyperparameterValue.format(largest))) or 0, as prodigyopt requires: the step size d is shared by all groups")
        }
    }

    // MARK: Optimizer

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

    /// Sets a group's learning rate (finite, >= 0). The rule that every group's lr is the largest
    /// or 0 is checked when stepping, so a scheduler may set the groups one after another.
    public func setLearningRate(_ learningRate: Double, group: Int) throws(OptimError) {
        try checkGroup(group)
        guard learningRate.isFinite, learningRate >= 0 else {
            throw Validate.fail(Self.name, "learningRate (lr)", learningRate, "a finite number >= 0")
        }
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

    private func slot(of parameter: Parameter) throws(OptimError) -> Int {
        guard let index = slotIndex[ObjectIdentifier(parameter)] else { throw .unknownParameter(name: parameter.name) }
        return index
    }

    public func stepCount(of parameter: Parameter) throws(OptimError) -> Int {
        slots[try slot(of: parameter)].steps
    }

    /// `exp_avg` (when β1 > 0), `exp_avg_sq`, `s` and `p0`; empty before the parameter's first gradient.
    public func state(of parameter: Parameter) throws(OptimError) -> [String: [Float]] {
        Self.buffers(slots[try slot(of: parameter)])
    }

    static func buffers(_ slot: Slot) -> [String: [Float]] {
        var result: [String: [Float]] = [:]
        if let buffer = slot.expAvg { result["exp_avg"] = Array(buffer) }
        if let buffer = slot.expAvgSq { result["exp_avg_sq"] = Array(buffer) }
        if let buffer = slot.s { result["s"] = Array(buffer) }
        if let buffer = slot.p0 { result["p0"] = Array(buffer) }
        return result
    }

    public func scaleNextGradient(of parameter: Parameter, by factor: Float) throws(OptimError) {
        slots[try slot(of: parameter)].gradientScale *= factor
    }

    // MARK: the step

    /// Sums of one chunk of the first pass, exact.
    struct Sums {
        var dot = ExactSum()
        var absolute = ExactSum()
    }

    @discardableResult
    public func step(collectingMetrics: Bool) throws -> OptimizerMetrics? {
        let rates = groups.map(\.hyperparameters.learningRate)
        try Self.checkLearningRates(rates)
        if nonFinitePolicy != .propagate {
            let withGradient = slots.map(\.parameter).filter { $0.gradient != nil }
            let flags = Finiteness.check(withGradient.map { UnsafeBufferPointer($0.gradient!) }, on: threadPool)
            if let bad = flags.firstIndex(of: false) {
                if nonFinitePolicy == .throw { throw OptimError.nonFiniteGradient(parameter: withGradient[bad].name) }
                recordSkippedStep()
                return nil
            }
        }
        let h0 = groups[0].hyperparameters
        let beta1 = h0.betas.first, beta2 = h0.betas.second
        let beta3 = h0.beta3 ?? beta2.squareRoot()
        let lr = rates.max() ?? 0
        let biasCorrection = h0.useBiasCorrection
            ? pow(1 - pow(beta2, Double(k + 1)), 0.5) / (1 - pow(beta1, Double(k + 1))) : 1
        let dlr = d * lr * biasCorrection
        let numerator = dNumerator * beta3
        let keepsMoment = beta1 > 0

        // State at the first gradient.
        for index in slots.indices where slots[index].parameter.gradient != nil && !slots[index].hasState {
            allocateState(index, keepsMoment: keepsMoment)
        }

        // Pass 1: moments, s, and the two sums.
        // Per group (its own d/d0), the exact sum of its dot products; then the exact Σ|s|. Exact
        // sums do not depend on how the tensors are cut, so ZeRO-1 shards give the unsharded d.
        var sums = [ExactSum](repeating: ExactSum(), count: groups.count + 1)
        for index in slots.indices {
            guard let gradient = slots[index].parameter.gradient else { continue }
            let h = groups[slots[index].group].hyperparameters
            let active = h.learningRate > 0
            guard active else { continue }  // lr-0 groups: nothing in this pass but the (local) coupled decay
            let ratio = d / h.d0
            let scalars = FirstPass(coupledDecay: h.decouple ? 0 : Float(h.weightDecay),
                                    beta1: Float(beta1), beta2: Float(beta2), beta3: Float(beta3),
                                    momentScale: Float(d * (1 - beta1)), squareScale: Float(d * d * (1 - beta2)),
                                    sliceScale: Float(ratio * (h.safeguardWarmup ? d : dlr)), sliceP: h.sliceP, keepsMoment: keepsMoment)
            let tensor = firstPass(slots[index], gradient: gradient, scalars)
            sums[slots[index].group].add(tensor.dot)
            sums[groups.count].add(tensor.absolute)
        }
        if let communicator { try ExactSum.allreduce(&sums, communicator: communicator) }
        // Σ (d/d0)·dlr·⟨ĝ, p̂₀ − p̂⟩, group by group.
        var delta = 0.0
        for (group, sum) in zip(groups, sums) where group.hyperparameters.learningRate > 0 {
            delta += d / group.hyperparameters.d0 * dlr * sum.value
        }
        let denominator = sums[groups.count].value

        if denominator == 0 {
            // prodigyopt returns here: the moments were updated, nothing else changes.
            let metrics = collectingMetrics ? unchangedMetrics() : nil
            for index in slots.indices where slots[index].parameter.gradient != nil { slots[index].gradientScale = 1 }
            return metrics
        }
        let globalNumerator = numerator + delta
        let estimate = h0.dCoef * globalNumerator / denominator
        var newD = d, newMax = dMax
        if lr > 0 {
            if newD == groups[groups.count - 1].hyperparameters.d0 { newD = Self.pythonMax(newD, estimate) }
            newMax = Self.pythonMax(newMax, estimate)
            newD = Self.pythonMin(newMax, newD * h0.growthRate)
        }
        (dNumerator, dDenominator, d, dMax, dHat) = (globalNumerator, denominator, newD, newMax, estimate)

        // Pass 2: the update, with the old dlr and the new d.
        var metricSums: [String: ParameterMetricSums] = [:]
        for index in slots.indices {
            guard let gradient = slots[index].parameter.gradient else { continue }
            let h = groups[slots[index].group].hyperparameters
            slots[index].steps += 1
            let decoupled = h.weightDecay != 0 && h.decouple
            let scalars = SecondPass(coupledDecay: h.decouple ? 0 : Float(h.weightDecay),
                                     decoupledDecay: decoupled ? Float(-h.weightDecay * dlr) : nil,
                                     denominatorAdd: Float(newD * h.eps), negativeStep: Float(-dlr), negativeGradientStep: Float(-dlr * newD),
                                     keepsMoment: keepsMoment)
            let total = secondPass(slots[index], gradient: gradient, scalars, collecting: collectingMetrics)
            slots[index].gradientScale = 1
            if collectingMetrics {
                metricSums[slots[index].parameter.name] = ParameterMetricSums(
                    momentSquared: keepsMoment ? total.momentSquared : nil, parameterSquared: total.parameterSquared,
                    updateSquared: total.updateSquared, gradientSquared: total.gradientSquared,
                    updateDotGradient: total.updateDotGradient, momentDotGradient: keepsMoment ? total.momentDotGradient : nil)
            }
        }
        k += 1
        return collectingMetrics ? OptimizerMetrics(sums: metricSums) : nil
    }

    /// The slice indices (of the full tensor) that elements `offset ..< offset + count` hold:
    /// those `J` with `J·slice_p` in that range.
    static func sliceRange(offset: Int, count: Int, sliceP: Int) -> Range<Int> {
        ((offset + sliceP - 1) / sliceP)..<((offset + count + sliceP - 1) / sliceP)
    }

    /// Python's `max(a, b)`: `b` only when `b > a`.
    static func pythonMax(_ a: Double, _ b: Double) -> Double { b > a ? b : a }
    /// Python's `min(a, b)`: `b` only when `b < a`.
    static func pythonMin(_ a: Double, _ b: Double) -> Double { b < a ? b : a }

    private func allocateState(_ index: Int, keepsMoment: Bool) {
        let parameter = slots[index].parameter
        let count = parameter.count, sliceP = groups[slots[index].group].hyperparameters.sliceP, offset = slots[index].offset
        let slices = Self.sliceRange(offset: offset, count: count, sliceP: sliceP), sliced = slices.count
        if keepsMoment {
            let moment = FloatStorage.allocate(count)
            moment.update(repeating: 0)
            slots[index].expAvg = moment
        }
        let square = FloatStorage.allocate(count)
        square.update(repeating: 0)
        let s = FloatStorage.allocate(sliced)
        s.update(repeating: 0)
        let p0 = FloatStorage.allocate(sliced)
        for (j, slice) in slices.enumerated() { p0[j] = parameter.values[slice * sliceP - offset] }
        (slots[index].expAvgSq, slots[index].s, slots[index].p0) = (square, s, p0)
    }

    /// Pass 1 over one tensor, in fixed chunks on the pool: moments, `s`, and the chunk sums
    /// (⟨ĝ, p̂₀ − p̂⟩ and Σ|s|) added in chunk order.
    private func firstPass(_ slot: Slot, gradient: UnsafeMutableBufferPointer<Float>, _ c: FirstPass) -> Sums {
        let p = slot.parameter.values.baseAddress!, g = gradient.baseAddress!
        let m = slot.expAvg?.baseAddress, v = slot.expAvgSq!.baseAddress!, s = slot.s!.baseAddress!, p0 = slot.p0!.baseAddress!
        let scale = slot.gradientScale, sliceP = c.sliceP, offset = slot.offset
        let first = (offset + sliceP - 1) / sliceP  // the first slice index of this (part of the) tensor
        let operands = KernelOperands(parameter: p, gradient: g, state0: m ?? v, state1: v, state2: s, state3: p0,
                                      count: slot.parameter.count, gradientScale: scale)
        let kernels = self.kernels
        let partials = TensorPasses.map(count: slot.parameter.count, pool: threadPool) { range -> Sums in
            @inline(__always) func grad(_ i: Int) -> Float {
                var value = g[i]
                if scale != 1 { value = value * scale }
                if c.coupledDecay != 0 { value = value + c.coupledDecay * p[i] }
                return value
            }
            // The chunk's exact sums, binned by exponent (at most one term per element).
            precondition(range.count <= ExactChunkSum.capacity, "Prodigy: a chunk larger than its exact sums hold")
            var dot = ExactChunkSum(), absolute = ExactChunkSum()
            defer {
                dot.deallocate()
                absolute.deallocate()
            }
            var sums = Sums()
            if sliceP == 1 {
                // Every element is a slice element (the default): the dispatched chunk loops —
                // the exact sums' terms, then the state a vector at a time; the same arithmetic
                // per element as the two loops below.
                kernels.firstPass(operands, c, range, &dot, &absolute)
                dot.foldProducts(into: &sums.dot)
                absolute.foldValues(into: &sums.absolute)
                return sums
            }
            // The slice elements of the range: full-tensor indices J·slice_p in [offset + lower, offset + upper).
            var slice = (offset + range.lowerBound + sliceP - 1) / sliceP
            while slice * sliceP < offset + range.upperBound {
                let i = slice * sliceP - offset, j = slice - first
                let gi = grad(i)
                let difference = p0[j] - p[i]
                dot.addProduct(gi, difference, set: 0)
                let updated = s[j] * c.beta3 + gi * c.sliceScale
                s[j] = updated
                absolute.addValue(abs(updated), set: 0)
                slice += 1
            }
            dot.foldProducts(into: &sums.dot)
            absolute.foldValues(into: &sums.absolute)
            for i in range {
                let gi = grad(i)
                if let m { m[i] = m[i] * c.beta1 + gi * c.momentScale }
                v[i] = v[i] * c.beta2 + c.squareScale * gi * gi
            }
            return sums
        }
        var total = Sums()
        for partial in partials {
            total.dot.add(partial.dot)
            total.absolute.add(partial.absolute)
        }
        return total
    }

    /// Pass 2 over one tensor: decoupled decay and the step; the metric sums when collecting.
    private func secondPass(_ slot: Slot, gradient: UnsafeMutableBufferPointer<Float>, _ c: SecondPass, collecting: Bool) -> MetricAccumulator {
        let p = slot.parameter.values.baseAddress!, g = gradient.baseAddress!
        let m = slot.expAvg?.baseAddress, v = slot.expAvgSq!.baseAddress!
        let scale = slot.gradientScale
        let operands = KernelOperands(parameter: p, gradient: g, state0: m ?? v, state1: v, state2: v, state3: v,
                                      count: slot.parameter.count, gradientScale: scale)
        let kernels = self.kernels
        return TensorPasses.mapReduce(count: slot.parameter.count, pool: threadPool, MetricAccumulator(),
                                      { kernels.secondPass(operands, c, $0, collecting) }, +)
    }

    /// The metrics of a step that stopped after pass 1 (Σ|s| = 0): no parameter moved.
    private func unchangedMetrics() -> OptimizerMetrics {
        var sums: [String: ParameterMetricSums] = [:]
        let keepsMoment = groups[0].hyperparameters.betas.first > 0
        for slot in slots {
            guard let gradient = slot.parameter.gradient else { continue }
            var total = MetricAccumulator()
            for i in 0..<slot.parameter.count {
                let value = slot.parameter.values[i]
                total.add(before: value, after: value, gradient: gradient[i] * slot.gradientScale, moment: slot.expAvg?[i] ?? 0)
            }
            sums[slot.parameter.name] = ParameterMetricSums(
                momentSquared: keepsMoment ? total.momentSquared : nil, parameterSquared: total.parameterSquared,
                updateSquared: 0, gradientSquared: total.gradientSquared, updateDotGradient: 0,
                momentDotGradient: keepsMoment ? total.momentDotGradient : nil)
        }
        return OptimizerMetrics(sums: sums)
    }

    // MARK: checkpoints

    /// The global scalars' names in a snapshot's `wrapper`.
    static let globalStateNames = ["d", "d_max", "d_numerator", "d_hat", "d_denom", "k"]

    public func snapshot() -> OptimizerSnapshot {
        var parameters: [String: OptimizerSnapshot.ParameterState] = [:]
        for slot in slots {
            parameters[slot.parameter.name] = .init(stepCount: slot.steps, buffers: Self.buffers(slot), gradientScale: slot.gradientScale)
        }
        let groupStates = groups.enumerated().map { index, group in
            OptimizerSnapshot.Group(parameterNames: group.parameters.map(\.name), hyperparameters: group.hyperparameters.dictionary,
                                    initialLearningRate: initialLearningRates[index])
        }
        return OptimizerSnapshot(optimizer: Self.name, groups: groupStates, parameters: parameters, skippedSteps: skippedSteps,
                                 wrapper: ["d": d, "d_max": dMax, "d_numerator": dNumerator, "d_hat": dHat, "d_denom": dDenominator, "k": Double(k)])
    }

    /// Restores a snapshot of Prodigy over the same groups of parameters: checks all of it first
    /// (optimizer, groups, hyperparameters, buffers and their lengths, the global scalars) and, on
    /// a mismatch, throws ``OptimError/checkpointMismatch(_:)`` and changes nothing.
    public func restore(_ snapshot: OptimizerSnapshot) throws(OptimError) {
        guard snapshot.optimizer == Self.name else {
            throw .checkpointMismatch("the checkpoint is for optimizer '\(snapshot.optimizer)', not '\(Self.name)'")
        }
        guard snapshot.base == nil else { throw .checkpointMismatch("the checkpoint wraps another optimizer; 'prodigy' does not") }
        guard snapshot.groups.count == groups.count else {
            throw .checkpointMismatch("the checkpoint has \(snapshot.groups.count) parameter group(s), the optimizer \(groups.count)")
        }
        var restored: [ParameterGroup<Hyperparameters>] = []
        for (index, (saved, live)) in zip(snapshot.groups, groups).enumerated() {
            let names = live.parameters.map(\.name)
            guard saved.parameterNames == names else {
                throw .checkpointMismatch("group \(index) holds \(saved.parameterNames) in the checkpoint but \(names) here")
            }
            let parsed = try Hyperparameters(saved.hyperparameters)
            try parsed.validate()
            guard saved.initialLearningRate.isFinite, saved.initialLearningRate >= 0 else {
                throw .checkpointMismatch("group \(index): invalid initial learning rate \(saved.initialLearningRate)")
            }
            restored.append(ParameterGroup(live.parameters, parsed))
        }
        let first = restored[0].hyperparameters.globalValues
        for group in restored.dropFirst() where group.hyperparameters.globalValues.map(\.1) != first.map(\.1) {
            throw .checkpointMismatch("prodigy: the checkpoint's groups disagree on the first-group-only settings")
        }
        var globals: [String: Double] = [:]
        for key in Self.globalStateNames {
            guard let value = snapshot.wrapper[key], value.isFinite else { throw .checkpointMismatch("prodigy: missing or invalid '\(key)'") }
            globals[key] = value
        }
        guard globals["d"]! > 0, globals["d_max"]! > 0, let steps = globals["k"], steps >= 0, steps == steps.rounded(), steps < 1e15,
              Set(snapshot.wrapper.keys) == Set(Self.globalStateNames) else {
            throw .checkpointMismatch("prodigy: invalid global state \(snapshot.wrapper)")
        }
        let live = Set(slots.map(\.parameter.name)), saved = Set(snapshot.parameters.keys)
        if let missing = live.subtracting(saved).sorted().first { throw .checkpointMismatch("the checkpoint has no state for parameter '\(missing)'") }
        if let extra = saved.subtracting(live).sorted().first { throw .checkpointMismatch("the checkpoint has state for '\(extra)', which this optimizer does not hold") }
        let keepsMoment = restored[0].hyperparameters.betas.first > 0
        for slot in slots {
            let state = snapshot.parameters[slot.parameter.name]!
            guard state.stepCount >= 0, state.gradientScale.isFinite, state.scalars.isEmpty else {
                throw .checkpointMismatch("parameter '\(slot.parameter.name)': invalid step count \(state.stepCount), gradient scale or scalar state")
            }
            let count = slot.parameter.count, sliceP = restored[slot.group].hyperparameters.sliceP
            let sliced = Self.sliceRange(offset: slot.offset, count: count, sliceP: sliceP).count
            var expected = ["exp_avg_sq": count, "s": sliced, "p0": sliced]
            if keepsMoment { expected["exp_avg"] = count }
            if state.buffers.isEmpty {
                guard state.stepCount == 0 else { throw .checkpointMismatch("parameter '\(slot.parameter.name)': \(state.stepCount) steps but no state") }
                continue
            }
            guard Set(state.buffers.keys) == Set(expected.keys) else {
                throw .checkpointMismatch("parameter '\(slot.parameter.name)': state buffers \(state.buffers.keys.sorted()), expected \(expected.keys.sorted())")
            }
            for (name, length) in expected where state.buffers[name]!.count != length {
                throw .checkpointMismatch("parameter '\(slot.parameter.name)': buffer '\(name)' holds \(state.buffers[name]!.count) values, expected \(length)")
            }
        }
        guard snapshot.skippedSteps >= 0 else { throw .checkpointMismatch("invalid skipped-step count \(snapshot.skippedSteps)") }

        // Apply; nothing below can fail.
        groups = restored
        initialLearningRates = snapshot.groups.map(\.initialLearningRate)
        (d, dMax, dNumerator, dHat, dDenominator, k) = (globals["d"]!, globals["d_max"]!, globals["d_numerator"]!, globals["d_hat"]!,
                                                        globals["d_denom"]!, Int(globals["k"]!))
        skippedSteps = snapshot.skippedSteps
        for index in slots.indices {
            let state = snapshot.parameters[slots[index].parameter.name]!
            Self.release(slots[index])
            (slots[index].expAvg, slots[index].expAvgSq, slots[index].s, slots[index].p0) = (nil, nil, nil, nil)
            slots[index].steps = state.stepCount
            slots[index].gradientScale = state.gradientScale
            func copy(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
                guard let values = state.buffers[name] else { return nil }
                return values.withUnsafeBufferPointer { FloatStorage.allocate(copying: $0) }
            }
            slots[index].expAvg = copy("exp_avg")
            slots[index].expAvgSq = copy("exp_avg_sq")
            slots[index].s = copy("s")
            slots[index].p0 = copy("p0")
        }
    }
}

extension Prodigy: ShardableOptimizer {
    /// Shardable: `ShardedOptimizer` tells it where its parts lie (``attach(communicator:offsets:)``).
    package var isShardable: Bool { true }

    /// Makes this optimizer one rank's part of a ZeRO-1 Prodigy: `offsets[i]` is where parameter
    /// `i` (a part of a full tensor) starts in that tensor, and the sums of every step are
    /// all-reduced through `communicator`. Called by `ShardedOptimizer` before the first step.
    package func attach(communicator: any Communicator, offsets: [Int]) {
        self.communicator = communicator
        for index in slots.indices { slots[index].offset = offsets[index] }
    }

    /// The part of buffer `name` that this rank's `parameter` (a part starting at `offset` of a
    /// full tensor of `fullCount` elements) holds, and the full buffer's length: the element range
    /// for the moments, the slice range for `s` and `p0`.
    package func bufferRange(_ name: String, of parameter: Parameter, offset: Int, count: Int, fullCount: Int) -> (part: Range<Int>, length: Int) {
        guard name == "s" || name == "p0", let index = slotIndex[ObjectIdentifier(parameter)] else {
            return (offset..<(offset + count), fullCount)
        }
        let sliceP = groups[slots[index].group].hyperparameters.sliceP
        return (Self.sliceRange(offset: offset, count: count, sliceP: sliceP), (fullCount + sliceP - 1) / sliceP)
    }

    package var stateByteCount: Int {
        slots.reduce(0) { total, slot in
            total + [slot.expAvg, slot.expAvgSq, slot.s, slot.p0].reduce(0) { $0 + ($1?.count ?? 0) * MemoryLayout<Float>.stride }
        }
    }

    package func recordSkippedStep() {
        skippedSteps += 1
        for index in slots.indices { slots[index].gradientScale = 1 }
    }
}

extension Prodigy: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        name: name, typeName: "Prodigy",
        reference: .init(library: "prodigyopt", version: "1.1.2", symbol: "prodigyopt.Prodigy",
                         paper: "Mishchenko & Defazio, 2023, \"Prodigy: An Expeditiously Adaptive Parameter-Free Learner\", arXiv:2306.06101"),
        // Not elementwise, but its chunk loops are compiled per instruction set (ProdigyKernels);
        // ZeRO-1 still takes it, since its only whole-model quantities are sums its shards
        // all-reduce (ShardedOptimizer).
        defaults: Hyperparameters().dictionary, isWrapper: false, updatesWholeTensors: true, compiledPerInstructionSet: true,
        suggested: ["lr": .number(1)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(1), "d0": .number(1e-3)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(1)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(1)])),
        benchmark: .init(configuration: .init(name: name),
                         // The defaults: beta1, beta2, beta3 = √β2, lr, d0, d_coef, growth_rate, eps,
                         // weight_decay; global: d = d_max = d0, d_numerator 0, k 0.
                         reference: .globalKernel(symbol: "prodigy", stateBuffers: 4,
                                                  coefficients: [0.9, 0.999, Float(0.999.squareRoot()), 1, 1e-6, 1, .infinity, 1e-8, 0],
                                                  globals: [1e-6, 1e-6, 0, 0])),
        make: { configuration, groups, pool throws(OptimError) in
            if configuration.base != nil { throw .invalidConfiguration("prodigy does not wrap another optimizer; remove 'base'") }
            // prodigyopt's constructor: lr > 0 (a group may override it with 0).
            if case let .number(lr)? = configuration.hyperparameters["lr"] { try Validate.learningRate(lr, name) }
            var built: [ParameterGroup<Hyperparameters>] = []
            for (index, group) in groups.enumerated() {
                if let key = globalKeys.first(where: { group.overrides[$0] != nil }) {
                    throw .invalidConfiguration("prodigy: group \(index) overrides '\(key)', which prodigyopt reads from the first group only; set it for the whole optimizer, not per group")
                }
                built.append(try ParameterGroup(group, over: configuration.hyperparameters))
            }
            return try Prodigy(groups: built, threadPool: pool)
        })
}

/// An exact sum of finite Doubles that are products of two Floats, or Floats (Prodigy's
/// ⟨ĝ, p̂₀ − p̂⟩ terms and |s|): a fixed-point number in 32-bit limbs from 2^-384 up to 2^320,
/// which holds every such term exactly. Its value does not depend on the order of the additions,
/// so sums over tensors cut anywhere (ZeRO-1 shards, thread chunks) agree bit for bit; the
/// rounding to Double happens once, at the end. Non-finite terms are added separately in Double
/// (NaN and ±∞ come through, as in the reference).
struct ExactSum {
    static let limbBits = 32
    static let minimumExponent = -384
    static let limbCount = 22
    /// The limbs, least significant first; after ``normalize()`` all but the last are in [0, 2³²).
    var limbs = InlineArray<22, Int64>(repeating: 0)
    /// Terms that are NaN or ±∞ (or out of range, which products of Floats never are).
    var special = 0.0
    /// Additions since the last normalisation (each limb takes < 2³² per addition).
    private var pending = 0

    /// Adds one term exactly.
    @inline(__always)
    mutating func add(_ x: Double) {
        guard x.isFinite else {
            special += x
            return
        }
        if x == 0 { return }
        let bits = x.bitPattern
        let exponentBits = Int((bits >> 52) & 0x7FF), fraction = bits & ((1 << 52) - 1)
        let mantissa = exponentBits == 0 ? fraction : fraction | (1 << 52)
        let exponent = (exponentBits == 0 ? 1 : exponentBits) - 1075
        let position = exponent - Self.minimumExponent
        let index = position >> 5
        guard position >= 0, index + 2 < Self.limbCount else {
            special += x
            return
        }
        addShifted(UInt64(mantissa), position: position, negative: x < 0)
    }

    /// Adds `value·2^exponent` exactly: `value` an integer sum of terms (``ExactChunkSum``'s
    /// bins), `exponent` at least -298, and `|value|·2^exponent` below 2^271.
    @inline(__always)
    mutating func add(integer value: Int64, exponent: Int) {
        if value == 0 { return }
        let position = exponent - Self.minimumExponent
        precondition(position >= 0 && (position >> 5) + 2 < Self.limbCount, "ExactSum: 2^\(exponent) is out of range")
        addShifted(value.magnitude, position: position, negative: value < 0)
    }

    /// Adds `magnitude·2^(position + minimumExponent)` (or subtracts it), `magnitude` below 2⁶⁴:
    /// 96 bits from limb `position / 32` on.
    @inline(__always)
    private mutating func addShifted(_ magnitude: UInt64, position: Int, negative: Bool) {
        let index = position >> 5
        let shifted = UInt128(magnitude) << (position & 31)
        let mask: UInt128 = 0xFFFF_FFFF
        let low = Int64(shifted & mask), middle = Int64((shifted >> 32) & mask), high = Int64(shifted >> 64)
        // Wrapping arithmetic: no limb can overflow between normalisations (each addition adds
        // less than 2³² to a limb, and normalize() runs every 2³⁰ additions).
        withUnsafeMutablePointer(to: &limbs) { storage in
            storage.withMemoryRebound(to: Int64.self, capacity: Self.limbCount) { limb in  // index + 2 < limbCount: checked above
                if negative {
                    limb[index] &-= low
                    limb[index + 1] &-= middle
                    limb[index + 2] &-= high
                } else {
                    limb[index] &+= low
                    limb[index + 1] &+= middle
                    limb[index + 2] &+= high
                }
            }
        }
        pending &+= 1
        if pending >= 1 << 30 { normalize() }
    }

    /// Adds another exact sum.
    mutating func add(_ other: ExactSum) {
        var other = other
        other.normalize()
        normalize()
        for index in limbs.indices { limbs[index] += other.limbs[index] }
        special += other.special
        normalize()
    }

    /// Propagates the carries: every limb but the last in [0, 2³²) — one representation per value.
    mutating func normalize() {
        for index in 0..<(Self.limbCount - 1) {
            let carry = limbs[index] >> 32
            limbs[index] -= carry << 32
            limbs[index + 1] += carry
        }
        pending = 0
    }

    /// The sum rounded to Double (a function of the exact value only).
    var value: Double {
        var copy = self
        copy.normalize()
        // A negative number is summed as its magnitude (its limbs negated and normalised again),
        // so that the limbs added below are all >= 0 and nothing cancels.
        let negative = copy.limbs[Self.limbCount - 1] < 0
        if negative {
            for index in copy.limbs.indices { copy.limbs[index] = -copy.limbs[index] }
            copy.normalize()
        }
        var result = 0.0
        for index in copy.limbs.indices where copy.limbs[index] != 0 {
            result += Double(copy.limbs[index]) * Double(sign: .plus, exponent: Self.minimumExponent + 32 * index, significand: 1)
        }
        if negative { result = -result }
        return special == 0 ? result : result + special
    }

    /// Adds every rank's sums element by element (one allreduce): normalised limbs are integers
    /// below 2³², so their Double sums over the ranks are exact.
    static func allreduce(_ sums: inout [ExactSum], communicator: any Communicator) throws(DistributedError) {
        let width = limbCount + 1
        var buffer = [Double](repeating: 0, count: sums.count * width)
        for (position, var sum) in sums.enumerated() {
            sum.normalize()
            for index in 0..<limbCount { buffer[position * width + index] = Double(sum.limbs[index]) }
            buffer[position * width + limbCount] = sum.special
        }
        try buffer.withUnsafeMutableBufferPointer { pointer throws(DistributedError) in try communicator.allreduceSum(pointer) }
        for position in sums.indices {
            var sum = ExactSum()
            for index in 0..<limbCount { sum.limbs[index] = Int64(buffer[position * width + index]) }
            sum.special = buffer[position * width + limbCount]
            sum.normalize()
            sums[position] = sum
        }
    }
}

/// The exact sum of one chunk of ``Prodigy``'s terms — products of two Floats
/// (``addProduct(_:_:set:)``) or Floats (``addValue(_:set:)``), at most ``capacity`` of them —
/// kept as one Int64 per binary exponent: a term is its integer mantissa (24 bits, 48 for a
/// product) times a power of two, so adding it is one integer addition into the bin of that
/// power. The optimizer folds the bins into its fixed-point exact sum at the end of the chunk:
/// the same exact value as adding every term to that sum itself, for a fraction of the work.
/// Public for the kernel modules, which compile Prodigy's chunk loops (``ProdigyKernels``).
public struct ExactChunkSum {
    /// Terms per chunk: 2¹⁵ products of 48-bit mantissas stay below 2⁶³ in a bin.
    public static var capacity: Int { 1 << 15 }
    /// Bins per set: the sum of two biased Float exponents (2 ... 508), or one (1 ... 254).
    @inlinable static var binCount: Int { 512 }
    /// Independent sets of bins (a caller spreads consecutive terms over them), so that
    /// additions into the same bin do not wait on each other.
    @inlinable static var sets: Int { 4 }
    @usableFromInline let bins: UnsafeMutablePointer<Int64>
    /// Non-finite terms, added in Double in order (as the fixed-point sum adds them).
    @usableFromInline var special = 0.0

    /// Empty bins (allocated: ``deallocate()`` them).
    public init() {
        bins = .allocate(capacity: Self.binCount * Self.sets)
        bins.initialize(repeating: 0, count: Self.binCount * Self.sets)
    }

    /// Frees the bins.
    public func deallocate() { bins.deallocate() }

    /// A Float as its integer mantissa (with the implicit bit) and its biased exponent (1 for
    /// subnormals): `x = mantissa·2^(exponent − 150)`.
    @inlinable @inline(__always)
    static func parts(_ x: Float) -> (mantissa: Int64, exponent: Int) {
        let bits = x.bitPattern
        let exponent = Int((bits >> 23) & 0xFF), fraction = Int64(bits & 0x7F_FFFF)
        return exponent == 0 ? (fraction, 1) : (fraction | 0x80_0000, exponent)
    }

    /// Adds `a·b` exactly, into bin set `set` (0 ..< 4).
    @inlinable @inline(__always)
    public mutating func addProduct(_ a: Float, _ b: Float, set: Int) {
        let (ma, ea) = Self.parts(a), (mb, eb) = Self.parts(b)
        if ea == 255 || eb == 255 {
            special += Double(a) * Double(b)
            return
        }
        // The sign without a branch (signs are unpredictable): 0 or -1, then (x ^ s) - s.
        let sign = -Int64((a.bitPattern ^ b.bitPattern) >> 31)
        bins[set &* Self.binCount &+ ea &+ eb] &+= ((ma &* mb) ^ sign) &- sign
    }

    /// Adds `a` exactly, into bin set `set` (0 ..< 4).
    @inlinable @inline(__always)
    public mutating func addValue(_ a: Float, set: Int) {
        let (m, e) = Self.parts(a)
        if e == 255 {
            special += Double(a)
            return
        }
        let sign = -Int64(a.bitPattern >> 31)
        bins[set &* Self.binCount &+ e] &+= (m ^ sign) &- sign
    }

    /// Bin offsets of the 16 lanes of a vector: lane `l` goes to set `l mod 4`. The sets only
    /// spread the additions; the exact sum does not depend on which set a term lands in.
    @inlinable @inline(__always) static var laneSets: SIMD16<UInt32> {
        SIMD16<UInt32>(0, 512, 1024, 1536, 0, 512, 1024, 1536, 0, 512, 1024, 1536, 0, 512, 1024, 1536)
    }

    /// The bin that counts the vector lanes holding an infinity or NaN (in set 0; no finite term
    /// reaches it: the exponent sums end at 508). When it is not zero after a chunk, the chunk's
    /// loop adds those lanes' terms to ``special`` in a scalar pass (``takeSpecialLanes()``).
    @usableFromInline static var specialBin: UInt32 { 511 }

    /// Whether a vector method counted a lane holding an infinity or NaN since the last call;
    /// clears the count (the special bins are not terms: they must be empty when folded).
    public func takeSpecialLanes() -> Bool {
        var found = false
        for set in 0..<Self.sets where bins[set * Self.binCount + Int(Self.specialBin)] != 0 {
            bins[set * Self.binCount + Int(Self.specialBin)] = 0
            found = true
        }
        return found
    }

    /// The integer mantissas (with the implicit bit), biased exponents (1 for subnormals) and
    /// non-finite flags (1 where the exponent is 255) of 16 Floats, a vector at a time, in
    /// integer arithmetic only (lane masks would be built lane by lane).
    @_transparent @usableFromInline
    static func parts(_ bits: SIMD16<UInt32>) -> (mantissas: SIMD16<UInt32>, exponents: SIMD16<UInt32>, nonFinite: SIMD16<UInt32>) {
        let exponents = (bits &>> 23) & 0xFF
        let normal = (exponents &+ 0xFF) &>> 8  // 1 unless the exponent is 0
        let mantissas = (bits & 0x7F_FFFF) | (normal &<< 23)
        return (mantissas, exponents | (normal ^ 1), (exponents &+ 1) &>> 8)
    }

    /// `bins[index[l]] += values[l]` for the 16 lanes, written out lane by lane: a loop over a
    /// vector's lanes with a variable subscript is compiled as stores to the stack and a bounds
    /// check per lane.
    @_transparent @usableFromInline
    mutating func scatterAdd(_ index: SIMD16<UInt32>, _ values: SIMD16<Int64>) {
        bins[Int(index[0])] &+= values[0]
        bins[Int(index[1])] &+= values[1]
        bins[Int(index[2])] &+= values[2]
        bins[Int(index[3])] &+= values[3]
        bins[Int(index[4])] &+= values[4]
        bins[Int(index[5])] &+= values[5]
        bins[Int(index[6])] &+= values[6]
        bins[Int(index[7])] &+= values[7]
        bins[Int(index[8])] &+= values[8]
        bins[Int(index[9])] &+= values[9]
        bins[Int(index[10])] &+= values[10]
        bins[Int(index[11])] &+= values[11]
        bins[Int(index[12])] &+= values[12]
        bins[Int(index[13])] &+= values[13]
        bins[Int(index[14])] &+= values[14]
        bins[Int(index[15])] &+= values[15]
    }

    /// Adds the 16 products `a·b` exactly (the padding lanes of a partial vector must be zero in
    /// `a` or `b`: they add 0). The mantissa products, signs and bin indices are computed a
    /// vector at a time; the additions into the bins stay one integer addition per lane. A lane
    /// holding an infinity or NaN adds nothing here: it is counted, for ``takeSpecialLanes()``.
    @_transparent
    public mutating func addProducts(_ a: FloatVector, _ b: FloatVector) {
        let aBits = unsafeBitCast(a, to: SIMD16<UInt32>.self), bBits = unsafeBitCast(b, to: SIMD16<UInt32>.self)
        let (ma, ea, fa) = Self.parts(aBits), (mb, eb, fb) = Self.parts(bBits)
        let special = fa | fb, keep = special &- 1  // keep: all ones for finite lanes
        let product = SIMD16<UInt64>(truncatingIfNeeded: ma) &* SIMD16<UInt64>(truncatingIfNeeded: mb)
        let negative = SIMD16<UInt64>.zero &- SIMD16<UInt64>(truncatingIfNeeded: (aBits ^ bBits) &>> 31)
        let signed = ((product ^ negative) &- negative) & SIMD16<UInt64>(truncatingIfNeeded: SIMD16<Int32>(truncatingIfNeeded: keep))
        let index = ((Self.laneSets &+ ea &+ eb) & keep) | ((special &* Self.specialBin) & ~keep)
        scatterAdd(index, SIMD16<Int64>(truncatingIfNeeded: signed) | SIMD16<Int64>(truncatingIfNeeded: special))
    }

    /// Adds the 16 values `|a|` exactly (padding lanes zero), as ``addProducts(_:_:)`` does
    /// products.
    @_transparent
    public mutating func addMagnitudes(_ a: FloatVector) {
        let bits = unsafeBitCast(a, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF
        let (m, e, special) = Self.parts(bits)
        let keep = special &- 1
        let index = ((Self.laneSets &+ e) & keep) | ((special &* Self.specialBin) & ~keep)
        scatterAdd(index, SIMD16<Int64>(truncatingIfNeeded: (m & keep) | special))
    }

    /// Adds the chunk's products to `sum`; called once, at the end of the chunk.
    func foldProducts(into sum: inout ExactSum) { fold(into: &sum, bias: 300) }

    /// Adds the chunk's values to `sum`; called once, at the end of the chunk.
    func foldValues(into sum: inout ExactSum) { fold(into: &sum, bias: 150) }

    private func fold(into sum: inout ExactSum, bias: Int) {
        for index in 0..<(Self.binCount * Self.sets) where bins[index] != 0 {
            sum.add(integer: bins[index], exponent: index % Self.binCount - bias)
        }
        sum.special += special
    }
}
