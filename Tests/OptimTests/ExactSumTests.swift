@testable import Optim
import Testing

/// Prodigy's exact sums: the per-chunk bins (`ExactChunkSum`, one integer addition per term) must
/// give the same exact value as adding every term to `ExactSum` (the fixed-point limbs), and
/// that value must not depend on the order or grouping of the terms.
@Suite struct ExactSumTests {
    /// Floats over the whole range: normal, subnormal, zeros of both signs, both signs.
    static func floats(_ count: Int, seed: UInt64) -> [Float] {
        var random = SplitMix(seed: seed)
        return (0..<count).map { index in
            let bits = UInt32(truncatingIfNeeded: random.next())
            switch index % 7 {
            case 0: return Float(bitPattern: bits & 0x807F_FFFF)  // subnormal (or ±0)
            case 1: return index % 2 == 0 ? 0 : -0.0
            default:
                let value = Float(bitPattern: bits)
                return value.isFinite ? value : Float(bitPattern: bits & 0xBF7F_FFFF)
            }
        }
    }

    static func chunked(_ a: [Float], _ b: [Float]) -> (products: Double, values: Double) {
        var products = ExactSum(), values = ExactSum()
        var dot = ExactChunkSum(), absolute = ExactChunkSum()
        defer {
            dot.deallocate()
            absolute.deallocate()
        }
        for index in a.indices {
            dot.addProduct(a[index], b[index], set: index & 3)
            absolute.addValue(a[index], set: index & 3)
        }
        dot.foldProducts(into: &products)
        absolute.foldValues(into: &values)
        return (products.value, values.value)
    }

    @Test(arguments: [1, 17, 4_096, ExactChunkSum.capacity])
    func binsEqualTheLimbsTermByTerm(count: Int) {
        let a = Self.floats(count, seed: 3), b = Self.floats(count, seed: 4)
        var products = ExactSum(), values = ExactSum()
        for index in a.indices {
            products.add(Double(a[index]) * Double(b[index]))
            values.add(Double(a[index]))
        }
        let binned = Self.chunked(a, b)
        #expect(binned.products.bitPattern == products.value.bitPattern)
        #expect(binned.values.bitPattern == values.value.bitPattern)
    }

    @Test func theSumIsExactWhateverTheOrder() {
        // 2^100 + 1 − 2^100 is 1 only when nothing is rounded on the way; a subnormal survives too.
        let big = Float(sign: .plus, exponent: 100, significand: 1), tiny = Float.leastNonzeroMagnitude
        let a: [Float] = [big, 1, -big, tiny], ones: [Float] = [1, 1, 1, 1]
        let forward = Self.chunked(a, ones), backward = Self.chunked(a.reversed(), ones)
        #expect(forward.products == 1 + Double(tiny))
        #expect(forward.values == 1 + Double(tiny))
        #expect(backward.products.bitPattern == forward.products.bitPattern)
        // Products of the largest floats and of the smallest stay exact.
        let largest = Self.chunked([.greatestFiniteMagnitude, -.greatestFiniteMagnitude], [.greatestFiniteMagnitude, .greatestFiniteMagnitude])
        #expect(largest.products == 0)
        let smallest = Self.chunked([tiny], [tiny])
        #expect(smallest.products == Double(tiny) * Double(tiny))
    }

    @Test func nonFiniteTermsComeThrough() {
        let sums = Self.chunked([.infinity, 1], [2, 3])
        #expect(sums.products == .infinity)
        #expect(Self.chunked([.nan], [1]).products.isNaN)
        #expect(Self.chunked([.infinity], [0]).products.isNaN)
    }

    /// The vector methods (16 terms at a time, as Prodigy's first pass bins them) give the same
    /// exact sums as the scalar ones, and count the lanes holding an infinity or NaN instead of
    /// adding them.
    @Test(arguments: [16, 4_096, ExactChunkSum.capacity])
    func vectorBinningEqualsTermByTerm(count: Int) {
        let a = Self.floats(count, seed: 5), b = Self.floats(count, seed: 6)
        let scalar = Self.chunked(a, b)
        var products = ExactSum(), values = ExactSum()
        var dot = ExactChunkSum(), absolute = ExactChunkSum()
        defer {
            dot.deallocate()
            absolute.deallocate()
        }
        for start in stride(from: 0, to: count, by: 16) {
            let x = FloatVector(a[start..<start + 16]), y = FloatVector(b[start..<start + 16])
            dot.addProducts(x, y)
            absolute.addMagnitudes(x)
        }
        #expect(!dot.takeSpecialLanes() && !absolute.takeSpecialLanes())
        dot.foldProducts(into: &products)
        absolute.foldValues(into: &values)
        #expect(products.value.bitPattern == scalar.products.bitPattern)
        // addMagnitudes sums |a|: compare with the scalar sum of the magnitudes.
        #expect(values.value.bitPattern == Self.chunked(a.map(abs), b).values.bitPattern)
    }

    @Test func vectorBinningCountsNonFiniteLanesAndAddsTheRest() {
        var a = [Float](repeating: 1.5, count: 16), b = [Float](repeating: -2, count: 16)
        a[3] = .infinity
        b[9] = .nan
        var products = ExactSum(), values = ExactSum()
        var dot = ExactChunkSum(), absolute = ExactChunkSum()
        defer {
            dot.deallocate()
            absolute.deallocate()
        }
        dot.addProducts(FloatVector(a), FloatVector(b))
        absolute.addMagnitudes(FloatVector(a))
        #expect(dot.takeSpecialLanes())
        #expect(absolute.takeSpecialLanes())
        #expect(!dot.takeSpecialLanes())  // taken: the count is cleared
        dot.foldProducts(into: &products)
        absolute.foldValues(into: &values)
        #expect(products.value == 14 * -3.0)  // the 14 finite lanes
        #expect(values.value == 15 * 1.5)
    }
}
