import Foundation

/// L-BFGS (Liu & Nocedal, 1989): a quasi-Newton method that builds an approximate inverse
/// Hessian from the last `history_size` steps and gradients, with an optional strong-Wolfe line
/// search — matching `torch.optim.LBFGS` evaluation for evaluation.
///
/// Each ``step(closure:)`` runs up to `max_iter` iterations and `max_eval` evaluations of the
/// closure (which sets the gradients and returns the loss), over all parameters flattened into
/// one vector:
/// ```
/// d = −H·g   (two-loop recursion over the stored pairs s = t·d, y = Δg with y·s > 1e-10;
///             H₀ = (y·s)/(y·y) of the newest pair)
/// t = min(1, 1/‖g‖₁)·lr on the first iteration, lr after
/// x ← x + t·d, or t from the strong-Wolfe search (c1 = 1e-4, c2 = 0.9, cubic interpolation)
/// stop when ‖g‖∞ ≤ tolerance_grad, ‖t·d‖∞ ≤ tolerance_change, |Δloss| < tolerance_change,
///      g·d > −tolerance_change, or the iteration or evaluation budget is spent
/// ```
/// The scalars are computed as torch computes them — in float32 where torch holds a 0-dim
/// tensor, in double where it holds a Python float (`TorchScalar`) — so the same branches are
/// taken and the closure is evaluated the same number of times.
///
/// One parameter group (as torch); a step without a closure throws
/// ``OptimError/closureRequired(optimizer:)``; gradient clipping does not apply (the closure's
/// gradients are the search's). Under ``NonFinitePolicy/skipStep`` or `.throw` a non-finite
/// gradient from any evaluation puts the parameters back as they were before the step. ZeRO-1
/// sharding does not take it: the search is over the whole flattened vector. Defaults: `lr` 1,
/// `max_iter` 20, `max_eval` None (`max_iter·5/4`), `tolerance_grad` 1e-7, `tolerance_change`
/// 1e-9, `history_size` 100, `line_search_fn` None or "strong_wolfe". State: the direction `d`,
/// `prev_flat_grad`, and up to `history_size` pairs `old_dirs`/`old_stps`: memory of
/// `(2·history_size + 2)` parameter copies. Reference: `torch.optim.LBFGS` (after minFunc);
/// paper: Liu & Nocedal, 1989, "On the limited memory BFGS method for large scale
/// optimization", Math. Programming 45; Nocedal & Wright, Numerical Optimization, 2006.
public final class LBFGS: Optimizer {
    /// The registry name.
    public static let name = "lbfgs"

    /// The hyperparameters of L-BFGS, under torch's names in ``dictionary``.
    public struct Hyperparameters: OptimizerHyperparameters {
        /// `lr`: the step length (the first iteration's is `min(1, 1/‖g‖₁)·lr`), or the line
        /// search's first trial.
        public var learningRate: Double
        /// `max_iter`: the most iterations in one step.
        public var maxIterations: Int
        /// `nil` is torch's `None`: `maxIterations·5/4`.
        public var maxEvaluations: Int?
        /// `tolerance_grad`: a step stops when `‖g‖∞` is at most this.
        public var toleranceGrad: Double
        /// `tolerance_change`: a step stops when the parameter change `‖t·d‖∞`, the loss change or the
        /// directional decrease `−g·d` is within it.
        public var toleranceChange: Double
        /// `history_size`: the number of step and gradient-difference pairs kept.
        public var historySize: Int
        /// The strong-Wolfe line search, or fixed steps of the learning rate.
        public var strongWolfe: Bool
        /// `maximize`: ascend instead of descend (negates the gradient).
        public var maximize: Bool

        /// The hyperparameters; those not written keep torch's defaults.
        public init(learningRate: Double = 1, maxIterations: Int = 20, maxEvaluations: Int? = nil, toleranceGrad: Double = 1e-7,
                    toleranceChange: Double = 1e-9, historySize: Int = 100, strongWolfe: Bool = false, maximize: Bool = false) {
            self.learningRate = learningRate
            self.maxIterations = maxIterations
            self.maxEvaluations = maxEvaluations
            self.toleranceGrad = toleranceGrad
            self.toleranceChange = toleranceChange
            self.historySize = historySize
            self.strongWolfe = strongWolfe
            self.maximize = maximize
        }

        static func integer(_ value: Double, _ name: String, minimum: Int) throws(OptimError) -> Int {
            guard value == value.rounded(), value >= Double(minimum), value <= Double(Int32.max) else {
                throw .invalidHyperparameter(optimizer: LBFGS.name, name: name, value: HyperparameterValue.format(value),
                                             expected: "an integer >= \(minimum)")
            }
            return Int(value)
        }

        public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
            var reader = HyperparameterReader(dictionary, optimizer: LBFGS.name)
            let d = Self()
            let maxEvaluations = try reader.optionalNumber("max_eval", default: nil)
            self.init(learningRate: try reader.number("lr", default: d.learningRate),
                      maxIterations: try Self.integer(try reader.number("max_iter", default: Double(d.maxIterations)), "maxIterations (max_iter)", minimum: 1),
                      maxEvaluations: try maxEvaluations.map { value throws(OptimError) in try Self.integer(value, "maxEvaluations (max_eval)", minimum: 1) },
                      toleranceGrad: try reader.number("tolerance_grad", default: d.toleranceGrad),
                      toleranceChange: try reader.number("tolerance_change", default: d.toleranceChange),
                      historySize: try Self.integer(try reader.number("history_size", default: Double(d.historySize)), "historySize (history_size)", minimum: 1),
                      strongWolfe: try reader.choice("line_search_fn", ["strong_wolfe"], default: "", nullChoice: "") == "strong_wolfe",
                      maximize: try reader.bool("maximize", default: d.maximize))
            try reader.finish()
        }

        public var dictionary: HyperparameterDictionary {
            ["lr": .number(learningRate), "max_iter": .number(Double(maxIterations)),
             "max_eval": maxEvaluations.map { .number(Double($0)) } ?? .null, "tolerance_grad": .number(toleranceGrad),
             "tolerance_change": .number(toleranceChange), "history_size": .number(Double(historySize)),
             "line_search_fn": strongWolfe ? .string("strong_wolfe") : .null, "maximize": .bool(maximize)]
        }

        public func validate() throws(OptimError) {
            try Validate.learningRate(learningRate, LBFGS.name)
            try Validate.nonNegative(toleranceGrad, "toleranceGrad (tolerance_grad)", LBFGS.name)
            try Validate.nonNegative(toleranceChange, "toleranceChange (tolerance_change)", LBFGS.name)
            guard maxIterations >= 1 else { throw Validate.fail(LBFGS.name, "maxIterations (max_iter)", Double(maxIterations), "an integer >= 1") }
            guard historySize >= 1 else { throw Validate.fail(LBFGS.name, "historySize (history_size)", Double(historySize), "an integer >= 1") }
            if let maxEvaluations, maxEvaluations < 1 {
                throw Validate.fail(LBFGS.name, "maxEvaluations (max_eval)", Double(maxEvaluations), "an integer >= 1")
            }
        }

        /// torch's `max_eval`: the given one, or `max_iter * 5 // 4`.
        var evaluationBudget: Int { maxEvaluations ?? maxIterations * 5 / 4 }
    }

    public var name: String { Self.name }
    /// The parameters, flattened into one vector by the search.
    public let parameters: [Parameter]
    /// The hyperparameters of the one group.
    public private(set) var hyperparameters: Hyperparameters
    /// The learning rate at construction (`initial_lr`), to which schedules are relative.
    public let initialLearningRate: Double
    public var nonFinitePolicy: NonFinitePolicy = .propagate
    public private(set) var skippedSteps = 0
    /// Steps taken (calls of ``step(closure:)`` that ran).
    public private(set) var steps = 0
    /// Closure evaluations over all steps (torch's `func_evals`).
    public private(set) var evaluations = 0
    /// Iterations over all steps (torch's `n_iter`).
    public private(set) var iterations = 0

    /// The search state, as torch's `state` keeps it between steps.
    struct SearchState: Equatable {
        var direction: [Float]?
        var stepLength: TorchScalar?
        var oldDirections: [[Float]] = []
        var oldSteps: [[Float]] = []
        var ro: [TorchScalar] = []
        var hessianDiagonal: TorchScalar = .python(1)
        var previousGradient: [Float]?
        var previousLoss: Double?
    }

    var search = SearchState()
    private let count: Int

    /// L-BFGS over `parameters` (one group, as torch).
    public init(_ parameters: [Parameter], hyperparameters: Hyperparameters = .init()) throws(OptimError) {
        try validateParameterLists([parameters], optimizer: Self.name)
        try hyperparameters.validate()
        self.parameters = parameters
        self.hyperparameters = hyperparameters
        self.initialLearningRate = hyperparameters.learningRate
        self.count = parameters.reduce(0) { $0 + $1.count }
    }

    public var groupCount: Int { 1 }

    private func checkGroup(_ group: Int) throws(OptimError) {
        guard group == 0 else { throw .invalidGroup(index: group, groupCount: 1) }
    }

    public func parameters(group: Int) throws(OptimError) -> [Parameter] {
        try checkGroup(group)
        return parameters
    }

    public func learningRate(group: Int) throws(OptimError) -> Double {
        try checkGroup(group)
        return hyperparameters.learningRate
    }

    public func setLearningRate(_ learningRate: Double, group: Int) throws(OptimError) {
        try checkGroup(group)
        try Validate.learningRate(learningRate, Self.name)
        hyperparameters.learningRate = learningRate
    }

    public func initialLearningRate(group: Int) throws(OptimError) -> Double {
        try checkGroup(group)
        return initialLearningRate
    }

    public func hyperparameters(group: Int) throws(OptimError) -> HyperparameterDictionary {
        try checkGroup(group)
        return hyperparameters.dictionary
    }

    private func isHeld(_ parameter: Parameter) -> Bool { parameters.contains { $0 === parameter } }

    public func stepCount(of parameter: Parameter) throws(OptimError) -> Int {
        guard isHeld(parameter) else { throw .unknownParameter(name: parameter.name) }
        return steps
    }

    /// The search state by torch's names, under the first parameter (where torch keeps it):
    /// `d`, `prev_flat_grad`, and the pairs `old_dirs`/`old_stps` (concatenated) with `ro`.
    public func state(of parameter: Parameter) throws(OptimError) -> [String: [Float]] {
        guard isHeld(parameter) else { throw .unknownParameter(name: parameter.name) }
        guard parameter === parameters[0] else { return [:] }
        return buffers(search)
    }

    func buffers(_ search: SearchState) -> [String: [Float]] {
        var result: [String: [Float]] = [:]
        if let direction = search.direction { result["d"] = direction }
        if let gradient = search.previousGradient { result["prev_flat_grad"] = gradient }
        if !search.oldDirections.isEmpty {
            result["old_dirs"] = Array(search.oldDirections.joined())
            result["old_stps"] = Array(search.oldSteps.joined())
            result["ro"] = search.ro.map(\.float)
        }
        return result
    }

    public func scaleNextGradient(of parameter: Parameter, by factor: Float) throws(OptimError) {
        throw .invalidConfiguration("lbfgs evaluates its own gradients through the closure: gradient clipping does not apply to it")
    }

    /// Throws ``OptimError/closureRequired(optimizer:)``: L-BFGS needs ``step(closure:)``.
    public func step(collectingMetrics: Bool) throws -> OptimizerMetrics? {
        throw OptimError.closureRequired(optimizer: Self.name)
    }

    // MARK: the flat vector

    private func flatValues() -> [Float] {
        var flat: [Float] = []
        flat.reserveCapacity(count)
        for parameter in parameters { flat.append(contentsOf: parameter.values) }
        return flat
    }

    private func setFlatValues(_ flat: [Float]) {
        var offset = 0
        for parameter in parameters {
            for index in 0..<parameter.count { parameter.values[index] = flat[offset + index] }
            offset += parameter.count
        }
    }

    /// `p.add_(update, alpha=stepSize)` over every parameter: one fused multiply-add per element,
    /// as torch's CPU kernel.
    private func addToParameters(_ stepSize: TorchScalar, _ update: [Float]) {
        let alpha = stepSize.float
        var offset = 0
        for parameter in parameters {
            for index in 0..<parameter.count { parameter.values[index] = parameter.values[index].addingProduct(alpha, update[offset + index]) }
            offset += parameter.count
        }
    }

    /// The gradients flattened (a parameter without one counts as zeros), negated when maximising.
    private func flatGradient() throws -> [Float] {
        var flat: [Float] = []
        flat.reserveCapacity(count)
        for parameter in parameters {
            if let gradient = parameter.gradient {
                if nonFinitePolicy != .propagate, gradient.contains(where: { !$0.isFinite }) {
                    throw NonFiniteGradient(parameter: parameter.name)
                }
                flat.append(contentsOf: gradient)
            } else {
                flat.append(contentsOf: repeatElement(0, count: parameter.count))
            }
        }
        if hyperparameters.maximize { for index in flat.indices { flat[index] = -flat[index] } }
        return flat
    }

    private struct NonFiniteGradient: Error { var parameter: String }

    private func evaluate(_ closure: () throws -> Float) throws -> Double {
        let loss = Double(try closure())
        return hyperparameters.maximize ? -loss : loss
    }

    // MARK: the step

    /// One L-BFGS step: up to `max_iter` iterations of the search, evaluating `closure` as often
    /// as torch's would. Returns the loss of the first evaluation.
    @discardableResult
    public func step(closure: () throws -> Float) throws -> Float {
        let start = flatValues()
        let saved = (search, evaluations, iterations)
        do {
            let loss = try run(closure)
            steps += 1
            return loss
        } catch let error as NonFiniteGradient {
            // Everything back as it was before this step.
            setFlatValues(start)
            (search, evaluations, iterations) = saved
            if nonFinitePolicy == .throw { throw OptimError.nonFiniteGradient(parameter: error.parameter) }
            skippedSteps += 1
            return .nan
        }
    }

    private func run(_ closure: () throws -> Float) throws -> Float {
        let h = hyperparameters
        let learningRate = h.learningRate, maxIterations = h.maxIterations, maxEvaluations = h.evaluationBudget
        let originalLoss = try closure()
        var loss = h.maximize ? -Double(originalLoss) : Double(originalLoss)
        var currentEvaluations = 1
        evaluations += 1
        var gradient = try flatGradient()
        if Vector.maxAbs(gradient) <= Float(h.toleranceGrad) { return originalLoss }

        var s = search
        var direction = s.direction ?? []
        var stepLength = s.stepLength ?? .python(learningRate)
        var iteration = 0
        while iteration < maxIterations {
            iteration += 1
            iterations += 1
            if iterations == 1 {
                direction = Vector.negated(gradient)
                s.oldDirections = []
                s.oldSteps = []
                s.ro = []
                s.hessianDiagonal = .python(1)
            } else {
                let y = Vector.subtract(gradient, s.previousGradient!)
                let step = Vector.scaled(direction, stepLength.float)
                let ys = TorchScalar.tensor(Vector.dot(y, step))
                if ys > .python(1e-10) {
                    if s.oldDirections.count == h.historySize {
                        s.oldDirections.removeFirst()
                        s.oldSteps.removeFirst()
                        s.ro.removeFirst()
                    }
                    s.oldDirections.append(y)
                    s.oldSteps.append(step)
                    s.ro.append(.python(1) / ys)
                    s.hessianDiagonal = ys / .tensor(Vector.dot(y, y))
                }
                // The two-loop recursion: d = −H·g.
                var q = Vector.negated(gradient)
                var alphas = [TorchScalar](repeating: .python(0), count: s.oldDirections.count)
                for i in stride(from: s.oldDirections.count - 1, through: 0, by: -1) {
                    alphas[i] = .tensor(Vector.dot(s.oldSteps[i], q)) * s.ro[i]
                    Vector.add(&q, s.oldDirections[i], alpha: (-alphas[i]).float)
                }
                var r = Vector.scaled(q, s.hessianDiagonal.float)
                for i in 0..<s.oldDirections.count {
                    let beta = TorchScalar.tensor(Vector.dot(s.oldDirections[i], r)) * s.ro[i]
                    Vector.add(&r, s.oldSteps[i], alpha: (alphas[i] - beta).float)
                }
                direction = r
            }
            s.previousGradient = gradient
            s.previousLoss = loss

            if iterations == 1 {
                stepLength = TorchScalar.minimum(.python(1), .python(1) / .tensor(Vector.absSum(gradient))) * .python(learningRate)
            } else {
                stepLength = .python(learningRate)
            }
            let gtd = TorchScalar.tensor(Vector.dot(gradient, direction))
            if gtd > .python(-h.toleranceChange) { break }

            var lineSearchEvaluations = 0
            var optimal = false
            if h.strongWolfe {
                let x = flatValues()
                let result = try strongWolfe(closure, x: x, t: stepLength, d: direction, f: loss, g: gradient, gtd: gtd,
                                             toleranceChange: h.toleranceChange, maxLineSearch: maxEvaluations - currentEvaluations)
                (loss, gradient, stepLength, lineSearchEvaluations) = result
                addToParameters(stepLength, direction)
                optimal = Vector.maxAbs(gradient) <= Float(h.toleranceGrad)
            } else {
                addToParameters(stepLength, direction)
                if iteration != maxIterations {
                    loss = try evaluate(closure)
                    gradient = try flatGradient()
                    optimal = Vector.maxAbs(gradient) <= Float(h.toleranceGrad)
                    lineSearchEvaluations = 1
                }
            }
            currentEvaluations += lineSearchEvaluations
            evaluations += lineSearchEvaluations

            if iteration == maxIterations { break }
            if currentEvaluations >= maxEvaluations { break }
            if optimal { break }
            if Vector.maxAbs(Vector.scaled(direction, stepLength.float)) <= Float(h.toleranceChange) { break }
            if abs(loss - s.previousLoss!) < h.toleranceChange { break }
        }
        s.direction = direction
        s.stepLength = stepLength
        search = s
        return originalLoss
    }

    /// Evaluates the closure at `x + t·d` and puts the parameters back to `x` (torch's
    /// `_directional_evaluate`).
    private func directionalEvaluate(_ closure: () throws -> Float, x: [Float], t: TorchScalar, d: [Float]) throws -> (Double, [Float]) {
        addToParameters(t, d)
        let loss = try evaluate(closure)
        let gradient = try flatGradient()
        setFlatValues(x)
        return (loss, gradient)
    }

    /// torch's `_strong_wolfe`, branch for branch.
    private func strongWolfe(_ closure: () throws -> Float, x: [Float], t initialT: TorchScalar, d: [Float], f: Double, g: [Float],
                             gtd: TorchScalar, c1: Double = 1e-4, c2: Double = 0.9, toleranceChange: Double,
                             maxLineSearch: Int) throws -> (Double, [Float], TorchScalar, Int) {
        var t = initialT
        let dNorm = TorchScalar.tensor(Vector.maxAbs(d))
        var (fNew, gNew) = try directionalEvaluate(closure, x: x, t: t, d: d)
        var evaluationsHere = 1
        var gtdNew = TorchScalar.tensor(Vector.dot(gNew, d))
        var (tPrevious, fPrevious, gPrevious, gtdPrevious) = (TorchScalar.python(0), f, g, gtd)
        var done = false
        var iteration = 0
        var bracket: [TorchScalar] = [], bracketF: [Double] = [], bracketG: [[Float]] = [], bracketGtd: [TorchScalar] = []
        // A float loss against a float32 tensor compares in float32.
        func armijoFails(_ fValue: Double, _ tValue: TorchScalar) -> Bool {
            .python(fValue) > .python(f) + .python(c1) * tValue * gtd
        }
        while iteration < maxLineSearch {
            if armijoFails(fNew, t) || (iteration > 1 && fNew >= fPrevious) {
                (bracket, bracketF, bracketG, bracketGtd) = ([tPrevious, t], [fPrevious, fNew], [gPrevious, gNew], [gtdPrevious, gtdNew])
                break
            }
            if gtdNew.absolute <= .python(-c2) * gtd {
                (bracket, bracketF, bracketG) = ([t], [fNew], [gNew])
                done = true
                break
            }
            if gtdNew >= .python(0) {
                (bracket, bracketF, bracketG, bracketGtd) = ([tPrevious, t], [fPrevious, fNew], [gPrevious, gNew], [gtdPrevious, gtdNew])
                break
            }
            let minStep = t + .python(0.01) * (t - tPrevious)
            let maxStep = t * .python(10)
            let previous = t
            t = Self.cubicInterpolate(tPrevious, fPrevious, gtdPrevious, t, fNew, gtdNew, bounds: (minStep, maxStep))
            tPrevious = previous
            fPrevious = fNew
            gPrevious = gNew
            gtdPrevious = gtdNew
            (fNew, gNew) = try directionalEvaluate(closure, x: x, t: t, d: d)
            evaluationsHere += 1
            gtdNew = .tensor(Vector.dot(gNew, d))
            iteration += 1
        }
        if iteration == maxLineSearch {
            (bracket, bracketF, bracketG) = ([.python(0), t], [f, fNew], [g, gNew])
        }
        var insufficientProgress = false
        var (low, high) = bracketF[0] <= bracketF[bracketF.count - 1] ? (0, 1) : (1, 0)
        while !done && iteration < maxLineSearch {
            if (bracket[1] - bracket[0]).absolute * dNorm < .python(toleranceChange) { break }
            t = Self.cubicInterpolate(bracket[0], bracketF[0], bracketGtd[0], bracket[1], bracketF[1], bracketGtd[1], bounds: nil)
            let top = TorchScalar.maximum(bracket[0], bracket[1]), bottom = TorchScalar.minimum(bracket[0], bracket[1])
            let eps = .python(0.1) * (top - bottom)
            if TorchScalar.minimum(top - t, t - bottom) < eps {
                if insufficientProgress || t >= top || t <= bottom {
                    t = (t - top).absolute < (t - bottom).absolute ? top - eps : bottom + eps
                    insufficientProgress = false
                } else {
                    insufficientProgress = true
                }
            } else {
                insufficientProgress = false
            }
            (fNew, gNew) = try directionalEvaluate(closure, x: x, t: t, d: d)
            evaluationsHere += 1
            gtdNew = .tensor(Vector.dot(gNew, d))
            iteration += 1
            if armijoFails(fNew, t) || fNew >= bracketF[low] {
                bracket[high] = t
                bracketF[high] = fNew
                bracketG[high] = gNew
                bracketGtd[high] = gtdNew
                (low, high) = bracketF[0] <= bracketF[1] ? (0, 1) : (1, 0)
            } else {
                if gtdNew.absolute <= .python(-c2) * gtd {
                    done = true
                } else if gtdNew * (bracket[high] - bracket[low]) >= .python(0) {
                    bracket[high] = bracket[low]
                    bracketF[high] = bracketF[low]
                    bracketG[high] = bracketG[low]
                    bracketGtd[high] = bracketGtd[low]
                }
                bracket[low] = t
                bracketF[low] = fNew
                bracketG[low] = gNew
                bracketGtd[low] = gtdNew
            }
        }
        return (bracketF[low], bracketG[low], bracket[low], evaluationsHere)
    }

    /// torch's `_cubic_interpolate`: the minimiser of the cubic through two points with their
    /// slopes, clamped to the bounds (the interval between the points by default).
    static func cubicInterpolate(_ x1: TorchScalar, _ f1: Double, _ g1: TorchScalar, _ x2: TorchScalar, _ f2: Double, _ g2: TorchScalar,
                                 bounds: (TorchScalar, TorchScalar)?) -> TorchScalar {
        let (lower, upper) = bounds ?? (x1 <= x2 ? (x1, x2) : (x2, x1))
        let d1 = g1 + g2 - .python(3) * (.python(f1) - .python(f2)) / (x1 - x2)
        let d2Square = d1 * d1 - g1 * g2
        guard d2Square >= .python(0) else { return (lower + upper) / .python(2) }
        let d2 = d2Square.squareRoot
        let minimum = x1 <= x2
            ? x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + .python(2) * d2))
            : x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + .python(2) * d2))
        return TorchScalar.minimum(TorchScalar.maximum(minimum, lower), upper)
    }

    // MARK: checkpoints

    public func snapshot() -> OptimizerSnapshot {
        var wrapper: [String: Double] = ["n_iter": Double(iterations), "func_evals": Double(evaluations), "steps": Double(steps),
                                         "history": Double(search.oldDirections.count)]
        if let t = search.stepLength {
            wrapper["t"] = t.double
            wrapper["t_is_tensor"] = t.isTensor ? 1 : 0
        }
        wrapper["H_diag"] = search.hessianDiagonal.double
        wrapper["H_diag_is_tensor"] = search.hessianDiagonal.isTensor ? 1 : 0
        if let loss = search.previousLoss { wrapper["prev_loss"] = loss }
        var states: [String: OptimizerSnapshot.ParameterState] = [:]
        for parameter in parameters {
            states[parameter.name] = .init(stepCount: steps, buffers: parameter === parameters[0] ? buffers(search) : [:], gradientScale: 1)
        }
        return OptimizerSnapshot(optimizer: Self.name,
                                 groups: [.init(parameterNames: parameters.map(\.name), hyperparameters: hyperparameters.dictionary,
                                                initialLearningRate: initialLearningRate)],
                                 parameters: states, skippedSteps: skippedSteps, wrapper: wrapper)
    }

    /// Restores a snapshot of L-BFGS over the same parameters; checks all of it first and, on a
    /// mismatch, throws and changes nothing.
    public func restore(_ snapshot: OptimizerSnapshot) throws(OptimError) {
        guard snapshot.optimizer == Self.name, snapshot.base == nil else {
            throw .checkpointMismatch("the checkpoint is for optimizer '\(snapshot.optimizer)', not 'lbfgs'")
        }
        guard snapshot.groups.count == 1, snapshot.groups[0].parameterNames == parameters.map(\.name) else {
            throw .checkpointMismatch("the checkpoint holds other parameters: \(snapshot.groups.map(\.parameterNames))")
        }
        let restored = try Hyperparameters(snapshot.groups[0].hyperparameters)
        try restored.validate()
        func integer(_ key: String) throws(OptimError) -> Int {
            guard let value = snapshot.wrapper[key], value >= 0, value == value.rounded(), value < 1e15 else {
                throw .checkpointMismatch("lbfgs: missing or invalid '\(key)'")
            }
            return Int(value)
        }
        let (iterationCount, evaluationCount, stepCount, history) = (try integer("n_iter"), try integer("func_evals"), try integer("steps"), try integer("history"))
        guard snapshot.skippedSteps >= 0, snapshot.initialLearningRateIsValid else { throw .checkpointMismatch("lbfgs: invalid counters") }
        let buffers = snapshot.parameters[parameters[0].name]?.buffers ?? [:]
        var state = SearchState()
        func vector(_ name: String, _ length: Int) throws(OptimError) -> [Float]? {
            guard let values = buffers[name] else { return nil }
            guard values.count == length else { throw .checkpointMismatch("lbfgs: '\(name)' holds \(values.count) values, expected \(length)") }
            return values
        }
        state.direction = try vector("d", count)
        state.previousGradient = try vector("prev_flat_grad", count)
        if history > 0 {
            guard let directions = try vector("old_dirs", history * count), let steps = try vector("old_stps", history * count),
                  let ro = try vector("ro", history) else { throw .checkpointMismatch("lbfgs: the history is incomplete") }
            state.oldDirections = (0..<history).map { Array(directions[($0 * count)..<(($0 + 1) * count)]) }
            state.oldSteps = (0..<history).map { Array(steps[($0 * count)..<(($0 + 1) * count)]) }
            state.ro = ro.map { .tensor($0) }
        }
        if let t = snapshot.wrapper["t"] { state.stepLength = snapshot.wrapper["t_is_tensor"] == 1 ? .tensor(Float(t)) : .python(t) }
        if let diagonal = snapshot.wrapper["H_diag"] {
            state.hessianDiagonal = snapshot.wrapper["H_diag_is_tensor"] == 1 ? .tensor(Float(diagonal)) : .python(diagonal)
        }
        state.previousLoss = snapshot.wrapper["prev_loss"]
        guard (iterationCount == 0) == (state.direction == nil) else { throw .checkpointMismatch("lbfgs: the iteration count and the search state disagree") }
        // Apply; nothing below can fail.
        hyperparameters = restored
        search = state
        (iterations, evaluations, steps, skippedSteps) = (iterationCount, evaluationCount, stepCount, snapshot.skippedSteps)
    }
}

extension OptimizerSnapshot {
    var initialLearningRateIsValid: Bool { groups.allSatisfy { $0.initialLearningRate.isFinite && $0.initialLearningRate > 0 } }
}

/// A scalar as `torch.optim.LBFGS` holds it: a 0-dim float32 tensor or a Python float. An
/// operation with a tensor operand is a float32 operation (the Python float rounded to float32
/// first), as torch's type promotion makes it; between Python floats it is double. Comparisons
/// follow the same rule, and `minimum`/`maximum` return one of their operands, as Python's
/// `min`/`max` do.
enum TorchScalar: Equatable {
    case tensor(Float)
    case python(Double)

    var isTensor: Bool { if case .tensor = self { return true } else { return false } }
    var float: Float {
        switch self {
        case let .tensor(value): return value
        case let .python(value): return Float(value)
        }
    }
    var double: Double {
        switch self {
        case let .tensor(value): return Double(value)
        case let .python(value): return value
        }
    }

    @inline(__always)
    static func combine(_ a: Self, _ b: Self, _ float: (Float, Float) -> Float, _ double: (Double, Double) -> Double) -> Self {
        if case let .python(x) = a, case let .python(y) = b { return .python(double(x, y)) }
        return .tensor(float(a.float, b.float))
    }

    @inline(__always)
    static func compare(_ a: Self, _ b: Self, _ float: (Float, Float) -> Bool, _ double: (Double, Double) -> Bool) -> Bool {
        if case let .python(x) = a, case let .python(y) = b { return double(x, y) }
        return float(a.float, b.float)
    }

    static func + (a: Self, b: Self) -> Self { combine(a, b, +, +) }
    static func - (a: Self, b: Self) -> Self { combine(a, b, -, -) }
    static func * (a: Self, b: Self) -> Self { combine(a, b, *, *) }
    /// A Python float divided by a tensor is `tensor.reciprocal() * float` in torch
    /// (`Tensor.__rtruediv__`), which rounds twice.
    static func / (a: Self, b: Self) -> Self {
        if case let .python(x) = a, case let .tensor(y) = b { return .tensor((1 / y) * Float(x)) }
        return combine(a, b, /, /)
    }
    static prefix func - (a: Self) -> Self {
        switch a {
        case let .tensor(value): return .tensor(-value)
        case let .python(value): return .python(-value)
        }
    }
    static func < (a: Self, b: Self) -> Bool { compare(a, b, <, <) }
    static func <= (a: Self, b: Self) -> Bool { compare(a, b, <=, <=) }
    static func > (a: Self, b: Self) -> Bool { compare(a, b, >, >) }
    static func >= (a: Self, b: Self) -> Bool { compare(a, b, >=, >=) }

    var absolute: Self {
        switch self {
        case let .tensor(value): return .tensor(abs(value))
        case let .python(value): return .python(abs(value))
        }
    }

    /// `tensor.sqrt()` (only tensors have it in torch's code).
    var squareRoot: Self { .tensor(float.squareRoot()) }

    /// Python's `min(a, b)`: `b` when `b < a`, else `a`.
    static func minimum(_ a: Self, _ b: Self) -> Self { b < a ? b : a }
    /// Python's `max(a, b)`: `b` when `b > a`, else `a`.
    static func maximum(_ a: Self, _ b: Self) -> Self { b > a ? b : a }
}

/// The flat-vector operations of L-BFGS, in float32 as torch's. Reductions add in the order
/// torch's CPU kernels were measured to use on short vectors (tools/reference/README.md): a dot
/// product in two interleaved partial sums (exact to torch's for up to 4 elements), a sum in
/// order (exact for up to 4); on longer vectors BLAS's order differs and results agree to
/// float32 rounding.
enum Vector {
    static func dot(_ a: [Float], _ b: [Float]) -> Float {
        var even: Float = 0, odd: Float = 0
        let pairs = a.count / 2 * 2
        var index = 0
        while index < pairs {
            even = even + a[index] * b[index]
            odd = odd + a[index + 1] * b[index + 1]
            index += 2
        }
        var sum = even + odd
        if pairs < a.count { sum = sum + a[pairs] * b[pairs] }
        return sum
    }

    static func maxAbs(_ a: [Float]) -> Float {
        var result: Float = 0
        for value in a {
            if value.isNaN { return value }
            result = max(result, abs(value))
        }
        return result
    }

    static func absSum(_ a: [Float]) -> Float {
        var sum: Float = 0
        for value in a { sum = sum + abs(value) }
        return sum
    }

    static func negated(_ a: [Float]) -> [Float] { a.map { -$0 } }
    static func subtract(_ a: [Float], _ b: [Float]) -> [Float] { zip(a, b).map { $0 - $1 } }
    static func scaled(_ a: [Float], _ factor: Float) -> [Float] { a.map { $0 * factor } }

    /// `a.add_(b, alpha=alpha)`, which torch's CPU kernel computes as one fused multiply-add.
    static func add(_ a: inout [Float], _ b: [Float], alpha: Float) {
        for index in a.indices { a[index] = a[index].addingProduct(alpha, b[index]) }
    }
}

extension LBFGS: RegistryEntry {
    /// The registry entry.
    public static let info = OptimizerInfo(
        name: name, typeName: "LBFGS",
        reference: .init(library: "PyTorch", version: "2.15", symbol: "torch.optim.LBFGS",
                         paper: "Liu & Nocedal, 1989, \"On the limited memory BFGS method for large scale optimization\", Math. Programming 45"),
        defaults: Hyperparameters().dictionary, isWrapper: false, updatesWholeTensors: true, requiresClosure: true,
        suggested: ["lr": .number(1), "line_search_fn": .string("strong_wolfe")],
        samples: .init(basic: .init(name: name, hyperparameters: ["lr": .number(0.1)]),
                       quadratic: .init(name: name, hyperparameters: ["line_search_fn": .string("strong_wolfe")]),
                       rosenbrock: .init(name: name, hyperparameters: ["line_search_fn": .string("strong_wolfe")])),
        benchmark: .init(configuration: .init(name: name),
                         reference: .none(reason: "closure-driven: it evaluates the model several times per step")),
        make: { configuration, groups, _ throws(OptimError) in
            if configuration.base != nil { throw .invalidConfiguration("lbfgs does not wrap another optimizer; remove 'base'") }
            guard groups.count == 1 else {
                throw .invalidConfiguration("lbfgs takes one parameter group (as torch's), got \(groups.count)")
            }
            let values = configuration.hyperparameters.merging(groups[0].overrides) { $1 }
            return try LBFGS(groups[0].parameters, hyperparameters: try Hyperparameters(values))
        })
}
