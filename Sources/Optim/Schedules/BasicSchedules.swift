import Foundation

/// The same multiplier at every step.
public struct ConstantSchedule: LearningRateSchedule {
    /// The multiplier returned at every step.
    public var value: Double
    /// A schedule that always returns `value`.
    public init(_ value: Double = 1) { self.value = value }
    /// Returns `value`, whatever the step.
    public func multiplier(at step: Int) -> Double { value }
}

/// Linear warm-up from `startFactor` to `endFactor` over `steps` steps, then `endFactor`:
/// `torch.optim.lr_scheduler.LinearLR`.
public struct LinearSchedule: LearningRateSchedule {
    /// The multiplier at step 0 (`start_factor`).
    public var startFactor: Double
    /// The multiplier from step `steps` on (`end_factor`).
    public var endFactor: Double
    /// The number of steps from `startFactor` to `endFactor` (`total_iters`); at least 1.
    public var steps: Int

    /// Goes linearly from `startFactor` to `endFactor` over `steps` steps (clamped to at least 1).
    public init(from startFactor: Double, to endFactor: Double, steps: Int) {
        self.startFactor = startFactor
        self.endFactor = endFactor
        self.steps = max(steps, 1)
    }

    /// Warm-up from `startFactor` (default 0.0 would start at lr 0, which optimizers refuse; so
    /// the default is one step's worth) to 1 over `steps` steps.
    public static func warmup(steps: Int, startFactor: Double? = nil) -> LinearSchedule {
        LinearSchedule(from: startFactor ?? 1 / Double(max(steps, 1)), to: 1, steps: steps)
    }

    /// Linear decay from 1 to `endFactor` over `steps` steps.
    public static func decay(steps: Int, to endFactor: Double) -> LinearSchedule {
        LinearSchedule(from: 1, to: endFactor, steps: steps)
    }

    /// The linear interpolation between `startFactor` and `endFactor` at `min(step, steps) / steps`.
    public func multiplier(at step: Int) -> Double {
        startFactor + (endFactor - startFactor) * Double(min(step, steps)) / Double(steps)
    }
}

/// Cosine decay from 1 to `floor` over `steps` steps, then `floor`:
/// `floor + (1 − floor)·(1 + cos(π·t/T))/2` — `CosineAnnealingLR` with `eta_min = floor·lr`,
/// optax's `cosine_decay_schedule` with `alpha = floor`.
public struct CosineDecaySchedule: LearningRateSchedule {
    /// The number of decay steps `T` (`T_max`); at least 1.
    public var steps: Int
    /// The final multiplier, reached at step `steps` (`eta_min / lr`; optax's `alpha`).
    public var floor: Double

    /// Cosine decay from 1 to `floor` over `steps` steps (clamped to at least 1).
    public init(steps: Int, floor: Double = 0) {
        self.steps = max(steps, 1)
        self.floor = floor
    }

    /// `floor + (1 − floor)·(1 + cos(π·min(t, T)/T))/2`.
    public func multiplier(at step: Int) -> Double {
        floor + (1 - floor) * (1 + cos(Double.pi * Double(min(step, steps)) / Double(steps))) / 2
    }
}

/// `gamma^⌊t / stepSize⌋`: `torch.optim.lr_scheduler.StepLR`.
public struct StepDecaySchedule: LearningRateSchedule {
    /// The number of steps between decays (`step_size`); at least 1.
    public var stepSize: Int
    /// The factor applied every `stepSize` steps (`gamma`).
    public var gamma: Double
    /// Multiplies by `gamma` every `stepSize` steps (clamped to at least 1).
    public init(stepSize: Int, gamma: Double = 0.1) {
        self.stepSize = max(stepSize, 1)
        self.gamma = gamma
    }
    /// `gamma^⌊step / stepSize⌋`.
    public func multiplier(at step: Int) -> Double { pow(gamma, Double(step / stepSize)) }
}

/// `gamma^(milestones passed)`: `torch.optim.lr_scheduler.MultiStepLR`.
public struct MultiStepSchedule: LearningRateSchedule {
    /// The steps at which the multiplier is multiplied by `gamma` (`milestones`), sorted.
    public var milestones: [Int]
    /// The factor applied at each milestone (`gamma`).
    public var gamma: Double
    /// Multiplies by `gamma` at each of `milestones` (stored sorted).
    public init(milestones: [Int], gamma: Double = 0.1) {
        self.milestones = milestones.sorted()
        self.gamma = gamma
    }
    /// `gamma` to the power of the number of milestones at or before `step`.
    public func multiplier(at step: Int) -> Double { pow(gamma, Double(milestones.filter { $0 <= step }.count)) }
}

/// `gamma^t`: `torch.optim.lr_scheduler.ExponentialLR`.
public struct ExponentialSchedule: LearningRateSchedule {
    /// The factor applied at every step (`gamma`).
    public var gamma: Double
    /// Multiplies by `gamma` at every step.
    public init(gamma: Double) { self.gamma = gamma }
    /// `gamma^step`.
    public func multiplier(at step: Int) -> Double { pow(gamma, Double(step)) }
}

/// `(1 − end)·(1 − t/T)^power + end` up to `T = steps`, then `end`:
/// `torch.optim.lr_scheduler.PolynomialLR` (end 0), optax's `polynomial_schedule`.
public struct PolynomialSchedule: LearningRateSchedule {
    /// The number of decay steps `T` (`total_iters`); at least 1.
    public var steps: Int
    /// The exponent of the decay (`power`); 1 is linear.
    public var power: Double
    /// The final multiplier, reached at step `steps` (optax's `end_value` relative to `init_value`).
    public var end: Double
    /// Polynomial decay from 1 to `end` over `steps` steps (clamped to at least 1).
    public init(steps: Int, power: Double = 1, end: Double = 0) {
        self.steps = max(steps, 1)
        self.power = power
        self.end = end
    }
    /// `(1 − end)·(1 − min(t, T)/T)^power + end`.
    public func multiplier(at step: Int) -> Double {
        (1 - end) * pow(1 - Double(min(step, steps)) / Double(steps), power) + end
    }
}
