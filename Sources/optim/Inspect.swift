import ArgumentParser
import Foundation
import Safetensors

/// `optim inspect FILE`: the tensors and metadata of a checkpoint or any safetensors file.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a safetensors file's tensors (name, dtype, shape) and its metadata.")

    @Argument(help: "A .safetensors file (an optim checkpoint or any other).")
    var file: String

    func run() throws {
        let contents: SafetensorsFile
        try checkInputFile(file, option: "")
        do {
            contents = try SafetensorsFile(contentsOf: URL(fileURLWithPath: file))
        } catch {
            throw CLIError("\(file): \(error)")
        }
        print("\(contents.tensors.count) tensor(s)")
        let width = min(max(contents.tensors.map(\.name.count).max() ?? 4, 4), 60)
        for tensor in contents.tensors {
            print("  \(tensor.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(tensor.dtype.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0))  \(tensor.shape)")
        }
        if !contents.metadata.isEmpty {
            print("metadata")
            for (key, value) in contents.metadata.sorted(by: { $0.key < $1.key }) {
                print("  \(key): \(value.count > 200 ? String(value.prefix(200)) + "…" : value)")
            }
        }
    }
}
