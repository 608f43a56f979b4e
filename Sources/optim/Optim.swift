import ArgumentParser
import Foundation
import Training

/// `optim`: the command-line face of swift-optim.
@main
struct OptimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "optim",
        abstract: "Optimizers for neural networks in Swift: verify, benchmark and train.",
        subcommands: [Train.self, Compare.self, Sweep.self, Verify.self, Bench.self, BenchModel.self, Inspect.self, List.self, CheckpointStress.self])

    static let commandNames = ["train", "compare", "verify", "bench", "bench-model", "inspect", "list", "checkpoint-stress"]

    /// Parses and runs a command. Every error ends as one line on standard error,
    /// `optim <command>: <message>`, and status 1 (help and `--version` print in full, status 0);
    /// a command that has printed its own message throws an ``ExitCode`` (130 and 143 after
    /// SIGINT and SIGTERM).
    static func main() {
        let arguments = joiningNegativeNumbers(Array(CommandLine.arguments.dropFirst()))
        let name = arguments.first.flatMap { commandNames.contains($0) ? "optim \($0)" : nil } ?? "optim"
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let status = exitCode(for: error)
            if status == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            writeIgnoringErrors(STDERR_FILENO, "\(name): \(describe(error, parserMessage: message(for: error)))\n")
            Foundation.exit(1)
        }
    }

    /// `--lr -1` as `--lr=-1`: an option followed by a negative number (or a comma-separated list
    /// starting with one) takes it as its value, where the parser would read it as a flag. Nothing
    /// after `--` is touched.
    static func joiningNegativeNumbers(_ arguments: [String]) -> [String] {
        var result: [String] = []
        var index = 0
        while index < arguments.count {
            let token = arguments[index]
            if token == "--" {
                result += arguments[index...]
                break
            }
            if token.hasPrefix("--"), token.count > 2, !token.contains("="), index + 1 < arguments.count,
               isNegativeNumber(arguments[index + 1]) {
                result.append(token + "=" + arguments[index + 1])
                index += 2
                continue
            }
            result.append(token)
            index += 1
        }
        return result
    }

    static func isNegativeNumber(_ text: String) -> Bool {
        guard text.hasPrefix("-"), text.count > 1 else { return false }
        return text.split(separator: ",", omittingEmptySubsequences: false).allSatisfy { Double($0.trimmingCharacters(in: .whitespaces)) != nil }
    }
}
