import Foundation

/// The nonlinearity between the layers of an ``MLP``.
public enum Activation: String, Sendable, CaseIterable {
    /// ReLU(x) = max(x, 0); its derivative is taken as 1 for x > 0 and 0 otherwise (as PyTorch).
    case relu
    /// The exact GELU of Hendrycks & Gimpel ("Gaussian Error Linear Units", 2016), PyTorch's
    /// default (`approximate="none"`): GELU(x) = x·Φ(x) = x/2 · (1 + erf(x/√2)), whose derivative is
    /// Φ(x) + x·φ(x) with φ(x) = exp(−x²/2)/√(2π).
    case gelu

    /// `output[i] = f(input[i])` for the first `count` elements.
    func apply(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .relu:
            for i in 0..<count { output[i] = max(input[i], 0) }
        case .gelu:
            for i in 0..<count {
                let x = input[i]
                output[i] = 0.5 * x * (1 + erff(x * Self.inverseSquareRootOfTwo))
            }
        }
    }

    /// `gradient[i] *= f′(input[i])` for the first `count` elements: the gradient with respect to
    /// the activation's output becomes the gradient with respect to its input.
    func backward(_ input: UnsafePointer<Float>, _ gradient: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .relu:
            for i in 0..<count where !(input[i] > 0) { gradient[i] = 0 }
        case .gelu:
            for i in 0..<count {
                let x = input[i]
                let cdf = 0.5 * (1 + erff(x * Self.inverseSquareRootOfTwo))
                let pdf = expf(-0.5 * x * x) * Self.inverseSquareRootOfTwoPi
                gradient[i] *= cdf + x * pdf
            }
        }
    }

    private static let inverseSquareRootOfTwo: Float = 0.707_106_781_186_547_524_40
    private static let inverseSquareRootOfTwoPi: Float = 0.398_942_280_401_432_677_94
}
