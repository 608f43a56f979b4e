import Foundation
import Optim

/// Optimizers trained over several seeds (each seed: the same initial weights and batches for
/// every optimizer), summarised: the mean and spread of each one's final score, and which
/// differences exceed the seed-to-seed spread. `optim compare --seeds N` writes it.
///
/// The score is the final validation loss for a text task (lower is better) and the final test
/// accuracy otherwise (higher is better). Two optimizers differ beyond the spread when their means
/// are further apart than twice the standard error of the difference, `2·sqrt(s₁²/n₁ + s₂²/n₂)`
/// (Welch's, about 95 % for normal scores; with one seed no spread is measured and nothing is
/// called different).
public struct ShootOut: Sendable {
    /// One optimizer's runs, one per seed.
    public struct Entry: Sendable {
        /// The optimizer's label (`lion`, `lookahead(adamw)`).
        public var name: String
        /// One result per seed, in seed order.
        public var results: [TrainingResult]

        /// The runs `results` of the optimizer labelled `name`.
        public init(name: String, results: [TrainingResult]) {
            self.name = name
            self.results = results
        }

        /// The learning rate (`lr`) of the first run's configuration, or `nil` when it sets none.
        public var learningRate: Double? {
            guard let configuration = try? results.first?.configuration.optimizerConfiguration(),
                  case let .number(lr)? = configuration.hyperparameters["lr"] else { return nil }
            return lr
        }
    }

    /// One optimizer's scores over the seeds.
    public struct Summary: Sendable, Equatable {
        /// The optimizer's label.
        public var name: String
        /// The final score of each seed, in seed order.
        public var scores: [Double]
        /// The mean score.
        public var mean: Double
        /// The sample standard deviation (0 for one seed).
        public var standardDeviation: Double
        /// Training milliseconds per step over all the seeds' runs.
        public var millisecondsPerStep: Double
        /// Optimizer state bytes per model parameter (of the first run).
        public var stateBytesPerParameter: Double
    }

    /// A pair whose difference exceeds the seed spread: `better` ahead of `worse` by `difference`.
    public struct Difference: Sendable, Equatable {
        /// The label of the optimizer ahead.
        public var better: String
        /// The label of the optimizer behind.
        public var worse: String
        /// The absolute difference of their mean scores.
        public var difference: Double
        /// Twice the standard error of the difference, which `difference` exceeds.
        public var threshold: Double
    }

    /// The optimizers compared, each with its runs.
    public var entries: [Entry]
    /// Whether the score is a validation loss (text task) rather than a test accuracy.
    public var scoreIsLoss: Bool

    /// A shoot-out of `entries`; the score is a loss when the first run is of the text task.
    public init(entries: [Entry]) {
        self.entries = entries
        scoreIsLoss = entries.first?.results.first?.configuration.task == .austen
    }

    /// `validation loss` or `test accuracy`.
    public var scoreName: String { scoreIsLoss ? "validation loss" : "test accuracy" }

    func score(_ result: TrainingResult) -> Double { scoreIsLoss ? result.testLoss : result.testAccuracy }

    /// Each optimizer's summary, best mean first.
    public var summaries: [Summary] {
        entries.map { entry in
            let scores = entry.results.map(score)
            let mean = scores.reduce(0, +) / Double(max(scores.count, 1))
            let variance = scores.count > 1 ? scores.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(scores.count - 1) : 0
            let steps = entry.results.reduce(0) { $0 + $1.steps }, seconds = entry.results.reduce(0) { $0 + $1.seconds }
            return Summary(name: entry.name, scores: scores, mean: mean, standardDeviation: variance.squareRoot(),
                           millisecondsPerStep: steps > 0 ? seconds / Double(steps) * 1000 : 0,
                           stateBytesPerParameter: entry.results.first?.stateBytesPerParameter ?? 0)
        }.sorted { scoreIsLoss ? $0.mean < $1.mean : $0.mean > $1.mean }
    }

    /// The pairs whose means differ by more than twice the standard error of the difference.
    public var differences: [Difference] {
        let summaries = self.summaries
        var result: [Difference] = []
        for (index, better) in summaries.enumerated() {
            for worse in summaries[(index + 1)...] {
                guard better.scores.count > 1, worse.scores.count > 1 else { continue }
                let threshold = 2 * (better.standardDeviation * better.standardDeviation / Double(better.scores.count)
                                     + worse.standardDeviation * worse.standardDeviation / Double(worse.scores.count)).squareRoot()
                let difference = abs(better.mean - worse.mean)
                if difference > threshold {
                    result.append(Difference(better: better.name, worse: worse.name, difference: difference, threshold: threshold))
                }
            }
        }
        return result
    }

    /// What the runs say about the Lion paper's advice (Chen et al., 2023, section 5: a learning
    /// rate 3–10× smaller than AdamW's), from the learning rates used (chosen by a sweep when
    /// one ran); `nil` without AdamW and a Lion variant among the entries.
    public var lionAdvice: String? {
        guard let adamw = entries.first(where: { $0.name == "adamw" })?.learningRate else { return nil }
        let lions = entries.filter { $0.name == "lion" || $0.name == "decoupled_lionw" }
        guard !lions.isEmpty else { return nil }
        return lions.compactMap { entry in
            guard let lr = entry.learningRate, lr > 0 else { return nil }
            let ratio = adamw / lr
            let verdict = ratio >= 3 && ratio <= 10 ? "shows (within its 3–10×)" : "does not show (outside its 3–10×)"
            return String(format: "AdamW's learning rate %.3g is %.3g× %@'s %.3g: the Lion paper's advice of a 3–10× smaller learning rate for Lion %@.",
                          adamw, ratio, entry.name, lr, verdict)
        }.joined(separator: " ")
    }

    /// The summary as JSON (sorted keys): per optimizer its scores, mean and spread, and the
    /// differences beyond the spread.
    public func json() throws -> Data {
        struct Row: Encodable {
            var optimizer: String, scores: [Double], mean: Double, standard_deviation: Double
            var ms_per_step: Double, state_bytes_per_parameter: Double, lr: Double?
        }
        struct Pair: Encodable { var better: String, worse: String, difference: Double, threshold: Double }
        struct Document: Encodable {
            var score: String, seeds: Int, optimizers: [Row], differences_beyond_spread: [Pair], lion_advice: String?
        }
        let rates = Dictionary(entries.map { ($0.name, $0.learningRate) }, uniquingKeysWith: { first, _ in first })
        let document = Document(
            score: scoreName, seeds: entries.map(\.results.count).max() ?? 0,
            optimizers: summaries.map { Row(optimizer: $0.name, scores: $0.scores, mean: $0.mean, standard_deviation: $0.standardDeviation,
                                            ms_per_step: $0.millisecondsPerStep, state_bytes_per_parameter: $0.stateBytesPerParameter,
                                            lr: rates[$0.name] ?? nil) },
            differences_beyond_spread: differences.map { Pair(better: $0.better, worse: $0.worse, difference: $0.difference, threshold: $0.threshold) },
            lion_advice: lionAdvice)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(document)
    }

    /// The HTML report: the table of means and spreads, the differences, and the first seed's
    /// curves (training loss and held-out score against step and time).
    public func html(title: String, description: String, generated: Date = Date()) -> String {
        func cell(_ text: String, numeric: Bool = false) -> String { CompareReport.cell(text, numeric: numeric) }
        let format = scoreIsLoss ? "%.4f" : "%.2f%%", scale = scoreIsLoss ? 1.0 : 100.0
        let rates = Dictionary(entries.map { ($0.name, $0.learningRate) }, uniquingKeysWith: { first, _ in first })
        var rows = ""
        for (index, summary) in summaries.enumerated() {
            rows += "<tr\(index == 0 ? " class=\"best\"" : "")>" + cell(summary.name)
                + cell((rates[summary.name] ?? nil).map { String(format: "%.3g", $0) } ?? "", numeric: true)
                + cell(String(format: format, summary.mean * scale), numeric: true)
                + cell(summary.scores.count > 1 ? String(format: format, summary.standardDeviation * scale) : "—", numeric: true)
                + cell(summary.scores.map { String(format: format, $0 * scale) }.joined(separator: ", "))
                + cell(String(format: "%.3f", summary.millisecondsPerStep), numeric: true)
                + cell(String(format: "%.0f", summary.stateBytesPerParameter), numeric: true) + "</tr>\n"
        }
        let seeds = entries.map(\.results.count).max() ?? 0
        var findings = ""
        if seeds < 2 {
            findings = "<li>One seed: no spread measured, so no difference can be called real.</li>"
        } else if differences.isEmpty {
            findings = "<li>No two optimizers differ by more than twice the standard error of their difference.</li>"
        } else {
            for difference in differences {
                findings += "<li>" + SVGChart.escape(String(format: "%@ beats %@ by %.4g (threshold %.4g)", difference.better, difference.worse,
                                                            difference.difference * scale, difference.threshold * scale)) + "</li>"
            }
        }
        if let lionAdvice { findings += "<li>" + SVGChart.escape(lionAdvice) + "</li>" }
        let first = entries.compactMap { entry in entry.results.first.map { (name: entry.name, result: $0) } }
        var charts = [RunFolder.lossChart(first), RunFolder.lossChart(first, againstTime: true)]
        charts += scoreIsLoss ? [RunFolder.heldOutLossChart(first), RunFolder.heldOutLossChart(first, againstTime: true)]
                              : [RunFolder.accuracyChart(first), RunFolder.accuracyChart(first, againstTime: true)]
        let formatter = ISO8601DateFormatter()
        return CompareReport.page(title: title, description: description, body: """
        <table>
        <tr><th>optimizer</th><th>lr</th><th>mean \(scoreName)</th><th>standard deviation</th><th>per seed</th><th>ms per step</th><th>state bytes / parameter</th></tr>
        \(rows)</table>
        <h2>What differs beyond the seed-to-seed spread</h2>
        <ul>\(findings)</ul>
        <h2>Curves of the first seed</h2>
        <div class="charts">
        \(charts.map { "<figure>\($0.render())</figure>" }.joined(separator: "\n"))
        </div>
        <p class="note">Generated by optim compare on \(formatter.string(from: generated)). Differences: means further apart than 2·sqrt(s₁²/n₁ + s₂²/n₂). Time is training time (evaluation excluded).</p>
        """)
    }
}
