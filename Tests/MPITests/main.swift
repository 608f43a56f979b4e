// The MPI test runner: the distributed-training equivalence checks over real MPI processes.
//
//   mpirun -np 3 optim-mpi-tests          every check over MPI_COMM_WORLD (needs --traits MPI)
//   mpirun -np 2 optim-mpi-tests --abort-check
//                                          the last rank fails; the job must end (MPI_Abort), not hang
//   optim-mpi-tests --local 3              the same checks over in-process ranks (any build)
//   mpirun -np 2 optim-mpi-tests --allreduce-bench
//                                          times allreduce (sum of float32) from 4 B to 64 MB: the
//                                          latency and bandwidth that DISTRIBUTED.md's model uses
//
// Each rank computes the single-process reference itself (it knows every rank's synthetic
// gradients). Gradients are small multiples of 2⁻¹⁰, so their sum over ranks is exact whatever
// order MPI adds them in, and parameters and state can be compared bit for bit; metrics, summed
// in Double across ranks, within 1e-6. Rank 0 prints; any rank's failure is printed to standard
// error and makes every rank exit with status 1.
import Foundation
import Optim
import OptimDistributed
import OptimMPI
#if MPI
import CMPI
#endif

struct RunnerError: Error, CustomStringConvertible {
    var description: String
}

/// Failures of this rank, counted per check and summed over ranks when the check ends.
final class Checks {
    let communicator: any Communicator
    private(set) var failures = 0
    private var checkFailures = 0

    init(_ communicator: any Communicator) { self.communicator = communicator }

    func say(_ text: String) { if communicator.isRoot { print(text) } }

    func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
        guard !condition else { return }
        checkFailures += 1
        if checkFailures <= 5 { FileHandle.standardError.write(Data("rank \(communicator.rank): FAILED: \(message())\n".utf8)) }
    }

    /// Runs one check; an unexpected error ends the job (the ranks could not stay in step).
    func check(_ name: String, _ body: () throws -> Void) throws {
        checkFailures = 0
        let started = Date()
        try communicator.abortingOnError { try body() }
        var total = [Double(checkFailures)]
        try total.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try communicator.allreduceSum(buffer) }
        failures += Int(total[0])
        say("\(total[0] == 0 ? "PASS" : "FAIL") \(name) (\(String(format: "%.2f", Date().timeIntervalSince(started))) s\(total[0] == 0 ? "" : ", \(Int(total[0])) failure(s) over all ranks"))")
    }
}

/// Small deterministic numbers (a 64-bit LCG), identical on every rank and run.
struct Numbers {
    var state: UInt64
    mutating func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(state >> 40) % 2001 - 1000) / 1000
    }
}

struct Scenario {
    var configuration: OptimizerConfiguration
    var shapes: [(name: String, shape: [Int])] = [("w1", [7, 5]), ("b1", [7]), ("w2", [3, 7]), ("b2", [3]), ("scale", [])]
    var steps = 20
    var bucketBytes = 40
    var maxNorm: Double? = 0.5
    var metricsSteps: Set<Int> = [0, 9, 19]

    init(_ name: String) {
        configuration = OptimizerConfiguration(name: name, hyperparameters: name == "lookahead" ? ["k": .number(3)] : ["lr": .number(0.01)],
                                               base: name == "lookahead" ? OptimizerConfiguration(name: "adamw") : nil)
    }

    func makeParameters(rank: Int) throws -> [Parameter] {
        var numbers = Numbers(state: 99 + UInt64(rank))
        return try shapes.map { entry in try Parameter(name: entry.name, shape: entry.shape, values: (0..<entry.shape.reduce(1, *)).map { _ in numbers.next() }) }
    }

    func groups(_ parameters: [Parameter]) -> [ParameterGroupConfiguration] {
        (try? ParameterGrouping.decaysWeights(configuration)) != true
            ? [ParameterGroupConfiguration(parameters)]
            : ParameterGrouping.weightDecayGroups(parameters, weightDecay: configuration.name.hasPrefix("decoupled") ? 5e-4 : 0.05)
    }

    /// A multiple of 2⁻¹⁰ below 1 in magnitude: sums over ranks are exact in any order.
    func gradient(step: Int, rank: Int, index: Int, count: Int) -> [Float]? {
        if index == 3, rank == 1, step % 3 == 1 { return nil }
        if index == 4, step == 5 { return nil }
        return (0..<count).map { Float((step * 131 + rank * 17 + index * 7 + $0 * 3) % 2001 - 1000) / 1024 }
    }

    func schedule() -> any LearningRateSchedule { SequentialSchedule.warmupCosine(warmupSteps: 3, totalSteps: steps, floor: 0.1) }
}

struct Outcome {
    var values: [[Float]] = []
    var snapshot: OptimizerSnapshot?
    var metrics: [Int: OptimizerMetrics] = [:]
    var norms: [Double] = []
}

func reference(_ scenario: Scenario, ranks: Int) throws -> Outcome {
    let parameters = try scenario.makeParameters(rank: 0)
    let optimizer = try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(parameters))
    let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
    var outcome = Outcome()
    for step in 0..<scenario.steps {
        for (index, parameter) in parameters.enumerated() {
            let gradients = (0..<ranks).compactMap { scenario.gradient(step: step, rank: $0, index: index, count: parameter.count) }
            guard !gradients.isEmpty else {
                parameter.zeroGradient()
                continue
            }
            var sum = [Float](repeating: 0, count: parameter.count)
            for gradient in gradients { for element in sum.indices { sum[element] += gradient[element] } }
            try parameter.setGradient(sum.map { $0 / Float(ranks) })
        }
        if let maxNorm = scenario.maxNorm { outcome.norms.append(try optimizer.clipGradientNorm(maxNorm: maxNorm)) }
        if let metrics = try optimizer.step(collectingMetrics: scenario.metricsSteps.contains(step)) { outcome.metrics[step] = metrics }
        try scheduler.step()
    }
    outcome.values = parameters.map(\.valueArray)
    outcome.snapshot = optimizer.snapshot()
    return outcome
}

func distributed(_ scenario: Scenario, on communicator: any Communicator, sharded: Bool) throws -> Outcome {
    let parameters = try scenario.makeParameters(rank: communicator.rank)
    let dataParallel = try DataParallel(parameters, communicator: communicator, bucketBytes: scenario.bucketBytes)
    let optimizer: any Optimizer = sharded
        ? try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator, bucketBytes: scenario.bucketBytes)
        : try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(parameters))
    let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
    var outcome = Outcome()
    for step in 0..<scenario.steps {
        for (index, parameter) in parameters.enumerated() {
            if let gradient = scenario.gradient(step: step, rank: communicator.rank, index: index, count: parameter.count) {
                try parameter.setGradient(gradient)
            } else {
                parameter.zeroGradient()
            }
        }
        try dataParallel.averageGradients()
        if let maxNorm = scenario.maxNorm { outcome.norms.append(try optimizer.clipGradientNorm(maxNorm: maxNorm)) }
        if let metrics = try optimizer.step(collectingMetrics: scenario.metricsSteps.contains(step)) { outcome.metrics[step] = metrics }
        try scheduler.step()
    }
    outcome.values = parameters.map(\.valueArray)
    outcome.snapshot = try (optimizer as? ShardedOptimizer)?.gatherSnapshot() ?? optimizer.snapshot()
    return outcome
}

/// The run with gradients and state sharded (ZeRO-2): each bucket reduce-scattered as a
/// backward pass would report it, last parameter first.
func zeroTwo(_ scenario: Scenario, on communicator: any Communicator) throws -> Outcome {
    let parameters = try scenario.makeParameters(rank: communicator.rank)
    _ = try DataParallel(parameters, communicator: communicator, bucketBytes: scenario.bucketBytes)
    let optimizer = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator,
                                         bucketBytes: scenario.bucketBytes, stage: .two)
    let scheduler = try LearningRateScheduler(optimizer, schedule: scenario.schedule())
    var outcome = Outcome()
    for step in 0..<scenario.steps {
        try optimizer.beginGradientReduction(averaging: true)
        for (index, parameter) in parameters.enumerated().reversed() {
            if let gradient = scenario.gradient(step: step, rank: communicator.rank, index: index, count: parameter.count) {
                try parameter.setGradient(gradient)
            } else {
                parameter.zeroGradient()
            }
            optimizer.gradientsReady([parameters[index]])
        }
        try optimizer.finishGradientReduction()
        if let maxNorm = scenario.maxNorm { outcome.norms.append(try optimizer.clipGradientNorm(maxNorm: maxNorm)) }
        if let metrics = try optimizer.step(collectingMetrics: scenario.metricsSteps.contains(step)) { outcome.metrics[step] = metrics }
        try scheduler.step()
    }
    outcome.values = parameters.map(\.valueArray)
    outcome.snapshot = try optimizer.gatherSnapshot()
    return outcome
}

func bits(_ values: [[Float]]) -> [[UInt32]] { values.map { $0.map(\.bitPattern) } }

func compare(_ got: Outcome, _ want: Outcome, _ what: String, _ checks: Checks) {
    checks.expect(bits(got.values) == bits(want.values), "\(what): parameters differ from the single process")
    checks.expect(got.snapshot == want.snapshot, "\(what): optimizer state differs from the single process")
    checks.expect(got.norms.map(\.bitPattern) == want.norms.map(\.bitPattern), "\(what): clipping norms differ: \(got.norms.prefix(3)) vs \(want.norms.prefix(3))")
    checks.expect(got.metrics.keys.sorted() == want.metrics.keys.sorted(), "\(what): metrics at other steps")
    for (step, metrics) in want.metrics {
        let expected = metrics.values, actual = got.metrics[step]?.values ?? [:]
        checks.expect(actual.keys.sorted() == expected.keys.sorted(), "\(what) step \(step): metric names differ")
        for (key, value) in expected {
            let other = actual[key] ?? .nan
            checks.expect(abs(other - value) <= 1e-9 + 1e-6 * abs(value), "\(what) step \(step) \(key): \(other) vs \(value)")
        }
    }
}

func expectMismatch(_ checks: Checks, _ what: String, _ body: () throws -> Void, mentioning: String) {
    do {
        try body()
        checks.expect(false, "\(what): no error")
    } catch let DistributedError.parameterMismatch(message) {
        checks.expect(message.contains(mentioning), "\(what): message '\(message)' does not mention '\(mentioning)'")
        if checks.communicator.isRoot { print("    rank 0 says: \(DistributedError.parameterMismatch(message))") }
    } catch {
        checks.expect(false, "\(what): expected a parameter mismatch, got \(error)")
    }
}

func runAll(on communicator: any Communicator) throws -> Int {
    let checks = Checks(communicator)
    let ranks = communicator.size
    checks.say("optim-mpi-tests: \(ranks) rank(s)")

    // The scenarios are vectors stepped without a closure: matrix-only (Muon) and closure-driven
    // (L-BFGS) optimizers have their own suites; ZeRO-1 refuses whole-tensor rules (Adafactor).
    let vectorOptimizers = OptimizerRegistry.all.filter { !$0.requiresMatrices && !$0.requiresClosure }
    try checks.check("data parallel = single process, every optimizer of the registry over vectors, 20 steps") {
        for name in vectorOptimizers.map(\.name) {
            let scenario = Scenario(name)
            compare(try distributed(scenario, on: communicator, sharded: false), try reference(scenario, ranks: ranks), name, checks)
        }
    }
    try checks.check("sharded state (ZeRO-1) = single process, every elementwise optimizer of the registry, 20 steps") {
        for name in vectorOptimizers.filter({ !$0.updatesWholeTensors }).map(\.name) {
            let scenario = Scenario(name)
            compare(try distributed(scenario, on: communicator, sharded: true), try reference(scenario, ranks: ranks), "\(name) sharded", checks)
        }
    }
    try checks.check("sharded = unsharded data parallel (adamw, default bucket size)") {
        var scenario = Scenario("adamw")
        scenario.bucketBytes = DataParallel.defaultBucketBytes
        compare(try distributed(scenario, on: communicator, sharded: true), try distributed(scenario, on: communicator, sharded: false), "adamw", checks)
    }
    try checks.check("overlapped reduction (MPI_Iallreduce per bucket, started as layers are reported) = the blocking one") {
        // 1.5M floats in 6 tensors, buckets of 1 MB (a tensor each): several nonblocking allreduces in flight
        // at once, progressed by the polling thread while this rank "computes".
        var numbers = Numbers(state: 11 + UInt64(communicator.rank))
        let parameters = try (0..<6).map { try Parameter(name: "layer\($0)", shape: [250_000]) }
        let dataParallel = try DataParallel(parameters, communicator: communicator, bucketBytes: 1_000_000)
        for round in 0..<3 {
            let local = parameters.map { _ in (0..<250_000).map { _ in numbers.next() } }
            let scale = Float(communicator.rank + 1) / Float(ranks + round)
            for (parameter, values) in zip(parameters, local) { try parameter.setGradient(values.map { $0 * scale }) }
            try dataParallel.sumGradients()
            let blocking = parameters.map { $0.gradientArray! }
            for (parameter, values) in zip(parameters, local) { try parameter.setGradient(values) }
            dataParallel.beginGradientReduction(scale: scale)
            for layer in stride(from: 5, through: 0, by: -1) {
                dataParallel.gradientsReady(layer..<(layer + 1))
                usleep(2000)  // backward computing the layer before
            }
            let timing = try dataParallel.finishGradientReduction()
            let overlapped = parameters.map { $0.gradientArray! }
            checks.expect(timing.buckets == 6 && timing.bucketsStartedDuringBackward == 6, "buckets \(timing)")
            // Two ranks add a + b either way; more may sum in another order (float rounding).
            var worst: Float = 0
            for (a, b) in zip(overlapped, blocking) { for (x, y) in zip(a, b) { worst = max(worst, abs(x - y) / (1e-6 + abs(y))) } }
            checks.expect(ranks <= 2 ? bits(overlapped) == bits(blocking) : worst < 1e-5, "round \(round): overlapped differs from blocking (worst relative \(worst))")
            if round == 2 {
                checks.say(String(format: "    6 buckets of 1 MB: communication span %.1f ms, %.1f ms waited for after the last layer (%.0f%% hidden)",
                                  timing.communicationSeconds * 1000, timing.exposedSeconds * 1000, timing.hiddenFraction * 100))
            }
        }
    }
    try checks.check("reduced metrics = single-process metrics at every step (adamw, sgd with momentum, lion)") {
        for name in ["adamw", "sgd", "lion"] {
            var scenario = Scenario(name)
            if name == "sgd" { scenario.configuration.hyperparameters["momentum"] = .number(0.9) }
            scenario.metricsSteps = Set(0..<scenario.steps)
            compare(try distributed(scenario, on: communicator, sharded: true), try reference(scenario, ranks: ranks), "\(name) metrics", checks)
        }
    }
    try checks.check("uneven partition of 67 elements over \(ranks) ranks") {
        let scenario = Scenario("adam")
        let parameters = try scenario.makeParameters(rank: communicator.rank)
        let optimizer = try ShardedOptimizer(scenario.configuration, parameters: parameters, communicator: communicator)
        let sizes = optimizer.partition.map(\.count)
        checks.expect(sizes.reduce(0, +) == 67 && sizes.max()! - sizes.min()! <= 1, "partition \(optimizer.partition)")
        checks.expect(zip(optimizer.partition, optimizer.partition.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "contiguous")
        let held = try parameters.map { try optimizer.shardRange(of: $0).count }
        checks.expect(held.reduce(0, +) == sizes[communicator.rank], "rank \(communicator.rank) holds \(held)")
        checks.say("    partition \(optimizer.partition.map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ")); rank 0 holds \(held) of \(parameters.map(\.count))")
    }
    if ranks > 1 {
        try checks.check("different parameters on one rank: a clear error on every rank") {
            let odd = ranks - 1
            expectMismatch(checks, "shapes", {
                let shapes: [(String, [Int])] = [("w1", [7, 5]), ("b1", [7]), ("w2", [3, 7]), ("b2", [communicator.rank == odd ? 4 : 3])]
                _ = try DataParallel(try shapes.map { try Parameter(name: $0.0, shape: $0.1) }, communicator: communicator)
            }, mentioning: "rank \(odd) differs from rank 0")
            expectMismatch(checks, "optimizer settings", {
                let lr = communicator.rank == odd ? 0.002 : 0.001
                _ = try ShardedOptimizer(OptimizerConfiguration(name: "adamw", hyperparameters: ["lr": .number(lr)]),
                                         parameters: try Scenario("adamw").makeParameters(rank: 0), communicator: communicator)
            }, mentioning: "rank \(odd) differs from rank 0")
        }
    }
    try checks.check("checkpoints: sharded → file → unsharded, and back into a sharded run") {
        var scenario = Scenario("lookahead")
        scenario.steps = 8
        scenario.maxNorm = nil
        scenario.metricsSteps = []
        var folder = ""
        if communicator.isRoot {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("optim-mpi-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            folder = url.path
        }
        folder = try communicator.broadcast(folder, from: 0)  // one machine: the same temporary folder
        let file = URL(fileURLWithPath: folder).appendingPathComponent("sharded.safetensors")
        let parameters = try scenario.makeParameters(rank: communicator.rank)
        let dataParallel = try DataParallel(parameters, communicator: communicator)
        let sharded = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator)
        for step in 0..<scenario.steps {
            for (index, parameter) in parameters.enumerated() {
                try parameter.setGradient(scenario.gradient(step: step, rank: communicator.rank, index: index, count: parameter.count) ?? .init(repeating: 0, count: parameter.count))
            }
            try dataParallel.averageGradients()
            try sharded.step()
        }
        try sharded.saveCheckpoint(to: file)
        let gathered = try sharded.gatherSnapshot()
        try communicator.barrier()  // the file is written
        let plainParameters = try scenario.makeParameters(rank: 7)
        let plain = try OptimizerRegistry.makeOptimizer(scenario.configuration, groups: scenario.groups(plainParameters))
        try Checkpoint.load(from: file, into: plain)
        checks.expect(plain.snapshot() == gathered, "the unsharded optimizer loads the sharded state")
        checks.expect(bits(plainParameters.map(\.valueArray)) == bits(parameters.map(\.valueArray)), "the unsharded model loads the sharded run's parameters")
        let againParameters = try scenario.makeParameters(rank: 8)
        let again = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(againParameters), communicator: communicator)
        try Checkpoint.load(from: file, into: again)
        checks.expect(try again.gatherSnapshot() == gathered, "a sharded optimizer loads it back")
        try communicator.barrier()
        if communicator.isRoot { try? FileManager.default.removeItem(atPath: folder) }
    }
    try checks.check("optimizer state memory per rank (AdamW, 1,000,000 parameters)") {
        let count = 1_000_000
        var numbers = Numbers(state: 5)
        let shapes = [("embedding", [1000, 600]), ("hidden", [600, 600]), ("bias", [40_000])]
        let parameters = try shapes.map { try Parameter(name: $0.0, shape: $0.1, values: (0..<$0.1.reduce(1, *)).map { _ in numbers.next() }) }
        let dataParallel = try DataParallel(parameters, communicator: communicator)
        let sharded = try ShardedOptimizer(OptimizerConfiguration(name: "adamw"), parameters: parameters, communicator: communicator)
        for parameter in parameters { try parameter.setGradient((0..<parameter.count).map { Float($0 % 7) / 8 }) }
        try dataParallel.averageGradients()
        var before = FloatStorage.liveBytes
        try sharded.step()
        let shardedMeasured = FloatStorage.liveBytes - before
        var timings: [Double] = []
        for _ in 0..<5 {
            let started = Date()
            try dataParallel.averageGradients()
            try sharded.step()
            timings.append(Date().timeIntervalSince(started))
        }
        let plain = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw"), parameters: parameters)
        before = FloatStorage.liveBytes
        try plain.step()
        let plainMeasured = FloatStorage.liveBytes - before
        let perRank = try communicator.allgather([Int64(shardedMeasured), Int64(sharded.optimizerStateBytes ?? -1)])
        checks.expect(sharded.optimizerStateBytes! == 8 * sharded.shard.count, "two moments of 4 bytes for each of \(sharded.shard.count) elements")
        // The allocation counter is per process: with in-process ranks it sees all of them at once.
        let onePerProcess = !(communicator is LocalCommunicator)
        checks.expect(!onePerProcess || abs(Double(shardedMeasured) - Double(plainMeasured) / Double(ranks)) <= 0.01 * Double(plainMeasured) / Double(ranks) + 4096,
                      "measured \(shardedMeasured) bytes sharded, \(plainMeasured) unsharded")
        if !onePerProcess { checks.say("    (in-process ranks share one allocation counter: the measured figures below mix ranks)") }
        checks.say("    unsharded: \(plainMeasured) bytes of AdamW state allocated (\(count) parameters)")
        for (rank, values) in perRank.enumerated() {
            checks.say("    rank \(rank): \(values[0]) bytes allocated at the first sharded step (\(values[1]) in state buffers), \(String(format: "%.3f", Double(values[0]) / Double(plainMeasured))) of unsharded")
        }
        checks.say("    a data-parallel step (average + sharded AdamW step + allgather), 1M parameters: median \(String(format: "%.1f", timings.sorted()[2] * 1000)) ms")
    }
    try checks.check("reduce-scatter = this rank's part of an allreduce (counts with zeros, blocking and nonblocking)") {
        var numbers = Numbers(state: 3 + UInt64(communicator.rank))
        for pattern in 0..<4 {
            let counts = (0..<ranks).map { rank in pattern == 0 ? 5 : (rank + pattern) % 3 == 0 ? 0 : 7 * (rank + 1) }
            let total = counts.reduce(0, +), offset = counts[0..<communicator.rank].reduce(0, +)
            var send = (0..<total).map { _ in numbers.next() }
            let want = send
            var all = want
            try all.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try communicator.allreduceSum(buffer) }
            for nonblocking in [false, true] {
                var receive = [Float](repeating: -1, count: counts[communicator.rank])
                try send.withUnsafeMutableBufferPointer { send throws(DistributedError) in
                    try counts.withUnsafeBufferPointer { counts throws(DistributedError) in
                        try receive.withUnsafeMutableBufferPointer { receive throws(DistributedError) in
                            if nonblocking {
                                try communicator.startReduceScatterSum(UnsafeBufferPointer(send), counts: counts, into: receive).wait()
                            } else {
                                try communicator.reduceScatterSum(UnsafeBufferPointer(send), counts: counts, into: receive)
                            }
                        }
                    }
                }
                checks.expect(bits([receive]) == bits([Array(all[offset..<(offset + counts[communicator.rank])])]),
                              "counts \(counts), nonblocking \(nonblocking): \(receive.prefix(4)) vs \(all[offset..<(offset + counts[communicator.rank])].prefix(4))")
            }
        }
    }
    try checks.check("ZeRO-2 (MPI_Ireduce_scatter per bucket as layers are reported) = single process (adamw, sgd, lion; no clipping)") {
        for name in ["adamw", "sgd", "lion"] {
            var scenario = Scenario(name)
            scenario.maxNorm = nil
            let got = try zeroTwo(scenario, on: communicator), want = try reference(scenario, ranks: ranks)
            // Two ranks add a + b whatever the algorithm; three may add in another order.
            if ranks <= 2 {
                compare(got, want, "\(name) ZeRO-2", checks)
            } else {
                var worst: Float = 0
                for (a, b) in zip(got.values, want.values) { for (x, y) in zip(a, b) { worst = max(worst, abs(x - y) / (1e-6 + abs(y))) } }
                checks.expect(worst < 1e-4, "\(name) ZeRO-2: parameters differ from the single process (worst relative \(worst))")
            }
        }
    }
    try checks.check("ZeRO-2: gradient + optimizer state memory per rank (AdamW, 40 layers of 250,000 parameters, peak over a step)") {
        // Each "layer"'s gradient appears as backward reaches it and is reduced at once. The
        // peak of the library's allocations, from just after the parameters were made, is what a
        // rank holds in gradients, optimizer state and buffers in flight.
        let layers = 40, width = 250_000
        let values = (0..<layers).map { layer in (0..<width).map { Float(($0 + layer) % 7) / 8 } }
        var single = 0
        if communicator.isRoot {
            let plainParameters = try (0..<layers).map { try Parameter(name: "layer\($0)", shape: [width], repeating: 0.5) }
            let base = FloatStorage.liveBytes
            FloatStorage.resetPeakBytes()
            let plain = try OptimizerRegistry.makeOptimizer(OptimizerConfiguration(name: "adamw"), parameters: plainParameters)
            for _ in 0..<2 {
                for layer in plainParameters.indices.reversed() { try plainParameters[layer].setGradient(values[layer]) }
                try plain.step()
            }
            single = FloatStorage.peakBytes - base
            for parameter in plainParameters { parameter.releaseGradientStorage() }
        }
        let parameters = try (0..<layers).map { try Parameter(name: "layer\($0)", shape: [width], repeating: 0.5) }
        _ = try DataParallel(parameters, communicator: communicator, bucketBytes: 1 << 20)  // check and broadcast
        let base = FloatStorage.liveBytes
        FloatStorage.resetPeakBytes()
        let sharded = try ShardedOptimizer(OptimizerConfiguration(name: "adamw"), parameters: parameters, communicator: communicator,
                                           bucketBytes: width * 4, stage: .two)
        for _ in 0..<2 {
            try sharded.beginGradientReduction(averaging: true)
            for layer in stride(from: layers - 1, through: 0, by: -1) {
                try parameters[layer].setGradient(values[layer])
                sharded.gradientsReady([parameters[layer]])
            }
            try sharded.finishGradientReduction()
            try sharded.step()
        }
        let peak = FloatStorage.peakBytes - base
        let all = try communicator.allgather([Int64(peak), Int64(single)])
        let reference = Double(all[0][1])
        let onePerProcess = !(communicator is LocalCommunicator)
        if !onePerProcess { checks.say("    (in-process ranks share one allocation counter: the figures below mix ranks)") }
        for (rank, figures) in all.enumerated() {
            let share = Double(figures[0]) / reference
            checks.say(String(format: "    rank %d: peak %.1f MB of gradients, state and buffers over a step; one process %.1f MB; %.3f of it (1/%d = %.3f)",
                              rank, Double(figures[0]) / 1e6, reference / 1e6, share, ranks, 1 / Double(ranks)))
            if onePerProcess { checks.expect(share <= 1 / Double(ranks) + 0.05, "rank \(rank): \(share) of one process's memory, more than 1/\(ranks) + 5 %") }
        }
    }
    #if MPI
    if !(communicator is LocalCommunicator) {
        try checks.check("an MPI error is thrown with MPI's message") {
            // A negative count: refused by MPI's argument check, locally, on every rank.
            let code = MPI_Bcast(nil, -1, cmpi_float(), 0, cmpi_comm_world())
            checks.expect(code != cmpi_success(), "MPI_Bcast with count -1 succeeded")
            let error = MPICommunicator.error(code: code, operation: "MPI_Bcast")
            checks.expect("\(error)".lowercased().contains("count"), "message: \(error)")
            checks.say("    \(error)")
        }
    }
    #endif
    // Each check added its failures over all ranks: the count is the same on every rank.
    checks.say(checks.failures == 0 ? "all checks passed on \(ranks) rank(s)" : "\(checks.failures) failure(s) on \(ranks) rank(s)")
    return checks.failures
}

/// The last rank fails while the others wait in a barrier: MPI_Abort must end them all.
func abortCheck(on communicator: any Communicator) throws -> Never {
    let parameters = try Scenario("sgd").makeParameters(rank: communicator.rank)
    _ = try DataParallel(parameters, communicator: communicator)
    try communicator.abortingOnError {
        if communicator.rank == communicator.size - 1 {
            throw RunnerError(description: "deliberate failure on rank \(communicator.rank) for the abort check")
        }
        try communicator.barrier()
    }
    print("rank \(communicator.rank): still running after the abort")
    exit(3)
}

/// `steps` steps of gradient averaging and a sharded step (AdamW, or Lookahead when `lookahead`)
/// over 2 in-process ranks, with nothing else allocating: run under a heap profiler with two
/// step counts, the difference in allocations is the per-step allocation.
func allocationCheck(steps: Int, lookahead: Bool) throws {
    let group = try LocalCommunicatorGroup(size: 2)
    let results = group.run { communicator in
        let scenario = Scenario(lookahead ? "lookahead" : "adamw")
        let parameters = try scenario.makeParameters(rank: communicator.rank)
        let gradients = parameters.enumerated().map { index, parameter in scenario.gradient(step: 0, rank: communicator.rank, index: index, count: parameter.count)! }
        let dataParallel = try DataParallel(parameters, communicator: communicator, bucketBytes: 40)
        let optimizer = try ShardedOptimizer(scenario.configuration, groups: scenario.groups(parameters), communicator: communicator, bucketBytes: 40)
        for _ in 0..<steps {
            var index = 0
            while index < parameters.count {  // a plain loop: an iterator allocates in debug builds
                let storage = parameters[index].gradientStorage(zeroed: false)
                gradients[index].withUnsafeBufferPointer { storage.baseAddress!.update(from: $0.baseAddress!, count: $0.count) }
                index += 1
            }
            try dataParallel.averageGradients()
            try optimizer.step()
        }
        return steps
    }
    for result in results { _ = try result.get() }
}

/// Times `allreduceSum` of float32 buffers from 4 bytes to 64 MB (median of repeated runs,
/// each rank starting together after a barrier) and prints, on rank 0, bytes, seconds and the
/// bus bandwidth of a ring allreduce, 2(W−1)/W · bytes / time, as NCCL's tests report it.
func allreduceBenchmark(on communicator: any Communicator) throws {
    if communicator.rank == 0 { print("allreduce over \(communicator.size) ranks: bytes, median seconds, bus bandwidth GB/s") }
    var bytes = 4
    while bytes <= 64 << 20 {
        var buffer = [Float](repeating: 1, count: bytes / 4)
        let repeats = bytes <= 1 << 16 ? 200 : bytes <= 1 << 22 ? 20 : 5
        var times: [Double] = []
        for _ in 0..<repeats {
            try communicator.barrier()
            let start = DispatchTime.now().uptimeNanoseconds
            try buffer.withUnsafeMutableBufferPointer { pointer throws(DistributedError) in try communicator.allreduceSum(pointer) }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        // Every rank's time counts: the slowest rank's median.
        let median = times.sorted()[times.count / 2]
        let all = try communicator.allgather([Int64(median * 1e9)])
        let slowest = Double(all.map { $0[0] }.max()!) / 1e9
        let size = Double(communicator.size)
        if communicator.rank == 0 {
            print(String(format: "%10d  %.6f  %.3f", bytes, slowest, 2 * (size - 1) / size * Double(bytes) / slowest / 1e9))
        }
        bytes *= 4
    }
}

func main() -> Int32 {
    let arguments = Array(CommandLine.arguments.dropFirst())
    do {
        if let flag = arguments.firstIndex(of: "--allocation-check"), flag + 1 < arguments.count, let steps = Int(arguments[flag + 1]) {
            try allocationCheck(steps: steps, lookahead: arguments.contains("--lookahead"))
            return 0
        }
        if let flag = arguments.firstIndex(of: "--local") {
            guard flag + 1 < arguments.count, let ranks = Int(arguments[flag + 1]), ranks >= 1 else {
                print("usage: optim-mpi-tests --local N")
                return 2
            }
            let group = try LocalCommunicatorGroup(size: ranks, timeout: 600)
            let outcomes = group.run { communicator in try runAll(on: communicator) }
            for outcome in outcomes { if case let .failure(error) = outcome { print("error: \(error)") } }
            return outcomes.allSatisfy { (try? $0.get()) == 0 } ? 0 : 1
        }
        guard MPIRuntime.isAvailable else {
            print("optim-mpi-tests was built without MPI; build with `swift build --traits MPI`, or run `optim-mpi-tests --local N`")
            return 2
        }
        let communicator = try MPIRuntime.world()
        if arguments.contains("--abort-check") { try abortCheck(on: communicator) }
        if arguments.contains("--allreduce-bench") {
            try allreduceBenchmark(on: communicator)
            try MPIRuntime.finalize()
            return 0
        }
        let failures = try runAll(on: communicator)
        try MPIRuntime.finalize()
        return failures == 0 ? 0 : 1
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        return 1
    }
}

exit(main())
