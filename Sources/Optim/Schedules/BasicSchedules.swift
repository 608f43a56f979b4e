import Foundation

/// The same multiplier at every step.
public struct ConstantSchedule: LearningRateSchedule {
    public var value: Double
    public init(_ value: Double = 1) { self.value = value }
    public func multiplier(at step: Int) -> Double { value }
}

/// Linear warm-up from `startFactor` to `endFactor` over `steps` steps, then `endFactor`:
/// `torch.optim.lr_scheduler.LinearLR`.
public struct LinearSchedule: LearningRateSchedule {
    public var startFactor: Double
    public var endFactor: Double
    public var steps: Int

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

    public func multiplier(at step: Int) -> Double {
        startFactor + (endFactor - startFactor) * Double(min(step, steps)) / Double(steps)
    }
}

/// Cosine decay from 1 to `floor` over `steps` steps, then `floor`:
/// `floor + (1 − floor)·(1 + cos(π·t/T))/2` — `CosineAnnealingLR` with `eta_min = floor·lr`,
/// optax's `cosine_decay_schedule` with `alpha = floor`.
public struct CosineDecaySchedule: LearningRateSchedule {
    public var steps: Int
    public var floor: Double

    public init(steps: Int, floor: Double = 0) {
        self.steps = max(steps, 1)
        self.floor = floor
    }

    public func multiplier(at step: Int) -> Double {
        floor + (1 - floor) * (1 + cos(Double.pi * Double(min(step, steps)) / Double(steps))) / 2
    }
}

/// `gamma^⌊t / stepSize⌋`: `torch.optim.lr_scheduler.StepLR`.
public struct StepDecaySchedule: LearningRateSchedule {
    public var stepSize: Int
    public var gamma: Double
    public init(stepSize: Int, gamma: Double = 0.1) {
        self.stepSize = max(stepSize, 1)
        self.gamma = gamma
    }
    public func multiplier(at step: Int) -> Double { pow(gamma, Double(step / stepSize)) }
}

/// `gamma^(milestones passed)`: `torch.optim.lr_scheduler.MultiStepLR`.
public struct MultiStepSchedule: LearningRateSchedule {
    public var milestones: [Int]
    public var gamma: Double
    public init(milestones: [Int], gamma: Double = 0.1) {
        self.milestones = milestones.sorted()
        self.gamma = gamma
    }
    public func multiplier(at step: Int) -> Double { pow(gamma, Double(milestones.filter { $0 <= step }.count)) }
}

/// `gamma^t`: `torch.optim.lr_scheduler.ExponentialLR`.
public struct ExponentialSchedule: LearningRateSchedule {
    public var gamma: Double
    public init(gamma: Double) { self.gamma = gamma }
    public func multiplier(at step: Int) -> Double { pow(gamma, Double(step)) }
}

/// `(1 − end)·(1 − t/T)^power + end` up to `T = steps`, then `end`:
/// `torch.optim.lr_scheduler.PolynomialLR` (end 0), optax's `polynomial_schedule`.
public struct PolynomialSchedule: LearningRateSchedule {
    public var steps: Int
    public var power: Double
    public var end: Double
    public init(steps: Int, power: Double = 1, end: Double = 0) {
        self.steps = max(steps, 1)
        self.power = power
        self.end = end
    }
    public func multiplier(at step: Int) -> Double {
        (1 - end) * pow(1 - Double(min(step, steps)) / Double(steps), power) + end
    }
}
