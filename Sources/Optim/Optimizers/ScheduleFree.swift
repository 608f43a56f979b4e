import Foundation

/// What schedule-free AdamW and SGD share (Defazio et al., 2024, arXiv:2405.15682): the averaging
/// weights kept per group, and the train/eval switch that moves the parameters between the
/// training point y and the average x.
///
/// Group state, as schedulefree 1.4.1 keeps it in each `param_group`: `k` (steps taken),
/// `lr_max` (−1 at first), `weight_sum`, `train_mode` (1 in train mode; parameters start there).
/// Each step, in doubles: `sched = (k+1)/warmup_steps` while `k < warmup_steps`, else 1;
/// `lr = group_lr·sched`; `lr_max = max(lr_max, lr)`; `weight = (k+1)^r · lr_max^weight_lr_power`;
/// `weight_sum += weight`; `ckp1 = weight/weight_sum` (0 if the sum is 0); `k += 1` — also for a
/// group none of whose parameters has a gradient.
public enum ScheduleFreeAveraging {
    /// The group state names, in order.
    public static let stateNames = ["k", "lr_max", "weight_sum", "train_mode"]
    /// Before the first step: no steps, `lr_max` −1, no weight, train mode.
    public static let initialState: [Double] = [0, -1, 0, 1]

    static func advance(learningRate: Double, warmupSteps: Int, r: Double, weightLearningRatePower: Double, state: inout [Double]) {
        let step = values(learningRate: learningRate, warmupSteps: warmupSteps, r: r, weightLearningRatePower: weightLearningRatePower,
                          k: state[0], previousMaximum: state[1])
        state[1] = step.learningRateMaximum
        state[2] += step.weight
        state[0] += 1
    }

    /// The scheduled learning rate and the interpolation weight `ckp1` of the step just advanced.
    static func current(learningRate: Double, warmupSteps: Int, r: Double, weightLearningRatePower: Double,
                        state: [Double]) -> (learningRate: Double, ckp1: Double, k: Double) {
        let k = state[0] - 1
        let step = values(learningRate: learningRate, warmupSteps: warmupSteps, r: r, weightLearningRatePower: weightLearningRatePower,
                          k: k, previousMaximum: state[1])
        let weightSum = state[2]
        return (step.learningRate, weightSum != 0 ? step.weight / weightSum : 0, k)
    }

    private static func values(learningRate: Double, warmupSteps: Int, r: Double, weightLearningRatePower: Double,
                               k: Double, previousMaximum: Double) -> (learningRate: Double, learningRateMaximum: Double, weight: Double) {
        let schedule = k < Double(warmupSteps) ? (k + 1) / Double(warmupSteps) : 1
        let lr = learningRate * schedule
        let maximum = max(lr, previousMaximum)
        return (lr, maximum, pow(k + 1, r) * pow(maximum, weightLearningRatePower))
    }

    /// The paper both rules implement.
    static let paper = "Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, 2024, \"The Road Less Scheduled\", arXiv:2405.15682"

    /// The step both rules end with, given the update `u` at the training point `y`:
    /// `y ← lerp(y, z, ckp1) + yStep·u` (returned and stored in the parameter) and
    /// `z ← z − lr·u` (stored in `state0`).
    @_transparent
    public static func interpolate(_ o: KernelOperands, _ i: Int, _ n: Int, y: FloatVector, u: FloatVector, ckp1: Float, oneMinusCkp1: Float,
                                   yStep: Float, negativeLearningRate: Float) -> FloatVector {
        let z = Elementwise.load(o.state0, i, n)
        let after = Elementwise.lerp(y, z, weight: ckp1, oneMinusWeight: oneMinusCkp1) + yStep * u
        Elementwise.store(z + negativeLearningRate * u, o.state0, i, n)
        Elementwise.store(after, o.parameter, i, n)
        return after
    }

    static func checkStep(_ optimizer: String, state: [Double]) throws(OptimError) {
        if state[3] == 0 { throw .stepInEvalMode(optimizer: optimizer) }
    }

    static func setMode(training: Bool, state: inout [Double]) -> Bool {
        let target: Double = training ? 1 : 0
        guard state[3] != target else { return false }
        state[3] = target
        return true
    }

    /// `p.lerp_(z, 1 − β)` to train (x → y), `p.lerp_(z, 1 − 1/β)` to evaluate (y → x), with
    /// `z` the state buffer given.
    static func move(training: Bool, beta: Double, parameter: UnsafeMutableBufferPointer<Float>, z: UnsafeMutableBufferPointer<Float>) {
        let weight = Float(training ? 1 - beta : 1 - 1 / beta)
        let complement = 1 - weight
        for index in parameter.indices {
            parameter[index] = Elementwise.lerp(parameter[index], z[index], weight: weight, oneMinusWeight: complement)
        }
    }

    static func validate(_ optimizer: String, warmupSteps: Int, r: Double, weightLearningRatePower: Double) throws(OptimError) {
        guard warmupSteps >= 0 else { throw Validate.fail(optimizer, "warmupSteps (warmup_steps)", Double(warmupSteps), "an integer >= 0") }
        try Validate.finite(r, "r", optimizer)
        try Validate.finite(weightLearningRatePower, "weightLearningRatePower (weight_lr_power)", optimizer)
    }

    static func integer(_ value: Double, _ name: String, _ optimizer: String) throws(OptimError) -> Int {
        guard value.isFinite, value == value.rounded(), abs(value) < 1e15 else {
            throw Validate.fail(optimizer, name, value, "an integer")
        }
        return Int(value)
    }
}

/// The hyperparameters schedule-free's averaging reads (``ScheduleFreeAdamWRule``, ``ScheduleFreeSGDRule``).
public protocol ScheduleFreeHyperparameters: OptimizerHyperparameters {
    /// Steps of linear learning-rate warm-up.
    var warmupSteps: Int { get }
    /// The averaging weight's power of the step count.
    var r: Double { get }
    /// The averaging weight's power of the largest learning rate so far.
    var weightLearningRatePower: Double { get }
    /// The train/eval switch's interpolation constant: AdamW's β1, SGD's momentum.
    var interpolation: Double { get }
}

/// A schedule-free update rule: the group state of ``ScheduleFreeAveraging``, the refusal of a
/// step in eval mode, `z` starting as a copy of the parameter, and the train/eval switch; the
/// rule itself gives the per-element arithmetic and `z` as its first state buffer.
public protocol ScheduleFreeRule: UpdateRule where Hyperparameters: ScheduleFreeHyperparameters {
    /// The coefficients of a step from the scheduled learning rate, `ckp1` and the group's step
    /// count before this step (`k`).
    static func coefficients(_ hyperparameters: Hyperparameters, learningRate: Double, ckp1: Double, k: Double) -> Coefficients
}

extension ScheduleFreeRule {
    public static func keepsMoment(_ h: Hyperparameters) -> Bool { false }
    public static func groupStateNames(_ h: Hyperparameters) -> [String] { ScheduleFreeAveraging.stateNames }
    public static func initialGroupState(_ h: Hyperparameters) -> [Double] { ScheduleFreeAveraging.initialState }

    public static func checkStep(_ h: Hyperparameters, groupState: [Double]) throws(OptimError) {
        try ScheduleFreeAveraging.checkStep(name, state: groupState)
    }

    public static func advanceGroup(_ h: Hyperparameters, initialLearningRate: Double, state: inout [Double]) {
        ScheduleFreeAveraging.advance(learningRate: h.learningRate, warmupSteps: h.warmupSteps, r: h.r,
                                      weightLearningRatePower: h.weightLearningRatePower, state: &state)
    }

    public static func initializeState(_ h: Hyperparameters, parameter: UnsafeBufferPointer<Float>, state: [UnsafeMutableBufferPointer<Float>]) {
        _ = state[0].update(fromContentsOf: parameter)
    }

    public static func setMode(training: Bool, _ h: Hyperparameters, groupState: inout [Double]) -> Bool {
        ScheduleFreeAveraging.setMode(training: training, state: &groupState)
    }

    public static func moveParameter(training: Bool, _ h: Hyperparameters, groupState: [Double], parameter: UnsafeMutableBufferPointer<Float>,
                                     state: [UnsafeMutableBufferPointer<Float>]) {
        ScheduleFreeAveraging.move(training: training, beta: h.interpolation, parameter: parameter, z: state[0])
    }

    /// The first step's coefficients (one group, no warm-up), for callers without group state.
    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int) -> Coefficients {
        var none: [Float] = []
        return coefficients(h, initialLearningRate: initialLearningRate, step: step, groupState: [1, h.learningRate, 0, 1], scalars: &none)
    }

    public static func coefficients(_ h: Hyperparameters, initialLearningRate: Double, step: Int, groupState: [Double],
                                    scalars: inout [Float]) -> Coefficients {
        let (lr, ckp1, k) = ScheduleFreeAveraging.current(learningRate: h.learningRate, warmupSteps: h.warmupSteps, r: h.r,
                                                          weightLearningRatePower: h.weightLearningRatePower, state: groupState)
        return coefficients(h, learningRate: lr, ckp1: ckp1, k: k)
    }
}
