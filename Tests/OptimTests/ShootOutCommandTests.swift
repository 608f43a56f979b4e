import Foundation
import Testing

/// `optim sweep` and `optim compare --seeds` as a user runs them: a learning-rate grid whose best
/// point compare then trains at, over seeds, with statistics that follow from the scores.
@Suite struct ShootOutCommandTests {
    static let tiny = ["--task", "austen", "--layers", "1", "--heads", "2", "--embedding", "16", "--context", "16", "--batch-size", "4",
                       "--iters", "6", "--eval-every", "3", "--eval-batches", "2", "--threads", "2"]

    func json(_ url: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    @Test func sweepPicksTheBestPointAndCompareTrainsAtIt() throws {
        let root = try TrainCommandTests.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let sweepFolder = root.appendingPathComponent("sweep")
        let sweep = try TrainCommandTests.optim(["sweep", "--optimizers", "adamw,lion", "--lrs", "1e-4,3e-3", "--out", sweepFolder.path] + Self.tiny)
        #expect(sweep.status == 0, "\(sweep.error)")
        let document = try json(sweepFolder.appendingPathComponent("sweep.json"))
        #expect(document["task"] as? String == "austen")
        let optimizers = try #require(document["optimizers"] as? [String: [String: Any]])
        var best: [String: Double] = [:]
        for name in ["adamw", "lion"] {
            let entry = try #require(optimizers[name])
            let points = try #require(entry["points"] as? [[String: Any]])
            #expect(points.count == 2)
            // The best point is the one with the lowest mean validation loss, as the runs' own summaries say.
            var losses: [(lr: Double, loss: Double)] = []
            for point in points {
                let lr = try #require(point["lr"] as? Double)
                let run = sweepFolder.appendingPathComponent(name).appendingPathComponent(String(format: "lr-%g", lr)).appendingPathComponent("seed-0")
                let summary = try json(run.appendingPathComponent("summary.json"))
                let loss = try #require(summary["val_loss"] as? Double)
                #expect((point["scores"] as? [Double]) == [loss])
                losses.append((lr, loss))
            }
            best[name] = losses.min { $0.loss < $1.loss }!.lr
            #expect(entry["best_lr"] as? Double == best[name])
        }

        let compareFolder = root.appendingPathComponent("compare")
        let compare = try TrainCommandTests.optim(["compare", "--optimizers", "adamw,lion,sgd", "--seeds", "3",
                                                   "--lrs-from", sweepFolder.appendingPathComponent("sweep.json").path,
                                                   "--out", compareFolder.path] + Self.tiny)
        #expect(compare.status == 0, "\(compare.error)")
        #expect(FileManager.default.fileExists(atPath: compareFolder.appendingPathComponent("report.html").path))
        let shootOut = try json(compareFolder.appendingPathComponent("shootout.json"))
        #expect(shootOut["seeds"] as? Int == 3)
        let rows = try #require(shootOut["optimizers"] as? [[String: Any]])
        #expect(Set(rows.compactMap { $0["optimizer"] as? String }) == ["adamw", "lion", "sgd"])
        var statistics: [String: (mean: Double, deviation: Double)] = [:]
        for row in rows {
            let name = try #require(row["optimizer"] as? String)
            let scores = try #require(row["scores"] as? [Double])
            #expect(scores.count == 3)
            // Each score is that seed's run's validation loss, and every run of a seed started from
            // the same weights: the runs' summaries hold the seed.
            for (index, score) in scores.enumerated() {
                let summary = try json(compareFolder.appendingPathComponent(name).appendingPathComponent("seed-\(index)").appendingPathComponent("summary.json"))
                #expect(summary["val_loss"] as? Double == score)
                let hyperparameters = try #require(summary["hyperparameters"] as? [String: Any])
                if let chosen = best[name] { #expect(hyperparameters["lr"] as? Double == chosen, "\(name) trains at the sweep's learning rate") }
            }
            let mean = scores.reduce(0, +) / 3
            let deviation = (scores.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 2).squareRoot()
            #expect(abs((row["mean"] as? Double ?? .nan) - mean) <= 1e-12)
            #expect(abs((row["standard_deviation"] as? Double ?? .nan) - deviation) <= 1e-12)
            statistics[name] = (mean, deviation)
        }
        // Sorted best (lowest loss) first, and exactly the pairs further apart than 2·sqrt(s₁²/3 + s₂²/3) listed.
        let means = rows.compactMap { $0["mean"] as? Double }
        #expect(means == means.sorted())
        let listed = Set((shootOut["differences_beyond_spread"] as? [[String: Any]] ?? []).compactMap { pair in
            (pair["better"] as? String).flatMap { better in (pair["worse"] as? String).map { better + ">" + $0 } }
        })
        var expected = Set<String>()
        for (a, sa) in statistics {
            for (b, sb) in statistics where sa.mean < sb.mean {
                let threshold = 2 * (sa.deviation * sa.deviation / 3 + sb.deviation * sb.deviation / 3).squareRoot()
                if sb.mean - sa.mean > threshold { expected.insert(a + ">" + b) }
            }
        }
        #expect(listed == expected)
        #expect((shootOut["lion_advice"] as? String)?.contains("Lion paper") == true)
    }

    @Test func badShootOutInputGetsOneLineErrors() throws {
        let root = try TrainCommandTests.folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let notASweep = root.appendingPathComponent("not-a-sweep.json")
        try Data("{\"hello\": 1}".utf8).write(to: notASweep)
        let digitsSweep = root.appendingPathComponent("digits-sweep.json")
        try Data(#"{"format": "optim-sweep/1", "task": "digits", "score": "test accuracy", "optimizers": {"adamw": {"best_lr": 0.001, "points": []}}}"#.utf8)
            .write(to: digitsSweep)
        let never = root.appendingPathComponent("never").path
        for (arguments, message) in [
            (["compare", "--seeds", "0"] + Self.tiny, "--seeds must be between 1"),
            (["compare", "--lrs-from", notASweep.path] + Self.tiny, "is not a sweep.json"),
            (["compare", "--lrs-from", digitsSweep.path] + Self.tiny, "holds a sweep of task digits"),
            (["compare", "--optimizers", "adamw,adamw"] + Self.tiny, "lists adamw twice"),
            (["compare", "--task", "poetry"], "unknown --task 'poetry'"),
            (["sweep", "--optimizers", "adamw", "--lrs", "1e-3,-1"] + Self.tiny, "--lrs must be positive numbers"),
            (["sweep", "--optimizers", "adamw", "--lrs", "1e-3,1e-3"] + Self.tiny, "twice"),
            (["sweep", "--optimizers", "adamx"] + Self.tiny, "unknown optimizer 'adamx'"),
        ] {
            let outcome = try TrainCommandTests.optim(arguments + ["--out", never])
            #expect(outcome.status != 0, "\(arguments)")
            #expect(outcome.error.contains(message), "\(arguments): \(outcome.error)")
            #expect(outcome.error.split(separator: "\n").count == 1, "\(arguments): \(outcome.error)")
        }
        #expect(!FileManager.default.fileExists(atPath: never), "nothing written on bad input")
    }
}
