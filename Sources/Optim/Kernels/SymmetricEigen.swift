import Foundation

/// Dense linear algebra for small matrices (n up to a few hundred): the eigendecomposition of a
/// symmetric matrix and the QR decomposition, as SOAP needs them for its preconditioner bases.
///
/// Both compute in Double from float32 (or Double) input and round the results to Float once,
/// so they are at least as accurate as a float32 LAPACK call; their column signs and the order of
/// equal eigenvalues are documented below but are not LAPACK's.
public enum SymmetricEigen {
    /// The eigendecomposition `A = V·diag(λ)·Vᵀ` of a symmetric `n × n` matrix.
    public struct Decomposition: Sendable {
        /// The eigenvalues in descending order.
        public var values: [Double]
        /// The eigenvectors as the **columns** of a row-major `n × n` matrix, column `j` belonging
        /// to `values[j]`. Each column has unit length and its entry of largest magnitude (the
        /// first such entry on a tie) positive.
        public var vectors: [Double]
        public var n: Int
    }

    /// The eigendecomposition of the symmetric `n × n` row-major `matrix`, of which only the
    /// **lower** triangle (with the diagonal) is read — as `torch.linalg.eigh`'s default
    /// `UPLO='L'`.
    ///
    /// Method: cyclic Jacobi in Double. Each sweep visits the pairs (p, q), p < q, row by row, and
    /// annihilates `a_pq` with the rotation whose tangent is the smaller root of
    /// `t² + 2τt − 1 = 0`, `τ = (a_qq − a_pp)/(2a_pq)`, accumulating the rotations into V. A pair is
    /// skipped when `|a_pq| ≤ ε·√|a_pp·a_qq|` (ε = Double's unit roundoff), the test that gives
    /// Jacobi its relative accuracy; the sweeps stop when one rotates nothing (at most 100 sweeps).
    /// Cost: about 6n³ flops per sweep, 6 to 10 sweeps — 10⁸ flops for n = 200. Eigenvalues are
    /// then sorted in descending order (a stable sort: equal eigenvalues keep Jacobi's order).
    public static func decompose(_ matrix: [Double], n: Int) -> Decomposition {
        precondition(n >= 0 && matrix.count >= n * n, "SymmetricEigen.decompose: matrix smaller than \(n) × \(n)")
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i where i < n {
                a[i * n + j] = matrix[i * n + j]
                a[j * n + i] = matrix[i * n + j]
            }
        }
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        let epsilon = Double.ulpOfOne / 2
        a.withUnsafeMutableBufferPointer { a in
            v.withUnsafeMutableBufferPointer { v in
                for _ in 0..<100 {
                    var rotated = false
                    for p in 0..<n {
                        for q in (p + 1)..<max(n, p + 1) {
                            let apq = a[p * n + q]
                            if apq == 0 { continue }
                            let app = a[p * n + p], aqq = a[q * n + q]
                            if abs(apq) <= epsilon * (abs(app) * abs(aqq)).squareRoot() {
                                a[p * n + q] = 0
                                a[q * n + p] = 0
                                continue
                            }
                            rotated = true
                            let tau = (aqq - app) / (2 * apq)
                            // t = sign(τ)/(|τ| + √(1 + τ²)), written to avoid overflow of τ².
                            let t: Double
                            if abs(tau) > 1e150 {
                                t = 1 / (2 * tau)
                            } else {
                                t = (tau >= 0 ? 1 : -1) / (abs(tau) + (1 + tau * tau).squareRoot())
                            }
                            let c = 1 / (1 + t * t).squareRoot(), s = t * c
                            a[p * n + p] = app - t * apq
                            a[q * n + q] = aqq + t * apq
                            a[p * n + q] = 0
                            a[q * n + p] = 0
                            for r in 0..<n where r != p && r != q {
                                let arp = a[r * n + p], arq = a[r * n + q]
                                let newP = c * arp - s * arq, newQ = s * arp + c * arq
                                a[r * n + p] = newP
                                a[p * n + r] = newP
                                a[r * n + q] = newQ
                                a[q * n + r] = newQ
                            }
                            for r in 0..<n {
                                let vrp = v[r * n + p], vrq = v[r * n + q]
                                v[r * n + p] = c * vrp - s * vrq
                                v[r * n + q] = s * vrp + c * vrq
                            }
                        }
                    }
                    if !rotated { break }
                }
            }
        }
        let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] || (a[$0 * n + $0] == a[$1 * n + $1] && $0 < $1) }
        var values = [Double](repeating: 0, count: n)
        var vectors = [Double](repeating: 0, count: n * n)
        for (column, source) in order.enumerated() {
            values[column] = a[source * n + source]
            var largest = 0
            for r in 0..<n where abs(v[r * n + source]) > abs(v[largest * n + source]) { largest = r }
            let sign: Double = v[largest * n + source] < 0 ? -1 : 1
            for r in 0..<n { vectors[r * n + column] = sign * v[r * n + source] }
        }
        return Decomposition(values: values, vectors: vectors, n: n)
    }

    /// ``decompose(_:n:)`` of a float32 matrix, its eigenvectors rounded to float32 into
    /// `vectors` (row-major `n × n`, columns in descending eigenvalue order). Returns the
    /// eigenvalues, descending.
    @discardableResult
    public static func decompose(_ matrix: UnsafeBufferPointer<Float>, n: Int, vectors: UnsafeMutableBufferPointer<Float>) -> [Double] {
        precondition(vectors.count >= n * n, "SymmetricEigen.decompose: output smaller than \(n) × \(n)")
        let result = decompose(matrix.prefix(n * n).map(Double.init), n: n)
        for i in 0..<(n * n) { vectors[i] = Float(result.vectors[i]) }
        return result.values
    }

    /// The reduced QR decomposition `A = Q·R` of a row-major `m × n` matrix, `k = min(m, n)`:
    /// Q is `m × k` with orthonormal columns, R is `k × n` upper triangular, both row-major.
    ///
    /// Method: Householder reflections in Double (`H_j = I − 2·v·vᵀ`, v chosen so that `H_j·x` is
    /// `−sign(x₀)·‖x‖·e₀`, avoiding cancellation), Q accumulated backwards from the identity.
    /// Convention: the signs are then fixed so that **R's diagonal is non-negative**; for a matrix
    /// of full column rank that makes Q and R unique (`torch.linalg.qr`, i.e. LAPACK, may differ
    /// from it by the sign of each column of Q and the matching row of R).
    public static func qr(_ matrix: [Double], rows m: Int, columns n: Int) -> (q: [Double], r: [Double]) {
        precondition(m >= 0 && n >= 0 && matrix.count >= m * n, "SymmetricEigen.qr: matrix smaller than \(m) × \(n)")
        let k = min(m, n)
        var a = Array(matrix.prefix(m * n))
        var reflectors: [[Double]] = []
        for j in 0..<k {
            var x = [Double](repeating: 0, count: m - j)
            for i in j..<m { x[i - j] = a[i * n + j] }
            let scale = x.reduce(0) { max($0, abs($1)) }
            var v = x
            var alpha = 0.0
            if scale > 0 {
                var sum = 0.0
                for value in x { sum += (value / scale) * (value / scale) }
                let norm = scale * sum.squareRoot()
                alpha = x[0] >= 0 ? -norm : norm
                v[0] = x[0] - alpha
            }
            var vNorm = 0.0
            for value in v { vNorm += value * value }
            if scale == 0 || vNorm == 0 {
                reflectors.append([])
                continue
            }
            let inverse = 1 / vNorm.squareRoot()
            for i in v.indices { v[i] *= inverse }
            // A[j:, j:] ← (I − 2vvᵀ)·A[j:, j:]
            for column in j..<n {
                var dot = 0.0
                for i in j..<m { dot += v[i - j] * a[i * n + column] }
                dot *= 2
                for i in j..<m { a[i * n + column] -= dot * v[i - j] }
            }
            a[j * n + j] = alpha
            for i in (j + 1)..<max(m, j + 1) { a[i * n + j] = 0 }
            reflectors.append(v)
        }
        // Q = H_0·H_1·…·H_{k−1}·I[:, :k], applied from the last reflector.
        var q = [Double](repeating: 0, count: m * k)
        for i in 0..<k { q[i * k + i] = 1 }
        for j in stride(from: k - 1, through: 0, by: -1) {
            let v = reflectors[j]
            if v.isEmpty { continue }
            for column in 0..<k {
                var dot = 0.0
                for i in j..<m { dot += v[i - j] * q[i * k + column] }
                dot *= 2
                for i in j..<m { q[i * k + column] -= dot * v[i - j] }
            }
        }
        var r = [Double](repeating: 0, count: k * n)
        for i in 0..<k {
            for column in i..<n { r[i * n + column] = a[i * n + column] }
        }
        for i in 0..<k where r[i * n + i] < 0 {
            for column in i..<n { r[i * n + column] = -r[i * n + column] }
            for row in 0..<m { q[row * k + i] = -q[row * k + i] }
        }
        return (q, r)
    }

    /// The Q of ``qr(_:rows:columns:)`` of a square float32 `n × n` matrix, rounded to float32
    /// into `q` (row-major `n × n`, R's diagonal non-negative).
    public static func orthogonalFactor(_ matrix: UnsafeBufferPointer<Float>, n: Int, into q: UnsafeMutableBufferPointer<Float>) {
        precondition(q.count >= n * n, "SymmetricEigen.orthogonalFactor: output smaller than \(n) × \(n)")
        let result = qr(matrix.prefix(n * n).map(Double.init), rows: n, columns: n)
        for i in 0..<(n * n) { q[i] = Float(result.q[i]) }
    }
}
