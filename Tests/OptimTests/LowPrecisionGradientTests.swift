import Optim
import Testing

/// Gradients that arrive as bfloat16 or float16 buffers (``Parameter/setGradient(bfloat16:)-([UInt16])``,
/// ``Parameter/setGradient(float16:)-([UInt16])``): widened to float32 exactly, then stepped as usual.
@Suite struct LowPrecisionGradientTests {
    @Test func bfloat16GradientsWidenExactly() throws {
        // bfloat16 bit patterns and their values, written independently of the widening.
        let bits: [UInt16] = [0x3FC0, 0xC010, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x477F, 0x3E80]
        let values: [Float] = [1.5, -2.25, 0, -0.0, .infinity, -.infinity, Float(sign: .plus, exponent: -133, significand: 1), 65280, 0.25]
        let parameter = try Parameter(name: "w", shape: [values.count])
        try parameter.setGradient(bfloat16: bits)
        #expect(parameter.gradient.map { Array($0).map(\.bitPattern) } == values.map(\.bitPattern))
        try parameter.setGradient(bfloat16: [0x7FC1] + [UInt16](repeating: 0, count: values.count - 1))
        #expect(parameter.gradient![0].isNaN && parameter.gradient![0].bitPattern == 0x7FC1_0000)
    }

    #if !(os(macOS) && arch(x86_64))
    /// Every one of the 65,536 half-precision bit patterns against Swift's own `Float16` conversion.
    @Test func float16GradientsWidenExactlyForEveryBitPattern() throws {
        let all = (0...UInt16.max).map { $0 }
        let parameter = try Parameter(name: "h", shape: [all.count])
        try parameter.setGradient(float16: all)
        let widened = Array(try #require(parameter.gradient))
        var mismatches = 0
        for (bits, value) in zip(all, widened) {
            let expected = Float(Float16(bitPattern: bits))
            if expected.isNaN ? !value.isNaN : expected.bitPattern != value.bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }
    #endif

    @Test func aBufferOfTheWrongSizeIsRefusedAndTheGradientKept() throws {
        let parameter = try Parameter(name: "w", shape: [4])
        try parameter.setGradient([1, 2, 3, 4])
        #expect(throws: OptimError.self) { try parameter.setGradient(bfloat16: [0x3F80, 0x3F80]) }
        #expect(throws: OptimError.self) { try parameter.setGradient(float16: [0x3C00]) }
        #expect(parameter.gradient.map(Array.init) == [1, 2, 3, 4])
    }

    @Test func aStepFromABFloat16GradientIsTheStepFromItsFloat32Value() throws {
        var random = SplitMix(seed: 3)
        let initial = random.floats(5000)
        let gradient = random.floats(5000).map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) }  // bfloat16-representable
        var results: [[UInt32]] = []
        for fromBFloat16 in [true, false] {
            let parameter = try Parameter(name: "w", shape: [5000], values: initial)
            let optimizer = try OptimizerRegistry.makeOptimizer(defaultConfiguration("adamw", ["state_dtype": .string("int8")]), parameters: [parameter])
            for _ in 0..<3 {
                if fromBFloat16 {
                    try parameter.setGradient(bfloat16: gradient.map { UInt16($0.bitPattern >> 16) })
                } else {
                    try parameter.setGradient(gradient)
                }
                try optimizer.step()
            }
            results.append(bits(parameter.valueArray))
        }
        #expect(results[0] == results[1])
    }
}
