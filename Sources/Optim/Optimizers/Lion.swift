/// Lion, "EvoLved Sign Momentum" (Chen et al., 2023), matching Google's reference code as
/// packaged by `lion-pytorch`.
///
/// ```
/// p ← p·(1 − lr·λ)
/// p ← p − lr·sign(β1·m + (1 − β1)·g)
/// m ← β2·m + (1 − β2)·g
/// ```
/// One state buffer (`exp_avg`, 4 bytes per parameter: half of AdamW's). Every element moves by
/// exactly `lr` (when λ = 0 and the interpolation is non-zero), so the update norm is larger than
/// Adam's: the paper advises a learning rate 3–10× smaller than AdamW's, with a weight decay
/// 3–10× larger to keep `lr·λ` the same. Defaults: `lr` 1e-4, `betas` (0.9, 0.99),
/// `weight_decay` 0. Paper: arXiv:2302.06675; reference: google/automl `lion_pytorch.py`.
public typealias Lion = GradientOptimizer<LionRule>

public enum LionRule: LionVariant, VectorKernel {
    public static let name = "lion"

    public struct Coefficients: Sendable {
        @usableFromInline var decay: Float
        @usableFromInline var beta1: Float
        @usableFromInline var oneMinusBeta1: Float
        @usableFromInline var beta2: Float
        @usableFromInline var oneMinusBeta2: Float
        @usableFromInline var negativeLearningRate: Float
    }

    public static func coefficients(_ h: LionHyperparameters<Self>, initialLearningRate: Double, step: Int) -> Coefficients {
        Coefficients(decay: Float(1 - h.learningRate * h.weightDecay), beta1: Float(h.betas.0), oneMinusBeta1: Float(1 - h.betas.0),
                     beta2: Float(h.betas.1), oneMinusBeta2: Float(1 - h.betas.1), negativeLearningRate: Float(-h.learningRate))
    }

    @_transparent
    public static func apply(_ o: KernelOperands, _ i: Int, _ n: Int, _ c: Coefficients) -> UpdateLanes {
        let before = Elementwise.load(o.parameter, i, n)
        let g = Elementwise.gradient(o, i, n)
        var m = Elementwise.load(o.state0, i, n)
        let after = before * c.decay + c.negativeLearningRate * Elementwise.sign(m * c.beta1 + c.oneMinusBeta1 * g)
        m = m * c.beta2 + c.oneMinusBeta2 * g
        Elementwise.store(after, o.parameter, i, n)
        Elementwise.store(m, o.state0, i, n)
        return UpdateLanes(before: before, after: after, gradient: g, moment: m)
    }
}

extension LionRule {
    /// float32, or bitsandbytes' 8-bit blockwise state (`state_dtype` "int8", as its `Lion8bit`).
    public static let stateDTypes: [StateDType] = [.float32, .int8]

    /// `exp_avg` on the signed map (bitsandbytes' `qmap1`).
    public static func quantizationMaps(_ h: LionHyperparameters<Self>) -> [DynamicQuantizationMap] { [.signed] }

    /// The 8-bit update, block by block, in bitsandbytes' order of operations (its CPU
    /// `_optimizer_update_8bit_blockwise_cpu`, "lion"), each value in float32:
    /// `p ← p·(1 − lr·λ)`, `p ← p − lr·sign(m·β1 + g·(1 − β1))`, `m ← fma(g, 1 − β2, m·β2)`
    /// (torch's `add_(alpha)` is a fused multiply-add on CPU); then the moment requantized.
    public static func updateQuantized(_ o: KernelOperands, _ range: Range<Int>, _ c: Coefficients,
                                       collectingMetrics: Bool) -> MetricAccumulator {
        let map = DynamicQuantizationMap.signed, codes = o.codes0!, blockSize = BlockwiseQuantization.blockSize
        var sums = MetricAccumulator()
        withUnsafeTemporaryAllocation(of: Float.self, capacity: blockSize) { scratch in
            let moments = scratch.baseAddress!
            var start = range.lowerBound
            while start < range.upperBound {
                let block = start / blockSize, count = min(blockSize, range.upperBound - start)
                let scale = o.state0[block]
                for j in 0..<count {
                    let i = start + j
                    let before = o.parameter[i]
                    let g = o.gradientScale == 1 ? o.gradient[i] : o.gradient[i] * o.gradientScale
                    let m = map.value(of: codes[i]) * scale
                    let direction = m * c.beta1 + g * c.oneMinusBeta1
                    let sign: Float = direction > 0 ? 1 : (direction < 0 ? -1 : 0)
                    let after = before * c.decay + c.negativeLearningRate * sign
                    let moment = (m * c.beta2).addingProduct(g, c.oneMinusBeta2)
                    o.parameter[i] = after
                    moments[j] = moment
                    if collectingMetrics { sums.add(before: before, after: after, gradient: g, moment: moment) }
                }
                o.state0[block] = BlockwiseQuantization.quantizeBlock(moments, count: count, map: map, codes: codes + start)
                start += count
            }
        }
        return sums
    }
}

extension GradientOptimizer where Rule == LionRule {
    /// Lion over one group of parameters, with the reference defaults.
    public convenience init(_ parameters: [Parameter], learningRate: Double = 1e-4, betas: (Double, Double) = (0.9, 0.99),
                            weightDecay: Double = 0, threadPool: ThreadPool = .shared) throws(OptimError) {
        try self.init(parameters, hyperparameters: .init(learningRate: learningRate, betas: betas, weightDecay: weightDecay),
                      threadPool: threadPool)
    }
}

extension LionRule {
    /// The registry entry.
    public static let info = OptimizerInfo(
        rule: Self.self, typeName: "Lion",
        reference: .init(library: "lion-pytorch", version: "0.2.5", symbol: "lion_pytorch.Lion (google/automl's reference code)",
                         paper: "Chen et al., 2023, \"Symbolic Discovery of Optimization Algorithms\", arXiv:2302.06675"),
        suggested: ["lr": .number(5e-4), "weight_decay": .number(0.1)],
        samples: .signBased(name),
        benchmark: .init(configuration: .init(name: name), reference: .lionKernel))
}
