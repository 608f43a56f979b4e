import ArgumentParser
import Foundation
import Optim
import OptimFixtures

/// `optim verify PATH...`: replays reference fixtures and reports each one.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay optimizer fixtures (optim-fixture/1) and compare with the reference trajectories.")

    @Argument(help: "Fixture files, or folders searched recursively for .json files.")
    var paths: [String]

    @Option(help: "Threads for the optimizer kernels (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024, got \(threads)") }
    }

    func run() throws {
        let pool = threads.map { ThreadPool(threadCount: $0) } ?? .shared
        var passed = 0, failed = 0
        func row(_ name: String, _ optimizer: String, _ steps: String, _ abs: String, _ rel: String, _ status: String) {
            print(name.padding(toLength: max(36, name.count), withPad: " ", startingAt: 0), optimizer.padding(toLength: 26, withPad: " ", startingAt: 0),
                  steps.leftPad(5), abs.leftPad(11), rel.leftPad(11), " ", status)
        }
        row("name", "optimizer", "steps", "max abs", "max rel", "result")
        // A FIFO or device named here would block or mislead the reader: refuse it by its type.
        let typeProblems = Dictionary(paths.compactMap { path in fileTypeProblem(path, allowFolder: true).map { (path, $0) } }) { first, _ in first }
        let found = FixtureFiles.find(paths.filter { typeProblems[$0] == nil }) + typeProblems.sorted { $0.key < $1.key }.map { (path: $0.key, error: Optional($0.value)) }
        for (path, problem) in found {
            if let problem {
                failed += 1
                row(path, "-", "-", "-", "-", "FAIL: \(problem)")
                continue
            }
            do {
                let fixture = try Fixture(contentsOf: URL(fileURLWithPath: path))
                let result = try fixture.replay(file: path, threadPool: pool)
                if result.passed { passed += 1 } else { failed += 1 }
                row(result.name, result.optimizer, String(result.steps), format(result.maxAbsoluteError), format(result.maxRelativeError),
                    result.passed ? "pass" : "FAIL: \(result.mismatches) value(s) out of tolerance; first: \(result.firstMismatch ?? "")")
            } catch {
                failed += 1
                row((path as NSString).lastPathComponent, "-", "-", "-", "-", "FAIL: \(error)")
            }
        }
        print("\(passed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }

    private func format(_ value: Double) -> String { String(format: "%.3e", value) }
}

extension String {
    func leftPad(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
