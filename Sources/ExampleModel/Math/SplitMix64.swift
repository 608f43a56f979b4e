/// SplitMix64 (Steele, Lea & Flood, "Fast Splittable Pseudorandom Number Generators",
/// OOPSLA 2014): a 64-bit state advanced by the golden-ratio increment and mixed by two
/// multiply–xorshift rounds.
///
/// Small and fast, and — unlike the standard library's `random(in:using:)`, whose algorithm may
/// change between Swift releases — every draw below is written out here, so a seed gives the same
/// initial weights, splits and batch orders on every platform and toolchain.
struct SplitMix64: RandomNumberGenerator {
    private(set) var state: UInt64

    init(seed: UInt64) { state = seed }

    /// A generator for one purpose (`stream`) of a seed, e.g. the batch order of one epoch, whose
    /// draws are unrelated to those of the other streams of the same seed.
    init(seed: UInt64, stream: UInt64) {
        state = Self.mix(seed ^ Self.mix(stream &+ 0x5851_F42D_4C95_7F2D))
    }

    /// The SplitMix64 finaliser.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// A uniform integer in `0..<bound` (`bound > 0`), without modulo bias: Lemire's
    /// multiply-and-reject ("Fast Random Integer Generation in an Interval", ACM TOMACS 2019).
    mutating func next(below bound: Int) -> Int {
        let range = UInt64(bound)
        var product = next().multipliedFullWidth(by: range)
        if product.low < range {
            let threshold = (0 &- range) % range
            while product.low < threshold { product = next().multipliedFullWidth(by: range) }
        }
        return Int(product.high)
    }

    /// A uniform float in [0, 1): the top 24 bits of a draw, times 2⁻²⁴.
    mutating func nextUnitFloat() -> Float {
        Float(next() >> 40) * 0x1p-24
    }

    /// Shuffles `values` in place: Fisher–Yates (Durstenfeld's form), from the last element down.
    mutating func shuffle<T>(_ values: inout [T]) {
        var i = values.count - 1
        while i > 0 {
            values.swapAt(i, next(below: i + 1))
            i -= 1
        }
    }
}
