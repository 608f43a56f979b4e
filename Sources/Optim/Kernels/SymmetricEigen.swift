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
        /// The matrix's order `n`.
        public var n: Int
    }

    /// How ``decompose(_:n:method:)`` computes.
    public enum Method: Sendable {
        /// Cyclic Jacobi: the most accurate (small eigenvalues to high relative accuracy), about
        /// 50n³ flops.
        case jacobi
        /// Householder tridiagonalisation, then implicit QR steps with Wilkinson shifts on the
        /// tridiagonal matrix: about 10n³ flops.
        case tridiagonalQR
        /// Jacobi up to ``automaticJacobiLimit`` rows, tridiagonal QR above.
        case automatic
    }

    /// The largest matrix ``Method/automatic`` gives to Jacobi.
    public static let automaticJacobiLimit = 32

    /// The eigendecomposition of the symmetric `n × n` row-major `matrix`, of which only the
    /// **lower** triangle (with the diagonal) is read — as `torch.linalg.eigh`'s default
    /// `UPLO='L'` — computed in Double; eigenvalues sorted in descending order (a stable sort:
    /// equal eigenvalues keep the method's order), each eigenvector's largest entry positive.
    ///
    /// Methods (``Method``):
    /// - Jacobi: each sweep visits the pairs (p, q), p < q, row by row, and annihilates `a_pq`
    ///   with the rotation whose tangent is the smaller root of `t² + 2τt − 1 = 0`,
    ///   `τ = (a_qq − a_pp)/(2a_pq)`, accumulating the rotations into V. A pair is skipped when
    ///   `|a_pq| ≤ ε·√|a_pp·a_qq|` (ε = Double's unit roundoff), the test that gives Jacobi its
    ///   relative accuracy; the sweeps stop when one rotates nothing (at most 100 sweeps).
    /// - Tridiagonal QR: Householder reflections reduce A to a tridiagonal T = QᵀAQ (Q
    ///   accumulated); then implicit QR steps, each shifted by the eigenvalue of the trailing 2 × 2
    ///   block nearer its last diagonal entry (Wilkinson's shift), chase a bulge down each
    ///   unreduced block with plane rotations accumulated into Q, until every off-diagonal entry
    ///   is below ε·(|d_i| + |d_{i+1}|) (at most 30n steps).
    public static func decompose(_ matrix: [Double], n: Int, method: Method = .automatic) -> Decomposition {
        precondition(n >= 0 && matrix.count >= n * n, "SymmetricEigen.decompose: matrix smaller than \(n) × \(n)")
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i where i < n {
                a[i * n + j] = matrix[i * n + j]
                a[j * n + i] = matrix[i * n + j]
            }
        }
        let useJacobi: Bool
        switch method {
        case .jacobi: useJacobi = true
        case .tridiagonalQR: useJacobi = false
        case .automatic: useJacobi = n <= automaticJacobiLimit
        }
        let (eigenvalues, v) = useJacobi ? jacobi(a, n: n) : tridiagonalQR(a, n: n)
        let order = (0..<n).sorted { eigenvalues[$0] > eigenvalues[$1] || (eigenvalues[$0] == eigenvalues[$1] && $0 < $1) }
        var values = [Double](repeating: 0, count: n)
        var vectors = [Double](repeating: 0, count: n * n)
        for (column, source) in order.enumerated() {
            values[column] = eigenvalues[source]
            var largest = 0
            for r in 0..<n where abs(v[r * n + source]) > abs(v[largest * n + source]) { largest = r }
            let sign: Double = v[largest * n + source] < 0 ? -1 : 1
            for r in 0..<n { vectors[r * n + column] = sign * v[r * n + source] }
        }
        return Decomposition(values: values, vectors: vectors, n: n)
    }

    /// Cyclic Jacobi on the full symmetric `a`: the eigenvalues (unsorted) and the eigenvectors
    /// as the columns of a row-major matrix.
    static func jacobi(_ matrix: [Double], n: Int) -> ([Double], [Double]) {
        var a = matrix
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
        return ((0..<n).map { a[$0 * n + $0] }, v)
    }

    /// Householder tridiagonalisation and implicit shifted QR on the full symmetric `a`: the
    /// eigenvalues (unsorted) and the eigenvectors as the columns of a row-major matrix.
    static func tridiagonalQR(_ matrix: [Double], n: Int) -> ([Double], [Double]) {
        var a = matrix
        var z = [Double](repeating: 0, count: n * n)
        for i in 0..<n { z[i * n + i] = 1 }
        guard n > 1 else { return (n == 1 ? [a[0]] : [], z) }
        // 1. A = Q·T·Qᵀ: reflector k zeroes column k below the subdiagonal, H_k = I − β·v·vᵀ on
        //    indices k+1 ..< n.
        var reflectors: [(v: [Double], beta: Double)] = []
        for k in 0..<max(n - 2, 0) {
            let m = n - k - 1
            var v = (0..<m).map { a[(k + 1 + $0) * n + k] }
            var tail = 0.0
            for i in 1..<m { tail += v[i] * v[i] }
            if tail == 0 {
                reflectors.append(([], 0))
                continue
            }
            let x0 = v[0], norm = (x0 * x0 + tail).squareRoot()
            let alpha = x0 >= 0 ? -norm : norm
            v[0] = x0 - alpha
            let beta = 2 / (v[0] * v[0] + tail)
            // B ← H·B·H for the trailing block B = A[k+1..., k+1...]: p = β·B·v,
            // w = p − (β·pᵀv/2)·v, B ← B − v·wᵀ − w·vᵀ.
            var p = [Double](repeating: 0, count: m)
            for i in 0..<m {
                var sum = 0.0
                for j in 0..<m { sum += a[(k + 1 + i) * n + k + 1 + j] * v[j] }
                p[i] = beta * sum
            }
            var pv = 0.0
            for i in 0..<m { pv += p[i] * v[i] }
            let half = beta * pv / 2
            for i in 0..<m { p[i] -= half * v[i] }
            for i in 0..<m {
                for j in 0..<m { a[(k + 1 + i) * n + k + 1 + j] -= v[i] * p[j] + p[i] * v[j] }
            }
            a[(k + 1) * n + k] = alpha
            a[k * n + k + 1] = alpha
            for i in 1..<m {
                a[(k + 1 + i) * n + k] = 0
                a[k * n + k + 1 + i] = 0
            }
            reflectors.append((v, beta))
        }
        // Q = H_0·H_1·…, applied to the identity from the last reflector.
        for k in stride(from: reflectors.count - 1, through: 0, by: -1) {
            let (v, beta) = reflectors[k]
            if v.isEmpty { continue }
            for column in (k + 1)..<n {
                var sum = 0.0
                for i in v.indices { sum += v[i] * z[(k + 1 + i) * n + column] }
                sum *= beta
                for i in v.indices { z[(k + 1 + i) * n + column] -= sum * v[i] }
            }
        }
        var d = (0..<n).map { a[$0 * n + $0] }
        var e = (0..<(n - 1)).map { a[$0 * n + $0 + 1] }
        // 2. Implicit QR steps with Wilkinson shifts on the unreduced blocks, bottom up.
        func negligible(_ i: Int) -> Bool {
            abs(e[i]) <= Double.ulpOfOne * (abs(d[i]) + abs(d[i + 1])) || abs(e[i]) < Double.leastNormalMagnitude
        }
        var high = n - 1, iterations = 0
        while high > 0 && iterations < 30 * n {
            if negligible(high - 1) {
                e[high - 1] = 0
                high -= 1
                continue
            }
            var low = high - 1
            while low > 0 && !negligible(low - 1) { low -= 1 }
            iterations += 1
            // The shift: the eigenvalue of [[d[h−1], e[h−1]], [e[h−1], d[h]]] nearer d[h].
            let delta = (d[high - 1] - d[high]) / 2, b = e[high - 1]
            let root = (delta * delta + b * b).squareRoot()
            let shift = d[high] - b * b / (delta + (delta >= 0 ? root : -root))
            var x = d[low] - shift, bulgeValue = e[low]
            for k in low..<high {
                // The rotation P = [[c, −s], [s, c]] on (k, k+1) with Pᵀ·[x, bulge] = [r, 0].
                let r = (x * x + bulgeValue * bulgeValue).squareRoot()
                let c = r == 0 ? 1 : x / r, s = r == 0 ? 0 : bulgeValue / r
                if k > low { e[k - 1] = r }
                let dk = d[k], ek = e[k], dk1 = d[k + 1]
                d[k] = c * c * dk + 2 * c * s * ek + s * s * dk1
                d[k + 1] = s * s * dk - 2 * c * s * ek + c * c * dk1
                e[k] = c * s * (dk1 - dk) + (c * c - s * s) * ek
                if k + 1 < high {
                    bulgeValue = s * e[k + 1]
                    e[k + 1] *= c
                    x = e[k]
                }
                for row in 0..<n {
                    let zk = z[row * n + k], zk1 = z[row * n + k + 1]
                    z[row * n + k] = c * zk + s * zk1
                    z[row * n + k + 1] = -s * zk + c * zk1
                }
            }
        }
        return (d, z)
    }

    /// ``decompose(_:n:method:)`` of a float32 matrix, its eigenvectors rounded to float32 into
    /// `vectors` (row-major `n × n`, columns in descending eigenvalue order). Returns the
    /// eigenvalues, descending.
    @discardableResult
    public static func decompose(_ matrix: UnsafeBufferPointer<Float>, n: Int, vectors: UnsafeMutableBufferPointer<Float>,
                                 method: Method = .automatic) -> [Double] {
        precondition(vectors.count >= n * n, "SymmetricEigen.decompose: output smaller than \(n) × \(n)")
        let result = decompose(matrix.prefix(n * n).map(Double.init), n: n, method: method)
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
