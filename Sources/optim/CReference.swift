import Foundation
import Optim
#if canImport(Glibc)
import Glibc
#endif

/// The C reference kernels of `Resources/reference_kernels.c`, compiled on first use with
/// `cc -O3 -march=native -fopenmp` into a temporary shared library and loaded with `dlopen`.
struct CReferenceKernels {
    typealias SetThreads = @convention(c) (Int32) -> Void
    /// `ref_<name>(p, g, s0, s1, s2, s3, n, c)`, see ``CReference/kernel(symbol:stateBuffers:coefficients:)``.
    typealias Kernel = @convention(c) (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>,
                                       UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                       Int, UnsafePointer<Float>) -> Void
    /// `ref_<name>(p, g, s0, s1, s2, s3, n, c, global)`, see ``CReference/globalKernel(symbol:stateBuffers:coefficients:globals:)``.
    typealias GlobalKernel = @convention(c) (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>,
                                             UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                             Int, UnsafePointer<Float>, UnsafeMutablePointer<Double>) -> Void
    /// `ref_<sync>(p, slow, n, c)`, see ``CReference/wrapper(sync:every:coefficients:)``.
    typealias Sync = @convention(c) (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int, UnsafePointer<Float>) -> Void

    let handle: UnsafeMutableRawPointer
    let setThreads: SetThreads
    /// The compiler command used.
    let compileCommand: String

    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    static func load() throws -> CReferenceKernels {
        guard let source = Bundle.module.url(forResource: "reference_kernels", withExtension: "c") else {
            throw LoadError(description: "reference_kernels.c is missing from the optim resources")
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("optim-reference-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let library = folder.appendingPathComponent("libreference_kernels.so")
        let compiler = ProcessInfo.processInfo.environment["CC"] ?? "cc"
        let arguments = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC", source.path, "-o", library.path, "-lm"]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [compiler] + arguments
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch {
            throw LoadError(description: "cannot run \(compiler) to build the C reference: \(error)")
        }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw LoadError(description: "\(compiler) failed to build the C reference: \(message)")
        }
        // OpenMP's threads otherwise spin for a while after each parallel region, taking cores
        // from the Swift step that follows in the alternating benchmark; our pool sleeps too.
        setenv("OMP_WAIT_POLICY", "passive", 0)
        guard let handle = dlopen(library.path, RTLD_NOW) else {
            throw LoadError(description: "cannot load the C reference: \(String(cString: dlerror()))")
        }
        let kernels = CReferenceKernels(handle: handle, setThreads: { _ in },
                                        compileCommand: ([compiler] + arguments.prefix(4)).joined(separator: " "))
        return CReferenceKernels(handle: handle, setThreads: try kernels.symbol("ref_set_threads", SetThreads.self),
                                 compileCommand: kernels.compileCommand)
    }

    func symbol<T>(_ name: String, _: T.Type) throws -> T {
        guard let pointer = dlsym(handle, name) else { throw LoadError(description: "the C reference has no function \(name)") }
        return unsafeBitCast(pointer, to: T.self)
    }
}

/// The C reference's buffers and one step of it for an optimizer's ``OptimizerBenchmark``: one
/// flat tensor holding all the parameters (the roofline for those bytes).
final class CReferenceWorkload {
    let kernels: CReferenceKernels
    let count: Int
    /// The kernel: one of the elementwise ABI, or one with global state (`global`, updated by each step).
    private let kernel: CReferenceKernels.Kernel?
    private let globalKernel: CReferenceKernels.GlobalKernel?
    private var global: [Double] = []
    private let coefficients: [Float]
    private let sync: (function: CReferenceKernels.Sync, every: Int, coefficients: [Float])?
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var steps = 0

    /// Prepares the reference of `info`'s benchmark; throws for an optimizer without one, or a
    /// kernel the C file lacks.
    init(kernels: CReferenceKernels, info: OptimizerInfo, count: Int) throws {
        self.kernels = kernels
        self.count = count
        var reference = info.benchmark.reference
        if case let .wrapper(name, every, coefficients) = reference {
            guard let base = info.benchmark.configuration.base else {
                throw CReferenceKernels.LoadError(description: "\(info.name)'s benchmark wraps no optimizer")
            }
            sync = (try kernels.symbol("ref_" + name, CReferenceKernels.Sync.self), every, coefficients)
            reference = try OptimizerRegistry.info(named: base.name).benchmark.reference
        } else {
            sync = nil
        }
        let stateBuffers: Int
        switch reference {
        case let .kernel(symbol, buffers, coefficients):
            kernel = try kernels.symbol("ref_" + symbol, CReferenceKernels.Kernel.self)
            globalKernel = nil
            stateBuffers = buffers
            self.coefficients = coefficients
        case let .globalKernel(symbol, buffers, coefficients, globals):
            guard sync == nil else { throw CReferenceKernels.LoadError(description: "\(info.name): a wrapper must wrap an elementwise kernel") }
            kernel = nil
            globalKernel = try kernels.symbol("ref_" + symbol, CReferenceKernels.GlobalKernel.self)
            stateBuffers = buffers
            self.coefficients = coefficients
            global = globals
        case let .none(reason):
            throw CReferenceKernels.LoadError(description: "\(info.name) has no C reference: \(reason)")
        case .wrapper:
            throw CReferenceKernels.LoadError(description: "\(info.name): a wrapper must wrap an optimizer with a kernel")
        }
        // The parameter, the gradient, the state buffers, and the slow weights of a wrapper; the
        // second moments (buffers 3 and on) positive, as they are in a real run.
        let streams = 2 + stateBuffers + (sync == nil ? 0 : 1)
        for stream in 0..<max(streams, 3) {
            var raw: UnsafeMutableRawPointer?
            posix_memalign(&raw, 64, count * 4)
            let buffer = raw!.bindMemory(to: Float.self, capacity: count)
            fillBenchmarkValues(UnsafeMutableBufferPointer(start: buffer, count: count), seed: UInt64(stream + 1), positive: stream >= 3)
            buffers.append(buffer)
        }
    }

    deinit { buffers.forEach { free($0) } }

    /// The number of float streams the reference allocated (for the report).
    var streamCount: Int { buffers.count }

    func step() {
        let state = { (index: Int) in self.buffers[min(2 + index, self.buffers.count - 1)] }
        coefficients.withUnsafeBufferPointer { c in
            if let kernel {
                kernel(buffers[0], UnsafePointer(buffers[1]), state(0), state(1), state(2), state(3), count, c.baseAddress!)
            } else if let globalKernel {
                global.withUnsafeMutableBufferPointer { global in
                    globalKernel(buffers[0], UnsafePointer(buffers[1]), state(0), state(1), state(2), state(3), count, c.baseAddress!,
                                 global.baseAddress!)
                }
            }
        }
        steps += 1
        if let sync, steps % sync.every == 0 {
            sync.coefficients.withUnsafeBufferPointer { c in sync.function(buffers[0], buffers[buffers.count - 1], count, c.baseAddress!) }
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1] (or (0, 1] when `positive`), for benchmark data.
func fillBenchmarkValues(_ buffer: UnsafeMutableBufferPointer<Float>, seed: UInt64, positive: Bool = false) {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    for index in buffer.indices {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        let unit = Float(state >> 40) / Float(1 << 24)
        buffer[index] = positive ? unit + 1e-3 : unit * 2 - 1
    }
}
