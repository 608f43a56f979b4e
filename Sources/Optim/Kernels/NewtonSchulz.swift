/// The quintic Newton–Schulz iteration that takes a matrix to about the nearest semi-orthogonal
/// one (`U·Vᵀ` of its SVD), shared by Muon and MARS-"shampoo": torch's
/// `_zeropower_via_newtonschulz` and pytorch-optimizer's `zero_power_via_newton_schulz_5`, which
/// do the same arithmetic.
///
/// ```
/// X ← X / max(‖X‖_F, ε)
/// repeat steps:  A = X·Xᵀ;  B = b·A + c·A·A;  X ← a·X + B·X
/// ```
/// The products run on ``MatMul`` (threaded on the pool); A = X·Xᵀ and A·A are symmetric, so only
/// their upper triangles are computed (the same bits: each mirrored element sums the same products
/// in the same order). In bfloat16 the products take MatMul's bfloat16-operand path (AVX512-BF16's
/// dot product where the CPU has it, as PyTorch's oneDNN does). With `bfloat16`, as the references
/// run it, every stored result — the normalised X, A, B and each new X — is rounded to bfloat16
/// while the products accumulate in float32; otherwise everything stays float32.
enum NewtonSchulz {
    /// Orthogonalises the row-major `short × long` matrix in `x` in place (`short ≤ long`; the
    /// caller transposes a tall matrix and, for bfloat16, rounds the values it writes).
    static func orthogonalize(_ x: UnsafeMutableBufferPointer<Float>, short: Int, long: Int, a: Float, b: Float, c: Float,
                              steps: Int, eps: Float, bfloat16: Bool, pool: ThreadPool) {
        let n = short * long
        precondition(x.count >= n && short <= long, "NewtonSchulz: a short × long matrix")
        guard n > 0 else { return }
        let round: (Float) -> Float = bfloat16 ? BFloat16.round : { $0 }
        var sumOfSquares = 0.0
        for i in 0..<n { sumOfSquares += Double(x[i]) * Double(x[i]) }
        let norm = max(round(Float(sumOfSquares.squareRoot())), round(eps))
        if bfloat16 {
            for i in 0..<n { x[i] = BFloat16.round(x[i] / norm) }
        } else {
            for i in 0..<n { x[i] = x[i] / norm }
        }
        guard steps > 0 else { return }
        let next = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let gram = UnsafeMutableBufferPointer<Float>.allocate(capacity: short * short)
        let square = UnsafeMutableBufferPointer<Float>.allocate(capacity: short * short)
        defer { [next, gram, square].forEach { $0.deallocate() } }
        let workspace = MatMul.Workspace()
        var current = UnsafeMutableBufferPointer(rebasing: x[0..<n]), other = next
        for _ in 0..<steps {
            // A = X·Xᵀ;  B = b·A + c·A·A;  X ← a·X + B·X, each result stored in the precision.
            MatMul.gemm(m: short, n: short, k: long, UnsafeBufferPointer(current), transposeA: false,
                        UnsafeBufferPointer(current), transposeB: true, gram, symmetric: true, bfloat16Operands: bfloat16,
                        workspace: workspace, pool: pool)
            let (g, s, cur, o) = (gram.baseAddress!, square.baseAddress!, current.baseAddress!, other.baseAddress!)
            if bfloat16 { parallel(short * short, pool) { for i in $0 { g[i] = BFloat16.round(g[i]) } } }
            MatMul.gemm(m: short, n: short, k: short, UnsafeBufferPointer(gram), transposeA: false,
                        UnsafeBufferPointer(gram), transposeB: false, square, symmetric: true, bfloat16Operands: bfloat16,
                        workspace: workspace, pool: pool)
            parallel(short * short, pool) { range in
                if bfloat16 {
                    for i in range { s[i] = BFloat16.round(b * g[i] + c * s[i]) }
                } else {
                    for i in range { s[i] = b * g[i] + c * s[i] }
                }
            }
            MatMul.gemm(m: short, n: long, k: short, UnsafeBufferPointer(square), transposeA: false,
                        UnsafeBufferPointer(current), transposeB: false, other, bfloat16Operands: bfloat16,
                        workspace: workspace, pool: pool)
            parallel(n, pool) { range in
                if bfloat16 {
                    for i in range { o[i] = BFloat16.round(a * cur[i] + o[i]) }
                } else {
                    for i in range { o[i] = a * cur[i] + o[i] }
                }
            }
            swap(&current, &other)
        }
        if current.baseAddress != x.baseAddress {
            for i in 0..<n { x[i] = current[i] }
        }
    }

    /// Runs `body` over `0..<count`, in one contiguous run per thread of the pool (elementwise
    /// passes: the same values whatever the split).
    static func parallel(_ count: Int, _ pool: ThreadPool, _ body: @escaping (Range<Int>) -> Void) {
        let parts = count >= 1 << 16 ? pool.threadCount : 1
        pool.run(parts) { part in body((part * count / parts)..<((part + 1) * count / parts)) }
    }
}
