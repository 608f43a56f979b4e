import Optim
import Testing

/// Row-sparse gradients (an embedding's backward): ``Parameter/setSparseGradient(rows:values:)``
/// and SparseAdam's step over only the rows touched.
@Suite struct SparseGradientTests {
    func embedding(_ rows: Int = 50, _ width: Int = 24, seed: UInt64 = 1) throws -> Parameter {
        var random = SplitMix(seed: seed)
        return try Parameter(name: "wte", shape: [rows, width], values: random.floats(rows * width))
    }

    @Test func rowSparseStepEqualsTheDenseStepWhenNoValueIsZero() throws {
        // Rows 3, 4, 5, 17 (one run of three, one alone), listed out of order with a repeat.
        var random = SplitMix(seed: 9)
        let sparse = try embedding(), dense = try embedding()
        let a = try SparseAdam([sparse], hyperparameters: .init(learningRate: 0.01))
        let b = try SparseAdam([dense], hyperparameters: .init(learningRate: 0.01))
        for _ in 0..<5 {
            let rows = [17, 4, 3, 5, 4]
            let values = random.floats(rows.count * 24).map { $0 < 0 ? $0 - 0.1 : $0 + 0.1 }
            try sparse.setSparseGradient(rows: rows, values: values)
            #expect(sparse.sparseRows == [3, 4, 5, 17])
            var full = [Float](repeating: 0, count: sparse.count)
            for (position, row) in rows.enumerated() {
                for element in 0..<24 { full[row * 24 + element] += values[position * 24 + element] }
            }
            #expect(sparse.gradientArray == full)
            try dense.setGradient(full)
            try a.step()
            try b.step()
            #expect(bits(sparse.valueArray) == bits(dense.valueArray))
            #expect(try a.state(of: sparse).mapValues(bits) == b.state(of: dense).mapValues(bits))
        }
    }

    @Test func onlyTheTouchedRowsChangeAndExplicitZerosArePresent() throws {
        let w = try embedding()
        let optimizer = try SparseAdam([w], hyperparameters: .init(learningRate: 0.01))
        try w.setSparseGradient(rows: [2], values: [Float](repeating: 1, count: 24))
        try optimizer.step()
        let before = w.valueArray, state = try optimizer.state(of: w)
        // Row 2 again, now with zeros: its moments decay (the element is present); row 7 untouched.
        try w.setSparseGradient(rows: [2], values: [Float](repeating: 0, count: 24))
        try optimizer.step()
        let after = w.valueArray, moment = try optimizer.state(of: w)["exp_avg"]!
        for row in 0..<50 where row != 2 {
            #expect(bits(Array(after[(row * 24)..<(row * 24 + 24)])) == bits(Array(before[(row * 24)..<(row * 24 + 24)])), "row \(row)")
        }
        let old = state["exp_avg"]![2 * 24]
        #expect(moment[2 * 24] == old + (0 - old) * Float(1 - 0.9))  // decayed towards the zero gradient
        #expect(after[2 * 24] != before[2 * 24])
        // The previous rows are cleared from the gradient storage when new rows are set.
        try w.setSparseGradient(rows: [9], values: [Float](repeating: 1, count: 24))
        #expect(w.gradientArray!.enumerated().allSatisfy { ($0.offset / 24 == 9) == ($0.element == 1) })
    }

    @Test func badRowsAndLengthsChangeNothing() throws {
        let w = try embedding()
        try w.setSparseGradient(rows: [1], values: [Float](repeating: 2, count: 24))
        let gradient = w.gradientArray
        #expect(throws: OptimError.sparseRowOutOfRange(parameter: "wte", row: 50, rows: 50)) {
            try w.setSparseGradient(rows: [3, 50], values: [Float](repeating: 1, count: 48))
        }
        #expect(throws: OptimError.sparseRowOutOfRange(parameter: "wte", row: -1, rows: 50)) {
            try w.setSparseGradient(rows: [-1], values: [Float](repeating: 1, count: 24))
        }
        #expect(throws: OptimError.sizeMismatch(parameter: "wte", expected: 48, got: 47)) {
            try w.setSparseGradient(rows: [3, 4], values: [Float](repeating: 1, count: 47))
        }
        #expect(w.gradientArray == gradient && w.sparseRows == [1])
        #expect("\(OptimError.sparseRowOutOfRange(parameter: "wte", row: 50, rows: 50))".contains("row 50"))
    }

    @Test func otherOptimizersStepTheDenseEquivalent() throws {
        let sparse = try embedding(), dense = try embedding()
        let a = try AdamW([sparse], hyperparameters: .init(learningRate: 0.01)), b = try AdamW([dense], hyperparameters: .init(learningRate: 0.01))
        try sparse.setSparseGradient(rows: [0, 49], values: [Float](repeating: 0.5, count: 48))
        try dense.setGradient(sparse.gradientArray!)
        try a.step()
        try b.step()
        #expect(bits(sparse.valueArray) == bits(dense.valueArray))
    }
}
