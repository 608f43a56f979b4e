import ArgumentParser
import Foundation
import Optim
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `optim bench`: times optimizer steps of the Swift kernels beside the C reference kernels.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time optimizer steps: the Swift kernels beside C reference kernels (-O3 -march=native -fopenmp), alternating.")

    @Option(help: "Optimizer name (see `optim list`); it runs its registry entry's benchmark configuration (sgd with momentum 0.9, lookahead around adamw, …).")
    var optimizer: String = "adamw"

    @Option(help: "Total number of float32 parameters.")
    var params: Int = 64 << 20

    @Option(help: "Number of tensors the parameters are split into (multi-tensor apply).")
    var tensors: Int = 1

    @Option(help: "Timed steps of each implementation (after 2 warm-up steps).")
    var steps: Int = 20

    @Option(help: "Threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("state-dtype"), help: "State format of the Swift optimizer: float32 (default), bfloat16, int8 (bitsandbytes' blockwise 8-bit state) or int4 (torchao's 4-bit state); `optim list --json` lists each optimizer's. The C reference keeps float32 state.")
    var stateDType: String = StateDType.float32.rawValue

    @Option(name: .customLong("param-dtype"), help: "Parameter precision of the Swift optimizer: float32 (default) or bfloat16 (values rounded after each step as --bf16-rounding says). The C reference updates float32 parameters.")
    var paramDType: String = ParameterDType.float32.rawValue

    @Option(name: .customLong("bf16-rounding"), help: "With --param-dtype bfloat16: stochastic (torchao's, the default), nearest (nearest even), kahan (Kahan-compensated, 2 more bytes a parameter) or master (float32 master weights held in 2 more bytes a parameter).")
    var bf16Rounding: String = "stochastic"

    @Flag(help: "Print one JSON object per implementation and line.")
    var json = false

    @Flag(help: "With --tensors: the tensors borrow consecutive slices of one flat allocation for the parameters and one for the gradients (a framework's flat buffer), instead of each allocating its own.")
    var contiguous = false

    @Flag(help: "Skip the C reference (to measure the Swift side's memory alone).")
    var noReference = false

    @Flag(help: "Also time the Swift step collecting the optimizer metrics, beside the same step without.")
    var metrics = false

    func validate() throws {
        guard OptimizerRegistry.names.contains(optimizer) else {
            throw ValidationError("unknown optimizer '\(optimizer)'; known: \(OptimizerRegistry.names.joined(separator: ", "))")
        }
        guard params > 0 else { throw ValidationError("--params must be at least 1, got \(params)") }
        if let info = try? OptimizerRegistry.info(named: optimizer), info.requiresClosure {
            throw ValidationError("\(optimizer) evaluates the model several times per step; optim bench times single steps of a given gradient")
        }
        guard tensors > 0, tensors <= params else { throw ValidationError("--tensors must be between 1 and --params (\(params)), got \(tensors)") }
        guard steps > 0, steps <= 1_000_000 else { throw ValidationError("--steps must be between 1 and 1000000, got \(steps)") }
        guard threads > 0, threads <= 1024 else { throw ValidationError("--threads must be between 1 and 1024, got \(threads)") }
        guard let dtype = StateDType(rawValue: stateDType) else {
            throw ValidationError("--state-dtype: expected " + StateDType.allCases.map(\.rawValue).joined(separator: " or ") + ", got '\(stateDType)'")
        }
        if let info = try? OptimizerRegistry.info(named: optimizer), !info.stateDTypes.contains(dtype) {
            throw ValidationError("--state-dtype \(dtype): optimizer '\(optimizer)' keeps " + info.stateDTypes.map(\.rawValue).joined(separator: " or ") + " state")
        }
        guard let parameterDType = ParameterDType(rawValue: paramDType) else {
            throw ValidationError("--param-dtype: expected " + ParameterDType.allCases.map(\.rawValue).joined(separator: " or ") + ", got '\(paramDType)'")
        }
        if parameterDType == .bfloat16, let info = try? OptimizerRegistry.info(named: optimizer), !info.updatesBFloat16Parameters {
            throw ValidationError("--param-dtype bfloat16: optimizer '\(optimizer)' updates float32 parameters only; bfloat16 parameters: "
                + OptimizerRegistry.all.filter(\.updatesBFloat16Parameters).map(\.name).joined(separator: ", "))
        }
        guard ["stochastic", "nearest", "kahan", "master"].contains(bf16Rounding) else {
            throw ValidationError("--bf16-rounding: expected stochastic, nearest, kahan or master, got '\(bf16Rounding)'")
        }
        // Parameters, gradients and up to three state buffers (Lookahead: slow weights and two of
        // AdamW's) in the state format (8-bit and 4-bit: a float32 scale per block too), and the C
        // reference's float32 copy of all five: refuse what the memory cannot hold before allocating.
        let stateBytes = Double(dtype.stateBytes(count: 1 << 20)) / Double(1 << 20)
        let bytes = Double(params) * (10 + 3 * stateBytes + (noReference ? 0 : 20)) + Double(tensors) * 1024  // and each tensor's bookkeeping
        let available = Double(ProcessInfo.processInfo.physicalMemory)
        guard bytes < available else {
            throw ValidationError("--params \(params) with --tensors \(tensors) needs about \(formatBytes(bytes)) (parameters, gradients, optimizer state and per-tensor bookkeeping\(noReference ? "" : ", the C reference's copy")); this machine has \(formatBytes(available))")
        }
    }

    func run() throws {
        let pool = ThreadPool(threadCount: threads)
        // Our side: `tensors` library-owned parameters with gradients.
        let info = try OptimizerRegistry.info(named: optimizer)
        var parameters: [Parameter] = []
        let base = params / tensors
        // --contiguous: one flat buffer each for the values and the gradients, kept for the run.
        let flatValues = contiguous ? UnsafeMutableBufferPointer<Float>.allocate(capacity: params) : nil
        let flatGradients = contiguous ? UnsafeMutableBufferPointer<Float>.allocate(capacity: params) : nil
        defer { flatValues?.deallocate(); flatGradients?.deallocate() }
        var offset = 0
        for index in 0..<tensors {
            let count = index == tensors - 1 ? params - base * (tensors - 1) : base
            // A matrix-only optimizer (Muon) gets square matrices of at most `count` elements.
            let side = Int(Double(count).squareRoot())
            let shape = info.requiresMatrices ? [side, side] : [count]
            let elements = shape.reduce(1, *)
            let parameter: Parameter
            if let flatValues, let flatGradients {
                parameter = try Parameter(name: "p\(index)", shape: shape, borrowing: UnsafeMutableBufferPointer(rebasing: flatValues[offset..<(offset + elements)]))
                try parameter.setGradient(borrowing: UnsafeMutableBufferPointer(rebasing: flatGradients[offset..<(offset + elements)]))
                offset += count
            } else {
                parameter = try Parameter(name: "p\(index)", shape: shape)
            }
            fillBenchmarkValues(parameter.values, seed: UInt64(2 * index + 1))
            fillBenchmarkValues(parameter.gradient ?? parameter.gradientStorage(zeroed: false), seed: UInt64(2 * index + 2))
            if paramDType == ParameterDType.bfloat16.rawValue { parameter.convert(to: .bfloat16) }
            parameters.append(parameter)
        }
        var configuration = info.benchmark.configuration
        if stateDType != StateDType.float32.rawValue { configuration.hyperparameters["state_dtype"] = .string(stateDType) }
        if paramDType == ParameterDType.bfloat16.rawValue {
            switch bf16Rounding {
            case "stochastic": configuration.hyperparameters["bf16_stochastic_round"] = .bool(true)
            case "kahan": configuration.hyperparameters["kahan_sum"] = .bool(true)
            case "master": configuration.hyperparameters["master_weights"] = .bool(true)
            default: break
            }
        }
        let ours = try OptimizerRegistry.makeOptimizer(configuration, parameters: parameters, threadPool: pool)
        let before = FloatStorage.liveBytes
        try ours.step()
        let stateBytes = FloatStorage.liveBytes - before
        try ours.step()
        // Bytes a step must move: parameter read + write, gradient read, each state buffer read + write
        // (Lookahead's synchronisation, every k steps, is left out of the figure).
        let lookaheadState = (ours as? Lookahead).map { _ in params * 4 } ?? 0
        let bytesPerStep = Double(params) * 12 + 2 * Double(stateBytes - lookaheadState)

        var reference: CReferenceWorkload?
        if case let .none(reason) = info.benchmark.reference, !noReference {
            print("\(optimizer) has no C reference: \(reason)")
        } else if !noReference {
            let kernels = try CReferenceKernels.load()
            kernels.setThreads(Int32(threads))
            reference = try CReferenceWorkload(kernels: kernels, info: info, count: params)
            reference!.step()
            reference!.step()
        }

        var swiftTimes: [Double] = [], referenceTimes: [Double] = [], metricTimes: [Double] = []
        for _ in 0..<steps {
            swiftTimes.append(try time { try ours.step() })
            if metrics { metricTimes.append(try time { try ours.step(collectingMetrics: true) }) }
            if let reference { referenceTimes.append(time { reference.step() }) }
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peakResidentBytes = Double(usage.ru_maxrss) * 1024

        // With tools/alloc's counting malloc preloaded: the heap allocations of steady-state steps
        // (the plain step, as a training loop takes it), nothing else in the loop. Two windows of
        // 10 steps, the smaller count: an allocation of every step shows in both, a one-time one
        // (a lazy global, a thread's first use of something) in one at most.
        var allocationsPerStep: Double?
        if let symbol = dlsym(nil, "optim_allocation_count") {
            let read = unsafeBitCast(symbol, to: (@convention(c) () -> Int).self)
            let allocationSteps = 10
            var fewest = Int.max
            for _ in 0..<2 {
                let before = read()
                for _ in 0..<allocationSteps { try ours.step() }
                fewest = min(fewest, read() - before)
            }
            allocationsPerStep = Double(fewest) / Double(allocationSteps)
        }

        let rows = [("swift", swiftTimes), ("swift-metrics", metricTimes), ("c-reference", referenceTimes)].filter { !$0.1.isEmpty }
        let medians = rows.map { ($0.0, median($0.1)) }
        if json {
            for (implementation, seconds) in medians {
                var object: [String: Any] = [
                    "optimizer": optimizer, "implementation": implementation, "params": params, "tensors": tensors, "contiguous": contiguous,
                    "threads": threads, "steps": steps, "seconds_per_step": seconds, "params_per_second": Double(params) / seconds,
                    "gb_per_second": bytesPerStep / seconds / 1e9, "bytes_per_step": bytesPerStep,
                    "state_bytes_per_param": Double(stateBytes) / Double(params), "peak_rss_bytes": peakResidentBytes,
                    "isa": ours.instructionSet.rawValue, "state_dtype": stateDType, "param_dtype": paramDType,
                ]
                if implementation == "swift", let allocationsPerStep { object["allocations_per_step"] = allocationsPerStep }
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            }
            return
        }
        print("optimizer \(configuration.displayName), \(stateDType) state, \(paramDType)\(paramDType == "bfloat16" ? " (\(bf16Rounding) rounding)" : "") parameters, \(params) params in \(tensors) tensor(s)\(contiguous ? " (contiguous)" : ""), \(threads) thread(s), median of \(steps) steps")
        print("state \(String(format: "%.2f", Double(stateBytes) / Double(params))) bytes/param (measured), moves \(String(format: "%.1f", bytesPerStep / Double(params))) bytes/param/step, peak RSS \(String(format: "%.2f", peakResidentBytes / 1e9)) GB")
        if let allocationsPerStep { print("heap allocations per step (counting malloc preloaded): \(RunSettings.text(allocationsPerStep))") }
        print("Swift kernels: \(ours.instructionSet) (this CPU runs \(KernelDispatch.available.map(\.rawValue).joined(separator: ", ")); OPTIM_ISA forces one)")
        if let reference { print("C reference: \(reference.kernels.compileCommand)") }
        print("implementation   s/step      params/s      GB/s")
        for (implementation, seconds) in medians {
            print(implementation.padding(toLength: 14, withPad: " ", startingAt: 0),
                  String(format: "%9.5f  %12.4g  %8.2f", seconds, Double(params) / seconds, bytesPerStep / seconds / 1e9))
        }
        let byImplementation = Dictionary(uniqueKeysWithValues: medians)
        if let c = byImplementation["c-reference"], let swift = byImplementation["swift"] {
            print(String(format: "ratio swift/C throughput: %.3f", c / swift))
        }
        if let withMetrics = byImplementation["swift-metrics"], let swift = byImplementation["swift"] {
            print(String(format: "ratio step with metrics / without: %.3f", withMetrics / swift))
        }
    }
}

func time(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
