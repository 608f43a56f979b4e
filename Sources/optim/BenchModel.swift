import ArgumentParser
import ExampleModel
import Foundation

/// `optim bench-model`: training-step throughput of the example GPT on the bundled novels
/// (`GPT.benchmark`); `tools/austen/bench.sh` runs it beside PyTorch.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-model",
        abstract: "Time training steps (forward, backward, clipping, AdamW) of the example GPT on Jane Austen; tokens/s.")

    @Option(help: "Transformer blocks.") var layers = 4
    @Option(help: "Attention heads.") var heads = 4
    @Option(help: "Embedding width.") var embedding = 128
    @Option(help: "Context length.") var context = 64
    @Option(name: .customLong("batch-size"), help: "Sequences per batch.") var batchSize = 12
    @Option(help: "Timed steps per run.") var steps = 20
    @Option(help: "Timed runs (the median is reported).") var runs = 5
    @Option(help: "Threads (default: all cores).") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        do {
            let corpus = try TextCorpus.austen()
            let configuration = GPTConfiguration(vocabularySize: corpus.vocabularySize, contextLength: context, layers: layers, heads: heads, embedding: embedding)
            let result = try GPT.benchmark(configuration, corpus: corpus, batchSize: batchSize, steps: steps, runs: runs, threads: threads)
            if json {
                let object: [String: Any] = ["tokens_per_second": result.tokensPerSecond, "runs": result.runs, "threads": threads]
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(String(format: "GPT %d layers, %d heads, %d wide, context %d, batch %d, %d thread(s): %.0f tokens/s (median of %d runs: %@)",
                             layers, heads, embedding, context, batchSize, threads, result.tokensPerSecond, runs,
                             result.runs.map { String(format: "%.0f", $0) }.joined(separator: ", ")))
            }
        } catch {
            throw fail("bench-model", error)
        }
    }
}
