/// The sums one parameter's optimizer metrics are made of — the "pre-reduced" form of LLM
/// Foundry's `DecoupledLionW.pre_reduce_metrics` (`llmfoundry.optim`), in
/// which every value is a plain sum over elements and so also a plain SUM across ranks that each
/// hold a shard of the parameter.
///
/// "update" is the step actually subtracted from the parameter, `u = p_before − p_after`, weight
/// decay included. LLM Foundry's `report_per_parameter_metrics` recomputes it as
/// `lr·sign(…) − wd·(lr/lr₀)·p`: the sign term is the step subtracted, but the decay term enters
/// with the opposite sign (the decay subtracts `+wd·(lr/lr₀)·p`), and it is rebuilt from the
/// moment *after* the update instead of the one that was used. We report the step that was
/// applied, so `‖update‖` and `cosine/update_grad` are exact for every optimizer, and agree with
/// LLM Foundry's formula when weight decay is 0 and the moment is the one used.
public struct ParameterMetricSums: Sendable, Equatable {
    /// `Σ m²` over the first moment (Adam family, Lion, ADOPT: `exp_avg`; SGD: the momentum
    /// buffer), after the update; `nil` when the optimizer keeps none.
    public var momentSquared: Double?
    /// `Σ p²` after the update.
    public var parameterSquared: Double
    /// `Σ u²`.
    public var updateSquared: Double
    /// `Σ g²` over the gradient the update used (after any clipping factor).
    public var gradientSquared: Double
    /// `Σ u·g`.
    public var updateDotGradient: Double
    /// `Σ m·g`, `nil` without a moment.
    public var momentDotGradient: Double?

    /// The six sums of one parameter; the moment's are `nil` for an optimizer that keeps none.
    public init(momentSquared: Double?, parameterSquared: Double, updateSquared: Double, gradientSquared: Double,
                updateDotGradient: Double, momentDotGradient: Double?) {
        self.momentSquared = momentSquared
        self.parameterSquared = parameterSquared
        self.updateSquared = updateSquared
        self.gradientSquared = gradientSquared
        self.updateDotGradient = updateDotGradient
        self.momentDotGradient = momentDotGradient
    }

    /// Element-wise sum, for shards of one parameter.
    public static func + (a: Self, b: Self) -> Self {
        func add(_ x: Double?, _ y: Double?) -> Double? { x.map { $0 + (y ?? 0) } ?? y }
        return Self(momentSquared: add(a.momentSquared, b.momentSquared), parameterSquared: a.parameterSquared + b.parameterSquared,
                    updateSquared: a.updateSquared + b.updateSquared, gradientSquared: a.gradientSquared + b.gradientSquared,
                    updateDotGradient: a.updateDotGradient + b.updateDotGradient,
                    momentDotGradient: add(a.momentDotGradient, b.momentDotGradient))
    }
}

/// Per-parameter optimizer metrics, as LLM Foundry's `DecoupledLionW` (`llmfoundry.optim`)
/// defines them: `l2_norm/moment`,
/// `l2_norm/param`, `l2_norm/update`, `l2_norm/grad`, `cosine/update_grad`, `cosine/moment_grad`,
/// each keyed `METRIC/PARAMNAME`.
///
/// Across ranks: ``preReduced`` is the form to SUM (squared norms; cosines carried as dot
/// products, as `pre_reduce_metrics` does), and ``finalize(_:)`` turns a summed dictionary into
/// true global norms and cosines. Cosines follow `torch.nn.functional.cosine_similarity`
/// (`dot / max(‖a‖·‖b‖, 1e-8)`).
public struct OptimizerMetrics: Sendable, Equatable {
    /// The sums, by parameter name.
    public var sums: [String: ParameterMetricSums]

    /// Metrics from each parameter's sums, by parameter name.
    public init(sums: [String: ParameterMetricSums]) { self.sums = sums }

    /// The metric names, in LLM Foundry's order.
    public static let names = ["l2_norm/moment", "l2_norm/param", "l2_norm/update", "l2_norm/grad", "cosine/update_grad", "cosine/moment_grad"]

    /// The pre-reduced form: `l2_norm/*` squared, `cosine/*` as dot products.
    public var preReduced: [String: Double] {
        var result: [String: Double] = [:]
        for (name, s) in sums {
            result["l2_norm/param/\(name)"] = s.parameterSquared
            result["l2_norm/update/\(name)"] = s.updateSquared
            result["l2_norm/grad/\(name)"] = s.gradientSquared
            result["cosine/update_grad/\(name)"] = s.updateDotGradient
            if let moment = s.momentSquared, let dot = s.momentDotGradient {
                result["l2_norm/moment/\(name)"] = moment
                result["cosine/moment_grad/\(name)"] = dot
            }
        }
        return result
    }

    /// Norms and cosines.
    public var values: [String: Double] { Self.finalize(preReduced) }

    /// Turns a (summed) pre-reduced dictionary into norms and cosines: `l2_norm/X/P` → `√`,
    /// `cosine/A_B/P` → `dot / max(‖A‖·‖B‖, 1e-8)` with the norms from the same dictionary.
    public static func finalize(_ preReduced: [String: Double]) -> [String: Double] {
        var result: [String: Double] = [:]
        for (key, value) in preReduced where key.hasPrefix("l2_norm/") {
            result[key] = value.squareRoot()
        }
        for (key, dot) in preReduced where key.hasPrefix("cosine/") {
            let parts = key.split(separator: "/", maxSplits: 2).map(String.init)
            guard parts.count == 3 else { continue }
            let vectors = parts[1].split(separator: "_").map(String.init)
            guard vectors.count == 2, let a = preReduced["l2_norm/\(vectors[0])/\(parts[2])"],
                  let b = preReduced["l2_norm/\(vectors[1])/\(parts[2])"] else { continue }
            result[key] = dot / max((a * b).squareRoot(), 1e-8)
        }
        return result
    }

    /// Element-wise sum of pre-reduced dictionaries (what an allreduce with SUM computes).
    public static func sum(_ dictionaries: [[String: Double]]) -> [String: Double] {
        dictionaries.reduce(into: [:]) { total, next in total.merge(next, uniquingKeysWith: +) }
    }
}
