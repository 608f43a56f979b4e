import Foundation

extension Optimizer {
    /// Clips all gradients together to a global L2 norm of at most `maxNorm`, as
    /// `torch.nn.utils.clip_grad_norm_`: the factor `min(1, maxNorm / (norm + 1e-6))` is applied
    /// inside the next step's fused pass rather than by a pass of its own.
    ///
    /// - Returns: the global norm before clipping (parameters without a gradient don't count).
    @discardableResult
    public func clipGradientNorm(maxNorm: Double, threadPool: ThreadPool = .shared) throws(OptimError) -> Double {
        try GradientClipping.checkLimit(maxNorm, "maxNorm")
        let (withGradient, sums) = try gradientSumsOfSquares(threadPool: threadPool)
        let norm = sums.reduce(0, +).squareRoot()
        let coefficient = Float(maxNorm) / (Float(norm) + 1e-6)
        if coefficient < 1 {
            for parameter in withGradient { try scaleNextGradient(of: parameter, by: coefficient) }
        }
        return norm
    }

    /// Clips each parameter's gradient to an L2 norm of at most `maxNorm` on its own, folded into
    /// the next step like ``clipGradientNorm(maxNorm:threadPool:)``.
    ///
    /// - Returns: each gradient's norm before clipping, by parameter name.
    @discardableResult
    public func clipGradientNormPerParameter(maxNorm: Double, threadPool: ThreadPool = .shared) throws(OptimError) -> [String: Double] {
        try GradientClipping.checkLimit(maxNorm, "maxNorm")
        let (withGradient, sums) = try gradientSumsOfSquares(threadPool: threadPool)
        var norms: [String: Double] = [:]
        for (parameter, sum) in zip(withGradient, sums) {
            let norm = sum.squareRoot()
            norms[parameter.name] = norm
            let coefficient = Float(maxNorm) / (Float(norm) + 1e-6)
            if coefficient < 1 { try scaleNextGradient(of: parameter, by: coefficient) }
        }
        return norms
    }
}

extension Optimizer {
    /// The parameters with a gradient and each one's sum of squares: over the gradients here, or
    /// over every rank's shard for an optimizer whose gradients are sharded.
    fileprivate func gradientSumsOfSquares(threadPool: ThreadPool) throws(OptimError) -> ([Parameter], [Double]) {
        if let sharded = self as? any ShardedGradientNorms, let sums = try sharded.gradientSumsOfSquares(threadPool: threadPool) {
            let present = zip(parameters, sums).filter { $0.1 != nil }
            return (present.map(\.0), present.map { $0.1! })
        }
        let withGradient = parameters.filter { $0.gradient != nil }
        return (withGradient, GradientNorms.sumsOfSquares(withGradient.map { UnsafeBufferPointer($0.gradient!) }, threadPool: threadPool))
    }
}

/// An optimizer whose gradients are not whole on this rank (ZeRO-2: each rank keeps a shard of
/// every gradient): gradient-norm clipping asks it for the sums of squares over the ranks.
package protocol ShardedGradientNorms: AnyObject {
    /// For each of the optimizer's `parameters`, the sum of squares of its gradient over every
    /// rank's shard, nil for one without a gradient; or nil when the gradients are whole here.
    /// Collective.
    func gradientSumsOfSquares(threadPool: ThreadPool) throws(OptimError) -> [Double?]?
}

/// Gradient clipping that is not a pure scale, applied to the gradients in place.
public enum GradientClipping {
    static func checkLimit(_ value: Double, _ name: String) throws(OptimError) {
        guard value.isFinite, value > 0 else {
            throw .invalidHyperparameter(optimizer: "clipping", name: name, value: HyperparameterValue.format(value), expected: "a finite number > 0")
        }
    }

    /// Clamps every gradient element to `[-maxValue, maxValue]`: `torch.nn.utils.clip_grad_value_`.
    public static func clipByValue(_ parameters: [Parameter], maxValue: Double) throws(OptimError) {
        try checkLimit(maxValue, "maxValue")
        let limit = Float(maxValue)
        for parameter in parameters {
            guard let gradient = parameter.gradient else { continue }
            for index in gradient.indices { gradient[index] = min(max(gradient[index], -limit), limit) }
        }
    }

    /// Adaptive gradient clipping (AGC, Brock et al. 2021, "NFNets"), unit-wise: for each unit —
    /// a row along the first dimension of a parameter with two or more dimensions, the whole
    /// parameter otherwise — a gradient whose norm reaches `clipping · max(‖w‖, eps)` is scaled to
    /// that norm (as timm's `adaptive_clip_grad`). Paper: arXiv:2102.06171.
    public static func clipAdaptively(_ parameters: [Parameter], clipping: Double = 0.01, eps: Double = 1e-3) throws(OptimError) {
        try checkLimit(clipping, "clipping")
        try checkLimit(eps, "eps")
        for parameter in parameters {
            guard let gradient = parameter.gradient, parameter.count > 0 else { continue }
            let units = parameter.shape.count >= 2 ? parameter.shape[0] : 1
            let size = parameter.count / max(units, 1)
            guard size > 0 else { continue }
            for unit in 0..<units {
                let range = unit * size..<(unit + 1) * size
                let weightNorm = GradientNorms.sumOfSquares(UnsafeBufferPointer(rebasing: parameter.values[range])).squareRoot()
                let gradientNorm = GradientNorms.sumOfSquares(UnsafeBufferPointer(rebasing: gradient[range])).squareRoot()
                let maxNorm = max(weightNorm, eps) * clipping
                guard gradientNorm >= maxNorm else { continue }
                let factor = Float(maxNorm / max(gradientNorm, 1e-6))
                for index in range { gradient[index] *= factor }
            }
        }
    }
}
