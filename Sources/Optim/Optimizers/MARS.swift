import Foundation

/// MARS (Yuan et al., 2024): a variance-reduced momentum — the gradient corrected by how much it
/// changed since the last step, clipped to norm 1 — fed to AdamW, Lion or Shampoo-style
/// (Newton–Schulz) updates, matching pytorch-optimizer's `MARS` step for step.
///
/// With `t` the **group's** step (advanced at every ``GradientOptimizer/step(collectingMetrics:)``,
/// also for parameters without a gradient, and used for every bias correction), `g` the gradient
/// (negated with `maximize`) and `g₋` the one stored at the parameter's previous update (0 at
/// first), a parameter with two or more dimensions — every parameter with `optimize_1d` — takes
/// the MARS path with `lr`, `betas`, `weight_decay`:
/// ```
/// c = (g − g₋)·(γ·β1/(1 − β1)) + g;   c ← c/‖c‖ if ‖c‖ > 1   (Frobenius norm of the tensor)
/// m ← lerp(m, c, 1 − β1);   u = m, and with cautious u ← u·[u·g > 0]·(numel/(#[u·g > 0] + 1))
/// "adamw":   v ← β2·v + (1 − β2)·c²   (v̂ = max(v̂, v) with ams_bound, used in place of v)
///            u ← u / ((√(v + 1e-15) + ε) / √(1 − β2ᵗ) · (1 − β1ᵗ))
/// "lion":    u ← sign(u)
/// "shampoo": u ← NS₅(u/(1 − β1))·√max(1, R/C)   (matrices; other shapes as "adamw")
/// ```
/// and any other parameter the AdamW path with `betas_1d`, `weight_decay_1d` and the learning
/// rate `lr·(lr_1d/lr₀)`: `m ← lerp(m, g, 1 − β1)`, `v ← β2·v + (1 − β2)·g²`, then the cautious
/// mask and the "adamw" division above. Both paths end with
/// ```
/// p ← p·(1 − λ·lr_used)  (weight_decouple; 1 − λ with fixed_decay)
/// p ← p − lr_used·u;   g₋ ← g   (+ λ·p, the old p, when weight_decouple is false: coupled decay
///                                  is applied after the update was computed, as the reference does)
/// ```
/// "shampoo"'s Newton–Schulz (5 steps, coefficients (3.4445, −4.775, 2.0315), ε = `eps`) runs in
/// bfloat16 emulation as the reference runs it — the code Muon uses (`NewtonSchulz`).
///
/// **The 1-D learning rate** follows `lr`: the reference fixes `lr_1d_factor = lr_1d / lr` when
/// the optimizer is built, from the constructor's values, and uses `lr·lr_1d_factor` (so it moves
/// with schedules and `lr` changes). Here the factor is `lr_1d` over the group's *initial*
/// learning rate (``GradientOptimizer/initialLearningRate(group:)``, saved in checkpoints), so a
/// group's `lr_1d` is its 1-D learning rate at construction. Built from a configuration (the
/// registry, fixtures, the CLI), a group that overrides `lr` gets `lr_1d = lr_group·lr_1d/lr` of
/// the constructor — the reference's factor — and a group that overrides `lr_1d` is refused, since
/// the reference ignores it.
///
/// Defaults: `lr` 3e-3, `betas` (0.95, 0.99), `gamma` 0.025, `mars_type` "adamw", `optimize_1d`
/// false, `lr_1d` 3e-3, `betas_1d` (0.9, 0.95), `weight_decay` 0, `weight_decay_1d` 0.1,
/// `weight_decouple` true, `fixed_decay` false, `ams_bound` false, `cautious` false, `eps` 1e-8,
/// `maximize` false. State: `exp_avg`, `exp_avg_sq` (kept, untouched, by "lion" and matrix
/// "shampoo", as the reference does), `last_grad` — 12 bytes per parameter — and `max_exp_avg_sq`
/// with `ams_bound` (16); per group `step`.
///
/// Each tensor is updated whole: a first pass sums ‖c‖² (reads g, g₋), a second updates the
/// moments and g₋ and, without cautious, the parameter (reads p, g, g₋, m, v; writes p, m, v,
/// g₋) — 44 bytes per parameter a step on the MARS path, 32 on the 1-D path, which needs no
/// norm (one pass that does not read g₋). The cautious mask's count needs a third pass for the parameter; "shampoo" orthogonalises
/// the whole matrix. The passes run over the thread pool in fixed chunks, so the results do not
/// depend on the thread count. ZeRO-1 sharding, which splits tensors, does not take it.
///
/// Reference: pytorch-optimizer 4.1.0 `MARS`; paper: Yuan et al., 2024, "MARS: Unleashing the
/// Power of Variance Reduction for Training Large Models", arXiv:2411.10438.
public typealias MARS = GradientOptimizer<MARSRule>

/// The update rule of ``MARS``: its hyperparameters, state, per-step coefficients and kernel.
public enum MARSRule: TensorPassRule {
    /// The registry name.
    public static let name = "mars"

    /// The update the corrected momentum feeds (the reference's `mars_type`).
    public enum Kind: String, Sendable, CaseIterable {
        /// "adamw", "lion" or "shampoo": the AdamW division, the sign, or Newton–Schulz
        /// orthogonalisation of matrices.
        case adamw, lion, shampoo
    }

    /// The hyperparameters of ``MARS``, under the reference's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`, the learning rate.
        public var learningRate: Double
        /// (β1, β2) of the MARS path.
        public var betas: Betas
        /// γ, the strength of the gradient correction.
        public var gamma: Double
        /// `mars_type`: the update the corrected momentum feeds ("adamw", "lion" or "shampoo").
        public var marsType: Kind
        /// Whether parameters with fewer than two dimensions take the MARS path too.
        public var optimize1D: Bool
        /// The 1-D (AdamW path) learning rate at construction; it follows `lr` by the factor
        /// `lr_1d / initial lr`.
        public var learningRate1D: Double
        /// (β1, β2) of the AdamW path.
        public var betas1D: Betas
        /// λ of the MARS path.
        public var weightDecay: Double
        /// λ of the AdamW path.
        public var weightDecay1D: Double
        /// Decoupled decay `p·(1 − λ·lr)`; false: `λ·p` added to the gradient that is stored.
        public var weightDecouple: Bool
        /// Decoupled decay without the learning rate, `p·(1 − λ)`.
        public var fixedDecay: Bool
        /// The running maximum of the second moment in the denominator.
        public var amsBound: Bool
        /// Masks the update where it disagrees in sign with the gradient.
        public var cautious: Bool
        /// `eps`, the ε of the update's denominator (and of "shampoo"'s Newton–Schulz).
        public var eps: Double
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep the defaults listed on ``MARS``.
        public init(learningRate: Double = 3e-3, betas: Betas = .init(0.95, 0.99), gamma: Double = 0.025, marsType: Kind = .adamw,
                    optimize1D: Bool = false, learningRate1D: Double = 3e-3, betas1D: Betas = .init(0.9, 0.95), weightDecay: Double = 0,
                    weightDecay1D: Double = 0.1, weightDecouple: Bool = true, fixedDecay: Bool = false, amsBound: Bool = false,
                    cautious: Bool = false, eps: Double = 1e-8, maximize: Bool = false) {
            self.learningRate = learningRate
            self.betas = betas
            self.gamma = gamma
            self.marsType = marsType
            self.optimize1D = optimize1D
            self.learningRate1D = learningRate1D
            self.betas1D = betas1D
            self.weightDecay = weightDecay
            self.weightDecay1D = weightDecay1D
            self.weightDecouple = weightDecouple
            self.fixedDecay = fixedDecay
            self.amsBound = amsBound
            self.cautious = cautious
            self.eps = eps
            self.maximize = maximize
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: name)
            let d = Self()
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      betas: try reader.pair("betas", default: d.betas),
                      gamma: try reader.number("gamma", default: d.gamma),
                      marsType: Kind(rawValue: try reader.choice("mars_type", Kind.allCases.map(\.rawValue), default: d.marsType.rawValue))!,
                      optimize1D: try reader.bool("optimize_1d", default: d.optimize1D),
                      learningRate1D: try reader.number("lr_1d", default: d.learningRate1D),
                      betas1D: try reader.pair("betas_1d", default: d.betas1D),
                      weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                      weightDecay1D: try reader.number("weight_decay_1d", default: d.weightDecay1D),
                      weightDecouple: try reader.bool("weight_decouple", default: d.weightDecouple),
                      fixedDecay: try reader.bool("fixed_decay", default: d.fixedDecay),
                      amsBound: try reader.bool("ams_bound", default: d.amsBound),
                      cautious: try reader.bool("cautious", default: d.cautious),
                      eps: try reader.number("eps", default: d.eps),
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "betas": betas.value, "gamma": .number(gamma), "mars_type": .string(marsType.rawValue),
             "optimize_1d": .bool(optimize1D), "lr_1d": .number(learningRate1D), "betas_1d": betas1D.value,
             "weight_decay": .number(weightDecay), "weight_decay_1d": .number(weightDecay1D), "weight_decouple": .bool(weightDecouple),
             "fixed_decay": .bool(fixedDecay), "ams_bound": .bool(amsBound), "cautious": .bool(cautious), "eps": .number(eps),
             "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, name)
            try Validate.nonNegative(learningRate1D, "learningRate1D (lr_1d)", name)
            try Validate.betas(betas, name)
            for (index, beta) in [betas1D.first, betas1D.second].enumerated() where !(beta >= 0 && beta < 1) {
                throw Validate.fail(name, "betas1D.\(index) (betas_1d[\(index)])", beta, "a number in [0, 1)")
            }
            try Validate.nonNegative(gamma, "gamma", name)
            try Validate.weightDecay(weightDecay, name)
            try Validate.nonNegative(weightDecay1D, "weightDecay1D (weight_decay_1d)", name)
            try Validate.nonNegative(eps, "eps", name)
        }
    }

    /// The scalars of one of the two paths.
    public struct PathCoefficients: Sendable {
        /// The first moment's lerp weight 1 − β1, and 1 minus it as torch computes it in float32.
        @usableFromInline var weight: Float
        @usableFromInline var oneMinusWeight: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        /// 1 − β1ᵗ and √(1 − β2ᵗ), t the group's step.
        @usableFromInline var correction1: Float
        @usableFromInline var correction2Root: Float
        @usableFromInline var learningRate: Double
        @usableFromInline var negativeLearningRate: Float
        /// The decoupled decay's factor on p (1 for none).
        @usableFromInline var decay: Float
        /// λ of the coupled decay (0 for none).
        @usableFromInline var coupled: Float
    }

    /// The scalars of one step of ``MARS``, derived from the hyperparameters and the step number.
    public struct Coefficients: Sendable {
        @usableFromInline var kind: Kind
        @usableFromInline var optimize1D: Bool
        @usableFromInline var cautious: Bool
        @usableFromInline var amsBound: Bool
        @usableFromInline var maximize: Bool
        @usableFromInline var eps: Float
        /// γ·β1/(1 − β1), the factor on g − g₋.
        @usableFromInline var correction: Float
        /// 1/(1 − β1), the factor on the momentum before Newton–Schulz ("shampoo").
        @usableFromInline var momentumScale: Float
        @usableFromInline var mixed: PathCoefficients
        @usableFromInline var single: PathCoefficients
        /// The tensor's plan and its path (`mixed` or `single`), set once per tensor before its
        /// passes run, so the loops read them as constants.
        @usableFromInline var plan = Plan(mixed: false, sign: false, orthogonalize: false)
        @usableFromInline var path: PathCoefficients
    }

    /// The second moment's floor inside the root (the reference's `exp_avg_sq_eps`).
    @inlinable static var rootEpsilon: Float { 1e-15 }
    /// Newton–Schulz of the reference's `zero_power_via_newton_schulz_5` defaults.
    static let newtonSchulz: (a: Float, b: Float, c: Float, steps: Int) = (3.4445, -4.775, 2.0315, 5)

    public static func stateNames(_ h: Hyperparameters) -> [String] {
        h.amsBound ? ["exp_avg", "exp_avg_sq", "last_grad", "max_exp_avg_sq"] : ["exp_avg", "exp_avg_sq", "last_grad"]
    }

    public static func groupStateNames(_ h: Hyperparameters) -> [String] { ["step"] }

    public static func advanceGroup(_ h: Hyperparameters, initialLearningRate: Double, state: inout [Double]) {
        state[0] += 1
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        var none: [Float] = []
        return coefficients(h, initialLearningRate: initialLearningRate, step: step, groupState: [Double(step)], scalars: &none)
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int, groupState: [Double],
                                    scalars: inout [Float]) -> Coefficients {
        let t = groupState[0]
        func path(_ betas: Betas, learningRate lr: Double, weightDecay: Double) -> PathCoefficients {
            let weight = Float(1 - betas.first)
            let decoupled = weightDecay != 0 && h.weightDecouple
            return PathCoefficients(weight: weight, oneMinusWeight: 1 - weight, beta2: Float(betas.second), oneMinusBeta2: Float(1 - betas.second),
                                    correction1: Float(1 - pow(betas.first, t)), correction2Root: Float((1 - pow(betas.second, t)).squareRoot()),
                                    learningRate: lr, negativeLearningRate: Float(-lr),
                                    decay: decoupled ? Float(1 - weightDecay * (h.fixedDecay ? 1 : lr)) : 1,
                                    coupled: !h.weightDecouple && weightDecay > 0 ? Float(weightDecay) : 0)
        }
        let lr1D = h.learningRate * (h.learningRate1D / initialLearningRate)
        let beta1 = h.betas.first
        return Coefficients(kind: h.marsType, optimize1D: h.optimize1D, cautious: h.cautious, amsBound: h.amsBound, maximize: h.maximize,
                            eps: Float(h.eps), correction: Float(h.gamma * (beta1 / (1 - beta1))), momentumScale: Float(1 / (1 - beta1)),
                            mixed: path(h.betas, learningRate: h.learningRate, weightDecay: h.weightDecay),
                            single: path(h.betas1D, learningRate: lr1D, weightDecay: h.weightDecay1D),
                            path: path(h.betas, learningRate: h.learningRate, weightDecay: h.weightDecay))
    }

    /// What one tensor's step does, from its rank.
    @usableFromInline
    struct Plan: Sendable {
        /// The MARS path (the corrected gradient), rather than the AdamW one.
        @usableFromInline var mixed: Bool
        /// "lion" on the MARS path.
        @usableFromInline var sign: Bool
        /// "shampoo" on a matrix (two or more dimensions).
        @usableFromInline var orthogonalize: Bool
        /// Whether v (and v̂) are updated.
        @inlinable var secondMoment: Bool { !sign && !orthogonalize }

        @usableFromInline
        init(mixed: Bool, sign: Bool, orthogonalize: Bool) {
            self.mixed = mixed
            self.sign = sign
            self.orthogonalize = orthogonalize
        }

        init(rank: Int, _ c: Coefficients) {
            self.init(mixed: c.optimize1D || rank >= 2, sign: (c.optimize1D || rank >= 2) && c.kind == .lion,
                      orthogonalize: (c.optimize1D || rank >= 2) && c.kind == .shampoo && rank >= 2)
        }
    }

    /// The gradient as the reference uses it (scaled by the clipping factor, negated when
    /// maximising) and the moment's input: c on the MARS path divided by `divisor` (‖c‖ when it
    /// exceeds 1, else 1, which changes nothing), g on the AdamW path.
    @_transparent @usableFromInline
    static func inputs(_ o: KernelOperands, _ i: Int, _ lanes: Int, _ c: Coefficients, mixed: Bool, divisor: Float)
        -> (gradient: FloatVector, input: FloatVector) {
        let raw = Elementwise.gradient(o, i, lanes)
        let g = Elementwise.select(c.maximize, -raw, raw)
        guard mixed else { return (g, g) }
        let corrected = (g - Elementwise.load(o.state2, i, lanes)) * c.correction + g
        return (g, corrected / divisor)
    }

    /// The update u from the new moment `m`, the denominator's source (v or v̂) and the cautious
    /// scale (0 without cautious).
    @_transparent @usableFromInline
    static func direction(m: FloatVector, second: FloatVector, g: FloatVector, cautiousScale: Float, cautious: Bool, sign: Bool,
                          _ c: Coefficients, _ path: PathCoefficients) -> FloatVector {
        var u = m
        if cautious {
            u = u * FloatVector.zero.replacing(with: cautiousScale, where: m * g .> 0)
        }
        if sign { return Elementwise.sign(u) }
        let denominator = (Elementwise.squareRoot(second + rootEpsilon) + c.eps) / path.correction2Root * path.correction1
        return u / denominator
    }

    /// Pass 0 (MARS path): ‖c‖² (in `second`). Pass 1 (`pass.scalar` the divisor: ‖c‖ when it
    /// exceeds 1, else 1): the moments and g₋; the count of the cautious mask; without cautious
    /// (and Newton–Schulz) the step itself. Pass 2 (cautious; `pass.scalar` the mask's scale): the
    /// step, from the stored moments. Pass 3: pass 1 of the common case without its branches.
    @_transparent
    public static func passVector(_ index: Int, _ collecting: Bool, _ o: KernelOperands, _ i: Int, _ lanes: Int,
                                  _ c: Coefficients, _ pass: TensorPass, _ sums: inout PassSums) {
        let plan = c.plan, path = c.path
        if index == 0 {
            sums.addSquares(second: inputs(o, i, lanes, c, mixed: true, divisor: 1).input, lanes: lanes)
        } else if index == 1 {
            let (g, input) = inputs(o, i, lanes, c, mixed: plan.mixed, divisor: pass.scalar)
            let m = Elementwise.lerp(Elementwise.load(o.state0, i, lanes), input, weight: path.weight, oneMinusWeight: path.oneMinusWeight)
            Elementwise.store(m, o.state0, i, lanes)
            var second = FloatVector()
            if plan.secondMoment {
                let v = Elementwise.load(o.state1, i, lanes) * path.beta2 + path.oneMinusBeta2 * input * input
                Elementwise.store(v, o.state1, i, lanes)
                second = v
                if c.amsBound {
                    second = Elementwise.maximum(Elementwise.load(o.state3, i, lanes), v)
                    Elementwise.store(second, o.state3, i, lanes)
                }
            }
            let before = Elementwise.load(o.parameter, i, lanes)
            Elementwise.store(Elementwise.select(path.coupled != 0, g + path.coupled * before, g), o.state2, i, lanes)
            if c.cautious {
                // Padding lanes load as zeros, so they never agree.
                sums.count += Int(FloatVector.zero.replacing(with: 1, where: m * g .> 0).sum())
            } else if !plan.orthogonalize {
                let u = direction(m: m, second: second, g: g, cautiousScale: 0, cautious: false, sign: plan.sign, c, path)
                let after = before * path.decay + path.negativeLearningRate * u
                Elementwise.store(after, o.parameter, i, lanes)
                if collecting {
                    sums.addMetrics(UpdateLanes(before: before, after: after, gradient: Elementwise.gradient(o, i, lanes), moment: m), count: lanes)
                }
            }
        } else if index == 3 {
            // Pass 1 of the common case, straight-line: "adamw" (or the AdamW path), no cautious
            // mask, no ams_bound, no maximize; the same arithmetic as pass 1.
            let g = Elementwise.gradient(o, i, lanes)
            let corrected = (g - Elementwise.load(o.state2, i, lanes)) * c.correction + g
            let input = Elementwise.select(plan.mixed, corrected / pass.scalar, g)
            let m = Elementwise.lerp(Elementwise.load(o.state0, i, lanes), input, weight: path.weight, oneMinusWeight: path.oneMinusWeight)
            let v = Elementwise.load(o.state1, i, lanes) * path.beta2 + path.oneMinusBeta2 * input * input
            let before = Elementwise.load(o.parameter, i, lanes)
            Elementwise.store(m, o.state0, i, lanes)
            Elementwise.store(v, o.state1, i, lanes)
            Elementwise.store(Elementwise.select(path.coupled != 0, g + path.coupled * before, g), o.state2, i, lanes)
            let denominator = (Elementwise.squareRoot(v + rootEpsilon) + c.eps) / path.correction2Root * path.correction1
            let after = before * path.decay + path.negativeLearningRate * (m / denominator)
            Elementwise.store(after, o.parameter, i, lanes)
            if collecting {
                sums.addMetrics(UpdateLanes(before: before, after: after, gradient: g, moment: m), count: lanes)
            }
        } else {
            let raw = Elementwise.gradient(o, i, lanes)
            let g = Elementwise.select(c.maximize, -raw, raw)
            let m = Elementwise.load(o.state0, i, lanes)
            let second = plan.secondMoment ? Elementwise.load(c.amsBound ? o.state3 : o.state1, i, lanes) : FloatVector()
            let before = Elementwise.load(o.parameter, i, lanes)
            let u = direction(m: m, second: second, g: g, cautiousScale: pass.scalar, cautious: true, sign: plan.sign, c, path)
            let after = before * path.decay + path.negativeLearningRate * u
            Elementwise.store(after, o.parameter, i, lanes)
            if collecting { sums.addMetrics(UpdateLanes(before: before, after: after, gradient: raw, moment: m), count: lanes) }
        }
    }

    public static func updateTensor(_ o: KernelOperands, shape: [Int], _ c: Coefficients, kernels: RuleKernels<Coefficients>, pool: ThreadPool,
                                    collectingMetrics: Bool) -> MetricAccumulator {
        let n = o.count
        guard n > 0 else { return MetricAccumulator() }
        var c = c
        c.plan = Plan(rank: shape.count, c)
        c.path = c.plan.mixed ? c.mixed : c.single
        let plan = c.plan, path = c.path
        func run(_ index: Int, scalar: Float = 0, collecting: Bool = false) -> PassResult {
            TensorPasses.run(kernels, o, c, TensorPass(index: index, rank: shape.count, scalar: scalar, collectingMetrics: collecting), pool: pool)
        }
        // Pass 0 (MARS path): ‖c‖ over the whole tensor.
        var divisor: Float = 1
        if plan.mixed {
            let norm = Float(run(0).second.squareRoot())
            if norm > 1 { divisor = norm }
        }
        // Pass 1: the moments and g₋, and the step unless cautious or Newton–Schulz needs the
        // whole tensor first.
        let finishes = !c.cautious && !plan.orthogonalize
        let common = finishes && plan.secondMoment && !c.amsBound && !c.maximize
        let moments = run(common ? 3 : 1, scalar: divisor, collecting: finishes && collectingMetrics)
        if finishes { return moments.metrics }

        // torch: `mask.mul_(numel / (mask.sum() + 1))` — a Python number over a float32 tensor
        // is its reciprocal times the number, two roundings.
        let cautiousScale: Float = c.cautious ? (1 / Float(moments.count + 1)) * Float(n) : 0
        if plan.orthogonalize {
            return orthogonalStep(o, shape: shape, c, path, cautiousScale: c.cautious ? cautiousScale : nil, pool: pool,
                                  collectingMetrics: collectingMetrics)
        }
        // Pass 2 (cautious): the step, from the stored moments.
        return run(2, scalar: cautiousScale, collecting: collectingMetrics).metrics
    }

    /// "shampoo" on a matrix: the momentum (masked with cautious) times 1/(1 − β1), viewed as
    /// `R × (numel/R)`, orthogonalised by Newton–Schulz in bfloat16, times √max(1, R/C) (C the
    /// second dimension) in bfloat16, then the decay and the step.
    static func orthogonalStep(_ o: KernelOperands, shape: [Int], _ c: Coefficients, _ path: PathCoefficients, cautiousScale: Float?,
                               pool: ThreadPool, collectingMetrics: Bool) -> MetricAccumulator {
        let n = o.count, rows = shape[0], columns = n / rows
        let short = min(rows, columns), long = max(rows, columns), transposed = rows > columns
        let x = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { x.deallocate() }
        for i in 0..<n {
            var u = o.state0[i]
            if let cautiousScale {
                let g = o.gradient[i] * o.gradientScale
                u = u * (u * (c.maximize ? -g : g) > 0 ? cautiousScale : 0)
            }
            let (r, column) = (i / columns, i % columns)
            x[transposed ? column * rows + r : i] = BFloat16.round(u * c.momentumScale)
        }
        NewtonSchulz.orthogonalize(x, short: short, long: long, a: newtonSchulz.a, b: newtonSchulz.b, c: newtonSchulz.c,
                                   steps: newtonSchulz.steps, eps: c.eps, bfloat16: true, pool: pool)
        let factor = Float(max(1, Double(shape[0]) / Double(shape[1])).squareRoot())
        var sums = MetricAccumulator()
        for i in 0..<n {
            let (r, column) = (i / columns, i % columns)
            let orthogonal = BFloat16.round(x[transposed ? column * rows + r : i] * factor)
            let before = o.parameter[i]
            let after = before * path.decay + path.negativeLearningRate * orthogonal
            o.parameter[i] = after
            if collectingMetrics {
                sums.add(before: before, after: after, gradient: o.gradient[i] * o.gradientScale, moment: o.state0[i])
            }
        }
        return sums
    }
}

extension MARSRule: RegistryEntry {
    /// Builds the groups of a configuration as the reference does: `lr_1d_factor` is the
    /// constructor's `lr_1d / lr`, so a group overriding `lr` gets `lr_1d = lr_group·factor`, and a
    /// group may not override `lr_1d` (the reference would ignore it).
    static func makeGroups(_ configuration: OptimizerConfiguration,
                           _ groups: [ParameterGroupConfiguration]) throws(OptimError) -> [ParameterGroup<Hyperparameters>] {
        let constructor = try Hyperparameters(configuration.hyperparameters)
        try constructor.validate()
        var built: [ParameterGroup<Hyperparameters>] = []
        for (index, group) in groups.enumerated() {
            if group.overrides["lr_1d"] != nil {
                throw .invalidConfiguration(
                    "mars: group \(index) overrides lr_1d, which pytorch-optimizer ignores in a group (a group's 1-D learning rate is its lr × lr_1d / lr of the optimizer); set lr_1d for the whole optimizer")
            }
            var hyperparameters = try Hyperparameters(configuration.hyperparameters.merging(group.overrides) { $1 })
            if hyperparameters.learningRate != constructor.learningRate {
                hyperparameters.learningRate1D = hyperparameters.learningRate * (constructor.learningRate1D / constructor.learningRate)
            }
            built.append(ParameterGroup(group.parameters, hyperparameters))
        }
        return built
    }

    /// The registry entry.
    public static let info = OptimizerInfo(
        name: name, typeName: "MARS",
        reference: .init(library: "pytorch-optimizer", version: "4.1.0", symbol: "pytorch_optimizer.MARS",
                         paper: "Yuan et al., 2024, \"MARS: Unleashing the Power of Variance Reduction for Training Large Models\", arXiv:2411.10438"),
        defaults: Hyperparameters().dictionary, isWrapper: false, updatesWholeTensors: true, compiledPerInstructionSet: true, requiresMatrices: false,
        suggested: ["lr": .number(3e-3), "lr_1d": .number(3e-3)],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.01), "lr_1d": .number(0.01)]),
                       quadratic: .init(name: name, hyperparameters: ["lr": .number(0.05), "lr_1d": .number(0.05)]),
                       rosenbrock: .init(name: name, hyperparameters: ["lr": .number(0.02), "lr_1d": .number(0.02)])),
        benchmark: .init(configuration: .init(name: name, hyperparameters: ["optimize_1d": .bool(true)]),
                         reference: .kernel(symbol: "mars", stateBuffers: 3,
                                            coefficients: [0.025 * 0.95 / 0.05, 0.05, 0.99, 0.01, 1, 1, 1e-8, -3e-3]))
    ) { configuration, groups, pool throws(OptimError) in
        if configuration.base != nil {
            throw .invalidConfiguration("\(name) does not wrap another optimizer; remove 'base'")
        }
        return try MARS(groups: try makeGroups(configuration, groups), threadPool: pool)
    }
}
