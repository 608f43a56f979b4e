import Foundation

/// Schedules one after another: each runs for its number of steps (the last one for ever), and
/// counts its steps from its own start — optax's `join_schedules`, torch's `SequentialLR`.
public struct SequentialSchedule: LearningRateSchedule {
    public var phases: [(schedule: any LearningRateSchedule, steps: Int)]
    public var last: any LearningRateSchedule

    /// `phases` run for their step counts in order; `last` runs after them.
    public init(_ phases: [(schedule: any LearningRateSchedule, steps: Int)], then last: any LearningRateSchedule) {
        self.phases = phases
        self.last = last
    }

    public func multiplier(at step: Int) -> Double {
        var start = 0
        for phase in phases {
            if step < start + phase.steps { return phase.schedule.multiplier(at: step - start) }
            start += phase.steps
        }
        return last.multiplier(at: step - start)
    }

    /// Linear warm-up over `warmupSteps`, then cosine decay to `floor` at `totalSteps`.
    public static func warmupCosine(warmupSteps: Int, totalSteps: Int, floor: Double = 0) -> SequentialSchedule {
        SequentialSchedule([(LinearSchedule.warmup(steps: warmupSteps), warmupSteps)],
                           then: CosineDecaySchedule(steps: max(totalSteps - warmupSteps, 1), floor: floor))
    }
}

/// Warm-up, stable, decay (WSD): linear warm-up over `warmupSteps`, the full rate for
/// `stableSteps`, then a decay to `floor` over `decaySteps` (linear or cosine).
public struct WarmupStableDecaySchedule: LearningRateSchedule {
    public enum Decay: Sendable { case linear, cosine }

    public var warmupSteps: Int
    public var stableSteps: Int
    public var decaySteps: Int
    public var floor: Double
    public var decay: Decay

    public init(warmupSteps: Int, stableSteps: Int, decaySteps: Int, floor: Double = 0, decay: Decay = .linear) {
        self.warmupSteps = max(warmupSteps, 0)
        self.stableSteps = max(stableSteps, 0)
        self.decaySteps = max(decaySteps, 1)
        self.floor = floor
        self.decay = decay
    }

    public func multiplier(at step: Int) -> Double {
        if step < warmupSteps { return Double(step + 1) / Double(warmupSteps) }
        let into = step - warmupSteps - stableSteps
        if into < 0 { return 1 }
        let progress = Double(min(into, decaySteps)) / Double(decaySteps)
        switch decay {
        case .linear: return floor + (1 - floor) * (1 - progress)
        case .cosine: return floor + (1 - floor) * (1 + cos(Double.pi * progress)) / 2
        }
    }
}

/// The one-cycle policy (Smith & Topin, 2018) as `torch.optim.lr_scheduler.OneCycleLR` with
/// `three_phase=False`, relative to the peak: the group's learning rate is the peak (`max_lr`);
/// the cycle starts at `1/divFactor` of it, anneals up for `pctStart` of `totalSteps`, then down
/// to `1/(divFactor·finalDivFactor)` at the last step.
public struct OneCycleSchedule: LearningRateSchedule {
    public enum Anneal: Sendable { case cosine, linear }

    public var totalSteps: Int
    public var pctStart: Double
    public var divFactor: Double
    public var finalDivFactor: Double
    public var anneal: Anneal

    public init(totalSteps: Int, pctStart: Double = 0.3, divFactor: Double = 25, finalDivFactor: Double = 1e4, anneal: Anneal = .cosine) {
        self.totalSteps = max(totalSteps, 2)
        self.pctStart = pctStart
        self.divFactor = divFactor
        self.finalDivFactor = finalDivFactor
        self.anneal = anneal
    }

    private func interpolate(_ start: Double, _ end: Double, _ fraction: Double) -> Double {
        switch anneal {
        case .cosine: return end + (start - end) / 2 * (cos(Double.pi * fraction) + 1)
        case .linear: return (end - start) * fraction + start
        }
    }

    public func multiplier(at step: Int) -> Double {
        let initial = 1 / divFactor, minimum = initial / finalDivFactor
        let peakStep = pctStart * Double(totalSteps) - 1, lastStep = Double(totalSteps - 1)
        let t = Double(min(step, totalSteps - 1))
        if t <= peakStep { return interpolate(initial, 1, t / peakStep) }
        return interpolate(1, minimum, (t - peakStep) / (lastStep - peakStep))
    }
}
