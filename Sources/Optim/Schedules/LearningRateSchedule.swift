/// A learning-rate schedule: the multiplier of each group's *initial* learning rate at a step.
///
/// Schedules are small values that compose (``SequentialSchedule``), like optax's; a
/// ``LearningRateScheduler`` applies one to an optimizer. Because every group is scaled relative
/// to its own initial learning rate, the decoupled optimizers' weight decay — which follows
/// `lr / initialLR` — follows the schedule too, as in composer.
public protocol LearningRateSchedule: Sendable {
    /// The multiplier at `step` (0 for the first optimizer step).
    func multiplier(at step: Int) -> Double
}

/// Applies a schedule to an optimizer, as a `torch.optim.lr_scheduler` does: building it sets
/// every group's learning rate to `initialLR · multiplier(0)`; each ``step()`` (called after the
/// optimizer's step) advances one step and sets `initialLR · multiplier(step)`.
public final class LearningRateScheduler {
    /// The optimizer whose groups' learning rates this scheduler sets.
    public let optimizer: any Optimizer
    /// The schedule applied to every group's initial learning rate.
    public let schedule: any LearningRateSchedule
    /// Steps taken so far: the schedule's whole state, saved by checkpoints.
    public private(set) var stepCount: Int

    /// Starts `schedule` at `stepCount` (0 for a new run, the saved count when resuming).
    public init(_ optimizer: any Optimizer, schedule: any LearningRateSchedule, stepCount: Int = 0) throws(OptimError) {
        self.optimizer = optimizer
        self.schedule = schedule
        self.stepCount = 0
        try restore(stepCount: stepCount)
    }

    /// The multiplier in force now.
    public var multiplier: Double { schedule.multiplier(at: stepCount) }

    /// Moves to a saved step count (resuming from a checkpoint) and sets its learning rates.
    public func restore(stepCount: Int) throws(OptimError) {
        guard stepCount >= 0 else { throw .invalidConfiguration("scheduler step count must be >= 0, got \(stepCount)") }
        self.stepCount = stepCount
        try apply()
    }

    /// Advances one step and sets the new learning rates.
    public func step() throws(OptimError) {
        stepCount += 1
        try apply()
    }

    private func apply() throws(OptimError) {
        let factor = multiplier
        guard factor.isFinite, factor > 0 else {
            throw .invalidConfiguration("learning-rate schedule gave multiplier \(factor) at step \(stepCount); multipliers must be finite and > 0")
        }
        try optimizer.scaleLearningRates(by: factor)
    }
}
