import Foundation
import Optim
import Testing

/// Schedules against `torch.optim.lr_scheduler` (values committed by
/// `tools/reference/make_schedule_fixtures.py`) and against closed forms.
@Suite struct ScheduleTests {
    struct Case: Decodable, Sendable, CustomTestStringConvertible {
        struct Config: Decodable, Sendable {
            var kind: String
            var start_factor: Double?, end_factor: Double?, steps: Int?, floor: Double?, step_size: Int?, gamma: Double?
            var milestones: [Int]?, power: Double?, total_steps: Int?, pct_start: Double?, div_factor: Double?
            var final_div_factor: Double?, anneal: String?, warmup_steps: Int?
        }
        var name: String
        var config: Config
        var base_lr: Double
        var lrs: [Double]
        var testDescription: String { name }
    }

    struct File: Decodable { var cases: [Case] }

    static let torchCases: [Case] = {
        let url = Paths.repository.appendingPathComponent("Tests/Fixtures/schedules/torch_schedules.json")
        guard let data = try? Data(contentsOf: url), let file = try? JSONDecoder().decode(File.self, from: data) else { return [] }
        return file.cases
    }()

    static func schedule(_ c: Case.Config) -> (any LearningRateSchedule)? {
        switch c.kind {
        case "linear": return LinearSchedule(from: c.start_factor!, to: c.end_factor!, steps: c.steps!)
        case "cosine": return CosineDecaySchedule(steps: c.steps!, floor: c.floor!)
        case "step": return StepDecaySchedule(stepSize: c.step_size!, gamma: c.gamma!)
        case "multistep": return MultiStepSchedule(milestones: c.milestones!, gamma: c.gamma!)
        case "exponential": return ExponentialSchedule(gamma: c.gamma!)
        case "polynomial": return PolynomialSchedule(steps: c.steps!, power: c.power!)
        case "onecycle":
            return OneCycleSchedule(totalSteps: c.total_steps!, pctStart: c.pct_start!, divFactor: c.div_factor!,
                                    finalDivFactor: c.final_div_factor!, anneal: c.anneal == "linear" ? .linear : .cosine)
        case "warmup_cosine":
            return SequentialSchedule.warmupCosine(warmupSteps: c.warmup_steps!, totalSteps: c.total_steps!, floor: c.floor!)
        default: return nil
        }
    }

    @Test func torchFixturesArePresent() {
        #expect(Self.torchCases.count >= 10)
    }

    @Test(arguments: torchCases)
    func matchesTorch(_ testCase: Case) throws {
        let schedule = try #require(Self.schedule(testCase.config), "no Swift schedule for \(testCase.config.kind)")
        // torch's CosineAnnealingLR is periodic past T_max (the rate climbs back); our cosine decay
        // holds its floor there, as optax's does. Compare up to T_max, then check the floor.
        var lrs = testCase.lrs
        if testCase.config.kind == "cosine", let steps = testCase.config.steps {
            lrs = Array(lrs.prefix(steps + 1))
            for step in steps..<(steps + 10) { #expect(schedule.multiplier(at: step) == testCase.config.floor!) }
        }
        for (step, want) in lrs.enumerated() {
            let got = testCase.base_lr * schedule.multiplier(at: step)
            #expect(abs(got - want) <= 1e-12 + 1e-9 * abs(want), "\(testCase.name) step \(step): got \(got), want \(want)")
        }
    }

    @Test func warmupStableDecayClosedForm() {
        let wsd = WarmupStableDecaySchedule(warmupSteps: 4, stableSteps: 3, decaySteps: 5, floor: 0.1)
        let expected: [Double] = [0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 0.82, 0.64, 0.46, 0.28, 0.1, 0.1]
        for (step, want) in expected.enumerated() {
            #expect(abs(wsd.multiplier(at: step) - want) < 1e-12, "step \(step)")
        }
        let cosine = WarmupStableDecaySchedule(warmupSteps: 0, stableSteps: 0, decaySteps: 4, decay: .cosine)
        #expect(abs(cosine.multiplier(at: 2) - 0.5) < 1e-12)
    }

    @Test func sequentialCountsEachPhaseFromItsStart() {
        let schedule = SequentialSchedule([(ConstantSchedule(0.5), 2), (LinearSchedule(from: 1, to: 0.5, steps: 4), 4)],
                                          then: ExponentialSchedule(gamma: 0.5))
        let expected: [Double] = [0.5, 0.5, 1, 0.875, 0.75, 0.625, 1, 0.5, 0.25]
        for (step, want) in expected.enumerated() { #expect(schedule.multiplier(at: step) == want, "step \(step)") }
    }

    @Test func schedulerDrivesEveryGroupFromItsInitialRateAndDecoupledDecayFollows() throws {
        let a = try Parameter(name: "a", shape: [1], values: [1])
        let b = try Parameter(name: "b", shape: [1], values: [1])
        let optimizer = try DecoupledLionW(groups: [
            ParameterGroup([a], .init(learningRate: 0.1, weightDecay: 0.01)),
            ParameterGroup([b], .init(learningRate: 0.01, weightDecay: 0)),
        ])
        let scheduler = try LearningRateScheduler(optimizer, schedule: LinearSchedule(from: 0.5, to: 1, steps: 2))
        #expect(try optimizer.learningRate(group: 0) == 0.05)
        #expect(try optimizer.learningRate(group: 1) == 0.005)
        try a.setGradient([1])
        try optimizer.step()
        // decay factor lr/lr0 = 0.5: a = 1·(1 − 0.5·0.01) − 0.05
        #expect(a.valueArray == [Float(1 - 0.5 * 0.01) - Float(0.05)])
        try scheduler.step()
        #expect(scheduler.stepCount == 1)
        #expect(abs(try optimizer.learningRate(group: 0) - 0.075) < 1e-15)
        #expect(try optimizer.initialLearningRate(group: 0) == 0.1)
        // Resuming at a saved step count sets the rate of that step at once.
        let resumed = try LearningRateScheduler(optimizer, schedule: LinearSchedule(from: 0.5, to: 1, steps: 2), stepCount: 2)
        #expect(resumed.multiplier == 1)
        #expect(try optimizer.learningRate(group: 1) == 0.01)
    }

    @Test func invalidMultipliersAreRefused() throws {
        let optimizer = try SGD([try Parameter(name: "w", shape: [1], values: [1])], hyperparameters: .init(learningRate: 0.1))
        #expect(throws: OptimError.self) { try LearningRateScheduler(optimizer, schedule: ConstantSchedule(0)) }
        #expect(throws: OptimError.self) { try LearningRateScheduler(optimizer, schedule: ConstantSchedule(1), stepCount: -1) }
        #expect(try optimizer.learningRate(group: 0) == 0.1)
    }
}
