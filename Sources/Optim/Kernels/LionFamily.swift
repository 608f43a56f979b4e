/// The options of one Lion-family optimizer.
public protocol LionVariant: UpdateRule where Hyperparameters == LionHyperparameters<Self> {}

/// Hyperparameters of ``Lion`` and ``DecoupledLionW``: `lr` 1e-4, `betas` (0.9, 0.99),
/// `weight_decay` 0 by default. Betas may be anywhere in [0, 1], as both references allow.
public struct LionHyperparameters<Variant: LionVariant>: OptimizerHyperparameters {
    /// `lr`.
    public var learningRate: Double
    /// `betas`: β1 interpolates the update's direction, β2 the momentum.
    public var betas: Betas
    /// `weight_decay` (decoupled).
    public var weightDecay: Double
    /// The state format (`state_dtype`, `min_8bit_size`): float32, or for ``Lion`` bitsandbytes'
    /// 8-bit blockwise state (see ``StateDType/int8``).
    public var statePrecision: StatePrecision

    /// The hyperparameters; those not written keep the reference defaults — the only place they
    /// are written.
    public init(learningRate: Double = 1e-4, betas: Betas = .init(0.9, 0.99), weightDecay: Double = 0,
                statePrecision: StatePrecision = .float32) {
        self.learningRate = learningRate
        self.betas = betas
        self.weightDecay = weightDecay
        self.statePrecision = statePrecision
    }

    public init(_ dictionary: HyperparameterDictionary) throws(OptimError) {
        var reader = HyperparameterReader(dictionary, optimizer: Variant.name)
        let d = Self()
        self.init(learningRate: try reader.number("lr", default: d.learningRate),
                  betas: try reader.pair("betas", default: d.betas),
                  weightDecay: try reader.number("weight_decay", default: d.weightDecay),
                  statePrecision: try StatePrecision(reading: &reader, supported: Variant.stateDTypes))
        try reader.finish()
    }

    public var dictionary: HyperparameterDictionary {
        var result: HyperparameterDictionary = ["lr": .number(learningRate), "betas": betas.value, "weight_decay": .number(weightDecay)]
        statePrecision.write(into: &result)
        return result
    }

    public func validate() throws(OptimError) {
        try Validate.learningRate(learningRate, Variant.name)
        try Validate.betas(betas, Variant.name, allowOne: true)
        try Validate.weightDecay(weightDecay, Variant.name)
    }
}

extension LionVariant {
    public static func stateNames(_ h: Hyperparameters) -> [String] { ["exp_avg"] }
}
