import Foundation
import Optim
import Testing

/// `SymmetricEigen` against `torch.linalg.eigh` / `torch.linalg.qr` in float64
/// (`tools/reference/make_eigen_fixtures.py`, `Tests/Fixtures/linalg/eigen.json`). Column signs
/// differ between implementations, so the checks are sign-independent: residuals,
/// orthogonality, eigenvalues, and the magnitudes of eigenvector entries where eigenvalues are
/// well separated.
@Suite struct SymmetricEigenTests {
    struct SymmetricCase: Decodable, CustomTestStringConvertible {
        var name: String
        var n: Int
        var matrix: [Double]
        var values: [Double]
        var vectors: [Double]
        var testDescription: String { name }
    }

    struct QRCase: Decodable, CustomTestStringConvertible {
        var name: String
        var rows: Int
        var columns: Int
        var matrix: [Double]
        var q: [Double]
        var r: [Double]
        var testDescription: String { name }
    }

    struct File: Decodable {
        var format: String
        var symmetric: [SymmetricCase]
        var qr: [QRCase]
    }

    static let file: File = {
        let url = Paths.repository.appendingPathComponent("Tests/Fixtures/linalg/eigen.json")
        guard let data = try? Data(contentsOf: url), let file = try? JSONDecoder().decode(File.self, from: data) else {
            return File(format: "missing", symmetric: [], qr: [])
        }
        return file
    }()

    @Test func fixturesArePresent() {
        #expect(Self.file.format == "optim-linalg/1")
        #expect(Self.file.symmetric.count >= 10)
        #expect(Self.file.qr.count >= 5)
    }

    /// The full symmetric matrix of a case (its lower triangle mirrored, as decompose reads it).
    static func symmetric(_ c: SymmetricCase) -> [Double] {
        var a = c.matrix
        for i in 0..<c.n { for j in 0..<i { a[j * c.n + i] = a[i * c.n + j] } }
        return a
    }

    static func frobenius(_ a: [Double]) -> Double { a.reduce(0) { $0 + $1 * $1 }.squareRoot() }

    @Test(arguments: file.symmetric, [SymmetricEigen.Method.jacobi, .tridiagonalQR])
    func eigendecomposition(_ c: SymmetricCase, method: SymmetricEigen.Method) {
        let n = c.n
        let a = Self.symmetric(c)
        let norm = max(Self.frobenius(a), .leastNormalMagnitude)
        let result = SymmetricEigen.decompose(c.matrix, n: n, method: method)
        #expect(result.values.count == n && result.vectors.count == n * n)
        // Eigenvalues: descending and equal to the reference's.
        for j in 1..<max(n, 1) { #expect(result.values[j - 1] >= result.values[j]) }
        for j in 0..<n {
            #expect(abs(result.values[j] - c.values[j]) <= 1e-13 * norm, "\(c.name): λ\(j) \(result.values[j]) vs \(c.values[j])")
        }
        // The float32 eigenvectors, as SOAP gets them.
        var vectors32 = [Float](repeating: .nan, count: n * n)
        let values = c.matrix.map(Float.init).withUnsafeBufferPointer { m in
            vectors32.withUnsafeMutableBufferPointer { SymmetricEigen.decompose(m, n: n, vectors: $0, method: method) }
        }
        #expect(values == result.values)
        let v = vectors32.map(Double.init)
        // A·V = V·Λ and VᵀV = I.
        var residual = 0.0, orthogonality = 0.0
        for i in 0..<n {
            for j in 0..<n {
                var av = 0.0
                for k in 0..<n { av += a[i * n + k] * v[k * n + j] }
                residual = max(residual, abs(av - v[i * n + j] * result.values[j]))
                var dot = 0.0
                for k in 0..<n { dot += v[k * n + i] * v[k * n + j] }
                orthogonality = max(orthogonality, abs(dot - (i == j ? 1 : 0)))
            }
        }
        #expect(residual <= 4e-7 * norm, "\(c.name): residual \(residual), ‖A‖ \(norm)")
        #expect(orthogonality <= 1e-6, "\(c.name): ‖VᵀV − I‖max \(orthogonality)")
        // Sign convention: each column's largest entry is positive.
        for j in 0..<n {
            let column = (0..<n).map { v[$0 * n + j] }
            let largest = column.indices.max { abs(column[$0]) < abs(column[$1]) }!
            #expect(column[largest] > 0)
        }
        // Entry magnitudes against the reference's, for well-separated eigenvalues.
        for j in 0..<n {
            var gap = Double.infinity
            if j > 0 { gap = min(gap, c.values[j - 1] - c.values[j]) }
            if j < n - 1 { gap = min(gap, c.values[j] - c.values[j + 1]) }
            guard gap > 1e-3 * norm else { continue }
            for i in 0..<n {
                let difference = abs(abs(v[i * n + j]) - abs(c.vectors[i * n + j]))
                #expect(difference <= 2e-7 + 1e-12 * norm / gap, "\(c.name): |V[\(i), \(j)]| off by \(difference)")
            }
        }
    }

    @Test func repeatedEigenvaluesAreCovered() {
        let repeated = Self.file.symmetric.first { $0.name == "repeated" }
        #expect(repeated != nil)
        if let repeated {
            for method in [SymmetricEigen.Method.jacobi, .tridiagonalQR] {
                let values = SymmetricEigen.decompose(repeated.matrix, n: repeated.n, method: method).values
                #expect(abs(values[1] - 2) < 1e-6 && abs(values[2] - 2) < 1e-6)
            }
        }
    }

    @Test(arguments: file.qr)
    func qrDecomposition(_ c: QRCase) {
        let (m, n) = (c.rows, c.columns), k = min(m, n)
        let (q, r) = SymmetricEigen.qr(c.matrix, rows: m, columns: n)
        #expect(q.count == m * k && r.count == k * n)
        let norm = Self.frobenius(c.matrix)
        var reconstruction = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k { sum += q[i * k + p] * r[p * n + j] }
                reconstruction = max(reconstruction, abs(sum - c.matrix[i * n + j]))
            }
        }
        #expect(reconstruction <= 1e-13 * norm, "\(c.name): ‖QR − A‖max \(reconstruction)")
        var orthogonality = 0.0
        for i in 0..<k {
            for j in 0..<k {
                var dot = 0.0
                for p in 0..<m { dot += q[p * k + i] * q[p * k + j] }
                orthogonality = max(orthogonality, abs(dot - (i == j ? 1 : 0)))
            }
        }
        #expect(orthogonality <= 1e-13, "\(c.name): ‖QᵀQ − I‖max \(orthogonality)")
        for i in 0..<k {
            #expect(r[i * n + i] >= 0, "\(c.name): R[\(i), \(i)] negative")
            for j in 0..<min(i, n) { #expect(r[i * n + j] == 0) }
        }
        // Unique up to column signs for a full-rank matrix: magnitudes equal the reference's.
        for i in 0..<(m * k) { #expect(abs(abs(q[i]) - abs(c.q[i])) <= 1e-12, "\(c.name): |Q| entry \(i)") }
        for i in 0..<(k * n) { #expect(abs(abs(r[i]) - abs(c.r[i])) <= 1e-12 * max(norm, 1), "\(c.name): |R| entry \(i)") }
        // The same column space: every column of the reference Q lies in span(Q).
        for j in 0..<k {
            var projected = 0.0
            for p in 0..<k {
                var dot = 0.0
                for i in 0..<m { dot += q[i * k + p] * c.q[i * k + j] }
                projected += dot * dot
            }
            #expect(abs(projected - 1) <= 1e-12, "\(c.name): reference column \(j) outside span(Q)")
        }
    }

    /// The automatic choice: Jacobi up to 32 rows, tridiagonal QR above (the same decomposition
    /// within rounding either way).
    @Test func automaticMethodChoosesBySize() {
        for c in Self.file.symmetric where c.n >= 3 {
            let automatic = SymmetricEigen.decompose(c.matrix, n: c.n)
            let expected = SymmetricEigen.decompose(c.matrix, n: c.n, method: c.n <= SymmetricEigen.automaticJacobiLimit ? .jacobi : .tridiagonalQR)
            #expect(automatic.values == expected.values && automatic.vectors == expected.vectors, "\(c.name)")
        }
        #expect(Self.file.symmetric.contains { $0.n > SymmetricEigen.automaticJacobiLimit })
    }

    @Test func orthogonalFactorRoundsTheDoubleResult() {
        guard let c = Self.file.qr.first(where: { $0.name == "qr-power-iteration-5" }) else {
            Issue.record("qr-power-iteration-5 missing")
            return
        }
        let n = c.rows
        var q32 = [Float](repeating: .nan, count: n * n)
        c.matrix.map(Float.init).withUnsafeBufferPointer { a in
            q32.withUnsafeMutableBufferPointer { SymmetricEigen.orthogonalFactor(a, n: n, into: $0) }
        }
        let q = SymmetricEigen.qr(c.matrix, rows: n, columns: n).q
        #expect(q32 == q.map(Float.init))
    }
}
