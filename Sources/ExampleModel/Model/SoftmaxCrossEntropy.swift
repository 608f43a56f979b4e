import Foundation

/// The softmax cross-entropy loss of a batch of logits against integer labels — PyTorch's
/// `nn.CrossEntropyLoss` with the default mean reduction.
///
/// For a row of logits z and label y, with m = maxⱼ zⱼ (the log-sum-exp shift that keeps every
/// exponent ≤ 0, so nothing overflows):
///
///     loss = log Σⱼ exp(zⱼ) − z_y = m + log Σⱼ exp(zⱼ − m) − z_y
///     ∂loss/∂zⱼ = softmax(z)ⱼ − [j = y],   softmax(z)ⱼ = exp(zⱼ − m) / Σₖ exp(zₖ − m)
///
/// The batch loss is the mean over rows, so each row's gradient is divided by the batch size.
enum SoftmaxCrossEntropy {
    /// The summed loss of `rows` rows of `classes` logits, and how many rows' largest logit
    /// (the first, on a tie) is at the label. With `gradient`, also writes ∂loss/∂z times `scale`
    /// there (rows × classes, row-major).
    static func evaluate(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, rows: Int, classes: Int,
                         gradient: UnsafeMutablePointer<Float>?, scale: Float) -> (lossSum: Double, correct: Int) {
        var lossSum = 0.0
        var correct = 0
        for row in 0..<rows {
            let z = logits + row * classes
            let label = Int(labels[row])
            var largest = z[0]
            var prediction = 0
            for j in 1..<max(classes, 1) where z[j] > largest {
                largest = z[j]
                prediction = j
            }
            if prediction == label { correct += 1 }
            var sum: Float = 0
            if let gradient {
                let g = gradient + row * classes
                for j in 0..<classes {
                    g[j] = expf(z[j] - largest)
                    sum += g[j]
                }
                let factor = scale / sum
                for j in 0..<classes { g[j] *= factor }
                g[label] -= scale
            } else {
                for j in 0..<classes { sum += expf(z[j] - largest) }
            }
            lossSum += Double(largest + logf(sum) - z[label])
        }
        return (lossSum, correct)
    }
}
