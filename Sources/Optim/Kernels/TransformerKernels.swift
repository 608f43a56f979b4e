/// The element-wise and row-wise pieces of a transformer's training step (everything but the
/// matrix products, which are ``MatMul``'s): vectorised exp, the tanh-approximated GELU, layer
/// norm and the causal softmax, each forward and backward.
///
/// Vectors are `SIMD16<Float>`; a tail shorter than 16 is padded into a vector and given the same
/// arithmetic, so a value does not depend on where it sits in its buffer.
///
/// Like the update rules' loops, these are inlined into their callers and compiled with the
/// caller's instruction set: call them through ``TransformerKernelSet`` (from
/// ``KernelDispatch/transformerKernels(_:)``), whose closures the kernel modules compile for
/// AVX2 and AVX-512; calling them directly runs the baseline instructions of the calling module.
public enum TransformerKernels {
    /// The vector the kernels compute with.
    public typealias Vector = SIMD16<Float>

    // MARK: - exp and tanh

    /// eˣ for every lane, within about 2 ulp: x = n·ln 2 + r with |r| ≤ ln 2 / 2 (n rounded by the
    /// 1.5·2²³ trick, ln 2 in two parts), eʳ by Cephes' degree-6 polynomial, 2ⁿ put into the
    /// exponent bits. Below −87.3 the result is flushed to 0, above 88.7 it is +∞.
    @inlinable @inline(__always)
    public static func exp(_ x: Vector) -> Vector {
        let clamped = pointwiseMax(pointwiseMin(x, Vector(repeating: 88.72283)), Vector(repeating: -87.33654))
        let shifted = clamped * Vector(repeating: 1.442_695_04) + Vector(repeating: 12_582_912)
        let n = shifted - Vector(repeating: 12_582_912)
        var r = clamped - n * Vector(repeating: 0.693_359_375)
        r = r - n * Vector(repeating: -2.121_944_4e-4)
        var p = Vector(repeating: 1.987_569_15e-4)
        p = p * r + Vector(repeating: 1.398_199_95e-3)
        p = p * r + Vector(repeating: 8.333_451_9e-3)
        p = p * r + Vector(repeating: 4.166_579_59e-2)
        p = p * r + Vector(repeating: 1.666_666_55e-1)
        p = p * r + Vector(repeating: 5.000_000_12e-1)
        let y = p * (r * r) + r + Vector(repeating: 1)
        // n sits in the low mantissa bits of `shifted` (0x4B40_0000 + n).
        let bits = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000
        let scale = unsafeBitCast((bits &+ 127) &<< 23, to: Vector.self)
        let result = y * scale
        // exp(-87.34) underflows the scale's exponent: flush to 0 rather than produce garbage.
        return result.replacing(with: 0, where: x .< Vector(repeating: -87.33654))
    }

    /// tanh for every lane: 1 − 2 / (e²ᵘ + 1) (±1 beyond |u| ≈ 9, where e²ᵘ saturates).
    @inlinable @inline(__always)
    public static func tanh(_ u: Vector) -> Vector {
        Vector(repeating: 1) - Vector(repeating: 2) / (exp(u + u) + Vector(repeating: 1))
    }

    @inlinable @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>, _ count: Int) -> Vector {
        if count >= 16 { return UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self) }
        var v = Vector()
        for i in 0..<count { v[i] = pointer[i] }
        return v
    }

    @inlinable @inline(__always)
    static func store(_ v: Vector, _ pointer: UnsafeMutablePointer<Float>, _ count: Int) {
        if count >= 16 { UnsafeMutableRawPointer(pointer).storeBytes(of: v, as: Vector.self); return }
        for i in 0..<count { pointer[i] = v[i] }
    }

    // MARK: - GELU (tanh approximation)

    /// √(2/π), the GELU's inner scale.
    @inlinable public static var geluA: Float { 0.797_884_560_802_865_355_88 }
    /// The GELU's cubic coefficient.
    @inlinable public static var geluB: Float { 0.044_715 }

    /// `output = GELU(input)` for `count` elements, PyTorch's `approximate="tanh"`:
    /// GELU(x) = x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³))); the tanh is kept in `tanhOut` for the
    /// backward pass (which then needs no exp).
    @_transparent
    public static func gelu(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, tanhOut: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            let width = min(16, count - i)
            let x = load(input + i, width)
            let t = tanh(Vector(repeating: geluA) * (x + Vector(repeating: geluB) * x * x * x))
            store(t, tanhOut + i, width)
            store(Vector(repeating: 0.5) * x * (Vector(repeating: 1) + t), output + i, width)
            i += 16
        }
    }

    /// `gradient *= GELU′(input)` for `count` elements, with `tanh` from the forward pass:
    /// GELU′(x) = ½(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²).
    @_transparent
    public static func geluBackward(_ input: UnsafePointer<Float>, tanh: UnsafePointer<Float>, _ gradient: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            let width = min(16, count - i)
            let x = load(input + i, width)
            let t = load(tanh + i, width)
            let half = Vector(repeating: 0.5), one = Vector(repeating: 1)
            let slope: Vector = Vector(repeating: geluA) * (one + Vector(repeating: 3 * geluB) * (x * x))
            let derivative: Vector = half * (one + t) + half * x * (one - t * t) * slope
            store(load(gradient + i, width) * derivative, gradient + i, width)
            i += 16
        }
    }

    // MARK: - Layer norm

    /// PyTorch's `nn.LayerNorm` epsilon.
    @inlinable public static var layerNormEpsilon: Float { 1e-5 }

    /// Normalises `rows` rows of `width`: out = (x − mean)/√(var + ε)·γ + β (biased variance), and
    /// keeps each row's mean and 1/√(var + ε) for the backward pass.
    @_transparent
    public static func layerNorm(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                          gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, rows: Range<Int>, width: Int) {
        for row in rows {
            let input = x + row * width, output = out + row * width
            var sum = Vector()
            var j = 0
            while j < width { sum += load(input + j, min(16, width - j)); j += 16 }
            let m = sum.sum() / Float(width)
            var squares = Vector()
            j = 0
            while j < width {
                let w = min(16, width - j)
                var d = load(input + j, w) - Vector(repeating: m)
                if w < 16 { for lane in w..<16 { d[lane] = 0 } }
                squares += d * d
                j += 16
            }
            let r = 1 / (squares.sum() / Float(width) + layerNormEpsilon).squareRoot()
            j = 0
            while j < width {
                let w = min(16, width - j)
                store((load(input + j, w) - Vector(repeating: m)) * Vector(repeating: r) * load(gamma + j, w) + load(beta + j, w), output + j, w)
                j += 16
            }
            mean[row] = m
            rstd[row] = r
        }
    }

    /// The layer norm's backward pass for `rows`: adds ∂loss/∂x to `dx` and ∂loss/∂γ, ∂loss/∂β to
    /// `dGamma`, `dBeta`. With x̂ = (x − mean)·rstd and g = dout·γ:
    /// dx = rstd · (g − mean(g) − x̂ · mean(g·x̂)).
    @_transparent
    public static func layerNormBackward(_ dout: UnsafePointer<Float>, _ x: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                  gamma: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                  dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>, rows: Range<Int>, width: Int) {
        for row in rows {
            let d = dout + row * width, input = x + row * width, gradient = dx + row * width
            let m = Vector(repeating: mean[row]), r = Vector(repeating: rstd[row])
            var sumG = Vector(), sumGX = Vector()
            var j = 0
            while j < width {
                let w = min(16, width - j)
                let xhat = (load(input + j, w) - m) * r
                let dv = load(d + j, w)
                let g = dv * load(gamma + j, w)
                sumG += g
                sumGX += g * xhat
                store(load(dGamma + j, w) + dv * xhat, dGamma + j, w)
                store(load(dBeta + j, w) + dv, dBeta + j, w)
                j += 16
            }
            // Lanes past the width load zeros for d, so they add nothing to the sums.
            let meanG = Vector(repeating: sumG.sum() / Float(width)), meanGX = Vector(repeating: sumGX.sum() / Float(width))
            j = 0
            while j < width {
                let w = min(16, width - j)
                let xhat = (load(input + j, w) - m) * r
                let g = load(d + j, w) * load(gamma + j, w)
                store(load(gradient + j, w) + r * (g - meanG - xhat * meanGX), gradient + j, w)
                j += 16
            }
        }
    }

    // MARK: - Causal softmax

    /// Row i of a `length × length` score matrix: scaled by `scale`, positions j > i masked out,
    /// softmax over j ≤ i; the masked positions are set to 0.
    @_transparent
    public static func causalSoftmax(_ scores: UnsafeMutablePointer<Float>, length: Int, scale: Float) {
        for i in 0..<length {
            let row = scores + i * length
            let count = i + 1
            var largest = -Float.infinity
            for j in 0..<count { largest = max(largest, row[j] * scale) }
            var sum: Float = 0
            var j = 0
            while j < count {
                let width = min(16, count - j)
                let e = exp(load(row + j, width) * Vector(repeating: scale) - Vector(repeating: largest))
                store(e, row + j, width)
                for lane in 0..<width { sum += e[lane] }
                j += 16
            }
            let inverse = 1 / sum
            for j in 0..<count { row[j] *= inverse }
            for j in count..<length { row[j] = 0 }
        }
    }

    /// The softmax's backward pass, in place: `gradient` holds ∂loss/∂P on entry and
    /// ∂loss/∂(unscaled scores) on return, dS = scale · P ⊙ (dP − Σⱼ Pⱼ dPⱼ) (0 where masked).
    @_transparent
    public static func causalSoftmaxBackward(_ probabilities: UnsafePointer<Float>, _ gradient: UnsafeMutablePointer<Float>, length: Int, scale: Float) {
        for i in 0..<length {
            let p = probabilities + i * length, g = gradient + i * length
            var dot: Float = 0
            for j in 0...i { dot += p[j] * g[j] }
            for j in 0...i { g[j] = scale * p[j] * (g[j] - dot) }
            for j in (i + 1)..<length { g[j] = 0 }
        }
    }
}

/// The ``TransformerKernels`` as compiled for one instruction set: function values filled in by a
/// kernel module (``KernelTable/setTransformerKernels(_:)``), or the baseline ones compiled into
/// `Optim`. Get them from ``KernelDispatch/transformerKernels(_:)``; each closure takes the
/// arguments of the kernel of the same name, in order.
public struct TransformerKernelSet: @unchecked Sendable {
    /// ``TransformerKernels/gelu(_:_:tanhOut:count:)``: input, output, tanh out, count.
    public let gelu: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    /// ``TransformerKernels/geluBackward(_:tanh:_:count:)``: input, tanh, gradient, count.
    public let geluBackward: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    /// ``TransformerKernels/layerNorm(_:_:mean:rstd:gamma:beta:rows:width:)``.
    public let layerNorm: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                           UnsafePointer<Float>, UnsafePointer<Float>, Range<Int>, Int) -> Void
    /// ``TransformerKernels/layerNormBackward(_:_:mean:rstd:gamma:dx:dGamma:dBeta:rows:width:)``.
    public let layerNormBackward: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                                   UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Range<Int>, Int) -> Void
    /// ``TransformerKernels/causalSoftmax(_:length:scale:)``.
    public let causalSoftmax: (UnsafeMutablePointer<Float>, Int, Float) -> Void
    /// ``TransformerKernels/causalSoftmaxBackward(_:_:length:scale:)``.
    public let causalSoftmaxBackward: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Float) -> Void

    /// A set from its closures (a kernel module writes them, each calling its kernel, so that the
    /// kernel is inlined and compiled there).
    public init(gelu: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
                geluBackward: @escaping (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
                layerNorm: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                      UnsafePointer<Float>, UnsafePointer<Float>, Range<Int>, Int) -> Void,
                layerNormBackward: @escaping (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                                              UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Range<Int>, Int) -> Void,
                causalSoftmax: @escaping (UnsafeMutablePointer<Float>, Int, Float) -> Void,
                causalSoftmaxBackward: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Float) -> Void) {
        self.gelu = gelu
        self.geluBackward = geluBackward
        self.layerNorm = layerNorm
        self.layerNormBackward = layerNormBackward
        self.causalSoftmax = causalSoftmax
        self.causalSoftmaxBackward = causalSoftmaxBackward
    }

    /// The kernels as compiled into `Optim` itself: the baseline path.
    static let baseline = TransformerKernelSet(
        gelu: { TransformerKernels.gelu($0, $1, tanhOut: $2, count: $3) },
        geluBackward: { TransformerKernels.geluBackward($0, tanh: $1, $2, count: $3) },
        layerNorm: { TransformerKernels.layerNorm($0, $1, mean: $2, rstd: $3, gamma: $4, beta: $5, rows: $6, width: $7) },
        layerNormBackward: { TransformerKernels.layerNormBackward($0, $1, mean: $2, rstd: $3, gamma: $4, dx: $5, dGamma: $6, dBeta: $7, rows: $8, width: $9) },
        causalSoftmax: { TransformerKernels.causalSoftmax($0, length: $1, scale: $2) },
        causalSoftmaxBackward: { TransformerKernels.causalSoftmaxBackward($0, $1, length: $2, scale: $3) })
}
