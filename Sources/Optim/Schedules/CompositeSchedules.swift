import Foundation

/// Schedules one after another: each runs for its number of steps (the last one for ever), and
/// counts its steps from its own start — optax's `join_schedules`, torch's `SequentialLR`.
public struct SequentialSchedule: LearningRateSchedule {
    /// The schedules to run first, in order, each with its number of steps.
    public var phases: [(schedule: any LearningRateSchedule, steps: Int)]
    /// The schedule that runs after every phase, for ever.
    public var last: any LearningRateSchedule

    /// `phases` run for their step counts in order; `last` runs after them.
    public init(_ phases: [(schedule: any LearningRateSchedule, steps: Int)], then last: any LearningRateSchedule) {
        self.phases = phases
        self.last = last
    }

    /// The multiplier of the phase that contains `step`, at the step counted from that phase's start.
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
    /// The shape of the decay phase: linear or cosine.
    public enum Decay: Sendable {
        /// From the full rate down to `floor` in a straight line.
        case linear
        /// Half a cosine from the full rate down to `floor`.
        case cosine
    }

    /// The number of linear warm-up steps; step `t` of them has multiplier `(t + 1) / warmupSteps`.
    public var warmupSteps: Int
    /// The number of steps at the full rate (multiplier 1) after the warm-up.
    public var stableSteps: Int
    /// The number of steps of the decay from 1 to `floor`; at least 1.
    public var decaySteps: Int
    /// The final multiplier, reached at the end of the decay and kept after it.
    public var floor: Double
    /// The shape of the decay: linear or cosine.
    public var decay: Decay

    /// Warm-up, stable and decay phases of the given lengths (negative lengths clamp to 0,
    /// `decaySteps` to at least 1).
    public init(warmupSteps: Int, stableSteps: Int, decaySteps: Int, floor: Double = 0, decay: Decay = .linear) {
        self.warmupSteps = max(warmupSteps, 0)
        self.stableSteps = max(stableSteps, 0)
        self.decaySteps = max(decaySteps, 1)
        self.floor = floor
        self.decay = decay
    }

    /// The warm-up, stable or decay multiplier at `step`.
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
    /// The annealing shape between the cycle's points (`anneal_strategy`: "cos" or "linear").
    public enum Anneal: Sendable {
        /// Half a cosine between the cycle's points (`anneal_strategy="cos"`, torch's default).
        case cosine
        /// A straight line between the cycle's points (`anneal_strategy="linear"`).
        case linear
    }

    /// The length of the cycle in steps (`total_steps`); at least 2.
    public var totalSteps: Int
    /// The fraction of the cycle spent increasing the rate (`pct_start`).
    public var pctStart: Double
    /// The initial rate is the peak divided by this (`div_factor`).
    public var divFactor: Double
    /// The final rate is the initial rate divided by this (`final_div_factor`).
    public var finalDivFactor: Double
    /// The annealing shape (`anneal_strategy`).
    public var anneal: Anneal

    /// A one-cycle schedule over `totalSteps` steps (clamped to at least 2), with `OneCycleLR`'s defaults.
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

    /// The multiplier relative to the peak at `step`; steps past the end keep the last step's value.
    public func multiplier(at step: Int) -> Double {
        let initial = 1 / divFactor, minimum = initial / finalDivFactor
        let peakStep = pctStart * Double(totalSteps) - 1, lastStep = Double(totalSteps - 1)
        let t = Double(min(step, totalSteps - 1))
        if t <= peakStep { return interpolate(initial, 1, t / peakStep) }
        return interpolate(1, minimum, (t - peakStep) / (lastStep - peakStep))
    }
}
