import Optim

/// An objective a fixture gives for closure-driven optimizers (L-BFGS): the replay evaluates it
/// at the parameters, flattened in file order, each time the optimizer calls its closure.
///
/// This project's extension of `optim-fixture/1` (tools/reference/README.md): a top-level
/// `"objective"` object, steps without `grads`, and in each step `"evaluations"`, the reference's
/// count of closure calls since the start. Every operation is float32, in the order written
/// here, as the generator computes it (NumPy float32 scalars), so the gradients agree bit for bit.
public enum Objective: Sendable, Equatable {
    /// Σᵢ 100·(xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)², Rosenbrock's chained function.
    case rosenbrock
    /// Σᵢ ½·hᵢ·(xᵢ − cᵢ)² (a negative `hᵢ` makes it concave, for `maximize`).
    case quadratic(curvature: [Float], center: [Float])

    /// The loss at `x`, writing the gradient into `gradient` (of `x`'s size).
    public func evaluate(_ x: [Float], gradient: inout [Float]) -> Float {
        for index in gradient.indices { gradient[index] = 0 }
        var loss: Float = 0
        switch self {
        case .rosenbrock:
            for i in 0..<max(x.count - 1, 0) {
                let a = 1 - x[i]
                let b = x[i + 1] - x[i] * x[i]
                let term = 100 * (b * b) + a * a
                loss = loss + term
                gradient[i] = gradient[i] + (-2 * a - 400 * x[i] * b)
                gradient[i + 1] = gradient[i + 1] + 200 * b
            }
        case let .quadratic(curvature, center):
            for i in x.indices {
                let d = x[i] - center[i]
                let e = curvature[i] * d
                loss = loss + 0.5 * (e * d)
                gradient[i] = e
            }
        }
        return loss
    }
}
