import Foundation
@testable import Optim
import Testing
@testable import ExampleModel

@Suite struct MatMulTests {
    static let transposes = [(false, false), (false, true), (true, false), (true, true)]
    /// Odd sizes around the tile (6 × 16) and block (72 × 256 × 256) edges; the last is above the
    /// threading threshold.
    static let sizes = [(1, 1, 1), (7, 13, 5), (6, 16, 256), (65, 33, 129), (73, 17, 257), (97, 101, 131)]

    @Test(arguments: sizes)
    func matchesTheNaiveTripleLoop(size: (Int, Int, Int)) {
        let (m, n, k) = size
        var random = TestRandom(seed: UInt64(m * 10_000 + n * 100 + k))
        let a = random.floats(m * k)
        let b = random.floats(k * n)
        for (transposeA, transposeB) in Self.transposes {
            let expected = naiveProduct(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB)
            for pool in [Pools.one, Pools.two] {
                let c = gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, pool: pool)
                // Close to the exact product …
                let worst = zip(c, expected.double).map { abs(Double($0) - $1) }.max()!
                #expect(worst <= 1e-5 * Double(k), "\(m)×\(n)×\(k) tA=\(transposeA) tB=\(transposeB): error \(worst)")
                // … and, as documented, the very sum of the in-order Float loop.
                #expect(c == expected.float, "\(m)×\(n)×\(k) tA=\(transposeA) tB=\(transposeB) differs from the in-order sum")
            }
        }
    }

    @Test func theSizesStraddleTheThreadingThreshold() {
        #expect(73 * 17 * 257 < MatMul.parallelThreshold)
        #expect(97 * 101 * 131 >= MatMul.parallelThreshold)
    }

    @Test func accumulateAddsToC() {
        let (m, n, k) = (9, 20, 11)
        var random = TestRandom(seed: 7)
        let a = random.floats(m * k), b = random.floats(k * n), c0 = random.floats(m * n)
        let product = naiveProduct(m: m, n: n, k: k, a, transposeA: false, b, transposeB: true).double
        let c = gemm(m: m, n: n, k: k, a, transposeA: false, b, transposeB: true, c: c0, accumulate: true, pool: Pools.two)
        for i in c.indices {
            #expect(abs(Double(c[i]) - (Double(c0[i]) + product[i])) < 1e-5)
        }
    }

    @Test func zeroDepthGivesZeroOrLeavesC() {
        let c = gemm(m: 3, n: 4, k: 0, [], transposeA: false, [], transposeB: false, pool: Pools.one)
        #expect(c == [Float](repeating: 0, count: 12))
        let kept = gemm(m: 3, n: 4, k: 0, [], transposeA: false, [], transposeB: false,
                        c: [Float](repeating: 2, count: 12), accumulate: true, pool: Pools.one)
        #expect(kept == [Float](repeating: 2, count: 12))
    }

    @Test func oneAndTwoThreadsAgreeBitForBit() {
        let (m, n, k) = (150, 100, 73)
        let pool = ThreadPool(threadCount: 2) // its own, so no other test keeps it busy
        var random = TestRandom(seed: 42)
        let a = random.floats(m * k), b = random.floats(k * n)
        for (transposeA, transposeB) in Self.transposes {
            let one = gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, pool: Pools.one)
            let two = gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, pool: pool)
            #expect(one.map(\.bitPattern) == two.map(\.bitPattern))
        }
    }

    @Test func wideProductsSplitByColumnsAgreeBitForBit() {
        let (m, n, k) = (5, 1700, 130)
        let pool = ThreadPool(threadCount: 2)
        var random = TestRandom(seed: 43)
        let a = random.floats(m * k), b = random.floats(k * n)
        #expect(m * n * k >= MatMul.parallelThreshold)
        for (transposeA, transposeB) in Self.transposes {
            let one = gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, pool: Pools.one)
            let two = gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, pool: pool)
            #expect(one.map(\.bitPattern) == two.map(\.bitPattern))
            #expect(one == naiveProduct(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB).float)
        }
    }

    /// A symmetric product (X·Xᵀ, or S·S with S symmetric) computes the upper triangle's tiles
    /// and mirrors them: the in-order sum's bits everywhere, on one and two threads (whose row
    /// runs are split by triangle area), sizes around the tile and block edges.
    @Test(arguments: [1, 7, 16, 73, 150, 263])
    func symmetricProductsMirrorTheUpperTriangleBitForBit(side: Int) {
        var random = TestRandom(seed: UInt64(side))
        let k = side % 3 == 0 ? 300 : 97
        let x = random.floats(side * k)
        var s = random.floats(side * side)
        for i in 0..<side { for j in 0..<i { s[i * side + j] = s[j * side + i] } }
        let gram = naiveProduct(m: side, n: side, k: k, x, transposeA: false, x, transposeB: true).float
        let square = naiveProduct(m: side, n: side, k: side, s, transposeA: false, s, transposeB: false).float
        for pool in [Pools.one, ThreadPool(threadCount: 2), ThreadPool(threadCount: 3)] {
            let c = gemm(m: side, n: side, k: k, x, transposeA: false, x, transposeB: true, symmetric: true, pool: pool)
            #expect(c.map(\.bitPattern) == gram.map(\.bitPattern), "X·Xᵀ \(side)×\(k), \(pool.threadCount) threads")
            let c2 = gemm(m: side, n: side, k: side, s, transposeA: false, s, transposeB: false, symmetric: true, pool: pool)
            #expect(c2.map(\.bitPattern) == square.map(\.bitPattern), "S·S \(side), \(pool.threadCount) threads")
        }
    }

    /// The bfloat16-operand path on AVX512-BF16 gives, bit for bit, the documented sum: operands
    /// rounded to bfloat16, then for each pair of k the odd term and then the even one added in
    /// float32 — the same whatever the threads, for every transpose, symmetric or not.
    @Test(.enabled(if: MatMul.hasBFloat16DotProduct && KernelDispatch.selected == .avx512, "no AVX512-BF16 here"),
          arguments: [(1, 1, 1), (7, 13, 5), (6, 32, 512), (65, 33, 129), (97, 101, 1031), (150, 150, 64)])
    func bfloat16OperandsSumPairsOfTermsInOrder(size: (Int, Int, Int)) {
        let (m, n, k) = size
        var random = TestRandom(seed: UInt64(m * 7 + n * 3 + k))
        let a = random.floats(m * k), b = random.floats(k * n)
        func bf16(_ x: Float) -> Float {
            let bits = x.bitPattern
            return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
        }
        for (transposeA, transposeB) in Self.transposes {
            func opA(_ i: Int, _ p: Int) -> Float { p < k ? bf16(transposeA ? a[p * m + i] : a[i * k + p]) : 0 }
            func opB(_ p: Int, _ j: Int) -> Float { p < k ? bf16(transposeB ? b[j * k + p] : b[p * n + j]) : 0 }
            var expected = [Float](repeating: 0, count: m * n)
            for i in 0..<m {
                for j in 0..<n {
                    var sum: Float = 0
                    for p in stride(from: 0, to: k, by: 2) {
                        sum += opA(i, p + 1) * opB(p + 1, j)
                        sum += opA(i, p) * opB(p, j)
                    }
                    expected[i * n + j] = sum
                }
            }
            for pool in [Pools.one, ThreadPool(threadCount: 2)] {
                var c = [Float](repeating: .nan, count: m * n)
                a.withUnsafeBufferPointer { a in
                    b.withUnsafeBufferPointer { b in
                        c.withUnsafeMutableBufferPointer { c in
                            MatMul.gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, c,
                                        bfloat16Operands: true, pool: pool)
                        }
                    }
                }
                #expect(c.map(\.bitPattern) == expected.map(\.bitPattern), "\(m)×\(n)×\(k) tA=\(transposeA) tB=\(transposeB) \(pool.threadCount) threads")
            }
        }
        // Symmetric products mirror the same bits.
        do {
            let side = m, x = a
            var full = [Float](repeating: .nan, count: side * side), half = full
            x.withUnsafeBufferPointer { x in
                full.withUnsafeMutableBufferPointer { c in
                    MatMul.gemm(m: side, n: side, k: k, x, transposeA: false, x, transposeB: true, c, bfloat16Operands: true, pool: Pools.two)
                }
                half.withUnsafeMutableBufferPointer { c in
                    MatMul.gemm(m: side, n: side, k: k, x, transposeA: false, x, transposeB: true, c, symmetric: true,
                                bfloat16Operands: true, pool: Pools.two)
                }
            }
            #expect(full.map(\.bitPattern) == half.map(\.bitPattern), "symmetric \(side)×\(k)")
        }
    }

    /// Speed against the naive loop; run with `EXAMPLEMODEL_BENCHMARK=1 swift test -c release --filter MatMulTests`.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["EXAMPLEMODEL_BENCHMARK"] != nil))
    func benchmark() {
        func seconds(_ body: () -> Void) -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        let workspace = MatMul.Workspace()
        for (m, n, k, repetitions) in [(256, 64, 128, 200), (256, 128, 64, 200), (1024, 1024, 1024, 5)] {
            let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
            var c = [Float](repeating: 0, count: m * n)
            let flops = 2.0 * Double(m * n * k)
            for (name, pool) in [("1 thread", Pools.one), ("2 threads", Pools.two)] {
                for (transposeA, transposeB) in Self.transposes.prefix(3) {
                    var best = Double.infinity
                    a.withUnsafeBufferPointer { a in
                        b.withUnsafeBufferPointer { b in
                            c.withUnsafeMutableBufferPointer { c in
                                for _ in 0..<repetitions {
                                    best = min(best, seconds {
                                        MatMul.gemm(m: m, n: n, k: k, a, transposeA: transposeA, b, transposeB: transposeB, c,
                                                    workspace: workspace, pool: pool)
                                    })
                                }
                            }
                        }
                    }
                    print("gemm \(m)×\(n)×\(k) tA=\(transposeA) tB=\(transposeB) \(name): \(String(format: "%.1f", flops / best / 1e9)) GFLOP/s")
                }
            }
            if m * n * k <= 1 << 22 {
                // The naive loop: i, j, then the dot product over k, in Float.
                var best = Double.infinity
                a.withUnsafeBufferPointer { a in
                    b.withUnsafeBufferPointer { b in
                        c.withUnsafeMutableBufferPointer { c in
                            for _ in 0..<10 {
                                best = min(best, seconds {
                                    for i in 0..<m {
                                        for j in 0..<n {
                                            var sum: Float = 0
                                            for p in 0..<k { sum += a[i * k + p] * b[p * n + j] }
                                            c[i * n + j] = sum
                                        }
                                    }
                                })
                            }
                        }
                    }
                }
                print("naive \(m)×\(n)×\(k): \(String(format: "%.2f", flops / best / 1e9)) GFLOP/s")
            }
        }
    }
}
