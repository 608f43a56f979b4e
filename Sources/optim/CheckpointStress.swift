import ArgumentParser
import Foundation
import Optim
import OptimFixtures

/// `optim checkpoint-stress` (hidden): the child process of the checkpoint kill test.
///
/// Loads `--file` (written by the test), then steps a ``SyntheticProblem`` and saves the whole
/// optimizer and scheduler to the same file after every step, printing `saving N` before each
/// save and `saved N` once it has returned. The test kills it at random moments and checks that the file always loads and
/// equals one of the saved states, never older than the last one acknowledged.
struct CheckpointStress: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint-stress",
        abstract: "Resume a synthetic problem from a checkpoint and keep saving it (for the kill test).",
        shouldDisplay: false)

    @Option(help: "The checkpoint to resume from and save to.")
    var file: String

    @Option(help: "Registry name of the optimizer.")
    var optimizer: String

    @Option(help: "Elements of the synthetic problem.")
    var params: Int

    @Option(help: "Stop after this step.")
    var steps: Int

    func run() throws {
        let problem = try SyntheticProblem(optimizer: optimizer, parameterCount: params)
        let parameters = try problem.makeParameters()
        let optimizer = try problem.makeOptimizer(parameters)
        let scheduler = try problem.makeScheduler(optimizer)
        let url = URL(fileURLWithPath: file)
        try Checkpoint.load(from: url, into: optimizer, scheduler: scheduler)
        while scheduler.stepCount < steps {
            problem.setGradients(step: scheduler.stepCount + 1, parameters)
            try optimizer.step()
            try scheduler.step()
            FileHandle.standardOutput.write(Data("saving \(scheduler.stepCount)\n".utf8))
            try Checkpoint.save(optimizer, scheduler: scheduler, to: url)
            FileHandle.standardOutput.write(Data("saved \(scheduler.stepCount)\n".utf8))
        }
    }
}
