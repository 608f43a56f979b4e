import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The C reference kernels of `Resources/reference_kernels.c`, compiled on first use with
/// `cc -O3 -march=native -fopenmp` into a temporary shared library and loaded with `dlopen`.
struct CReferenceKernels {
    typealias SetThreads = @convention(c) (Int32) -> Void
    typealias SGD = @convention(c) (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int,
                                    Float, Float, Float, Float, Int32) -> Void
    typealias Adam = @convention(c) (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>,
                                     UnsafeMutablePointer<Float>, Int, Float, Float, Float, Float, Float, Float, Float) -> Void
    typealias Lion = @convention(c) (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int,
                                     Float, Float, Float, Float, Float, Float) -> Void
    typealias ADOPT = @convention(c) (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>,
                                      UnsafeMutablePointer<Float>, Int, Float, Float, Float, Float, Float, Float) -> Void
    typealias Sync = @convention(c) (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int, Float, Float) -> Void

    let setThreads: SetThreads
    let sgd: SGD
    let adam: Adam
    let lion: Lion
    let adopt: ADOPT
    let lookaheadSync: Sync
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
        func symbol<T>(_ name: String, _: T.Type) throws -> T {
            guard let pointer = dlsym(handle, name) else { throw LoadError(description: "C reference lacks \(name)") }
            return unsafeBitCast(pointer, to: T.self)
        }
        return CReferenceKernels(
            setThreads: try symbol("ref_set_threads", SetThreads.self), sgd: try symbol("ref_sgd", SGD.self),
            adam: try symbol("ref_adam", Adam.self), lion: try symbol("ref_lion", Lion.self),
            adopt: try symbol("ref_adopt", ADOPT.self), lookaheadSync: try symbol("ref_lookahead_sync", Sync.self),
            compileCommand: ([compiler] + arguments.prefix(4)).joined(separator: " "))
    }
}

/// The C reference's buffers and one step of it for a given optimizer: one flat tensor holding
/// all the parameters (the roofline for those bytes).
final class CReferenceWorkload {
    let kernels: CReferenceKernels
    let name: String
    let count: Int
    let lookaheadK: Int
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var steps = 0

    init(kernels: CReferenceKernels, optimizer name: String, count: Int, lookaheadK: Int) {
        self.kernels = kernels
        self.name = name
        self.count = count
        self.lookaheadK = lookaheadK
        let streams: Int
        switch name {
        case "sgd", "lion", "decoupled_lionw": streams = 3
        case "lookahead": streams = 5
        default: streams = 4
        }
        for stream in 0..<streams {
            var raw: UnsafeMutableRawPointer?
            posix_memalign(&raw, 64, count * 4)
            let buffer = raw!.bindMemory(to: Float.self, capacity: count)
            fillBenchmarkValues(UnsafeMutableBufferPointer(start: buffer, count: count), seed: UInt64(stream + 1), positive: stream >= 3)
            buffers.append(buffer)
        }
    }

    deinit { buffers.forEach { free($0) } }

    func step() {
        let (p, g) = (buffers[0], UnsafePointer(buffers[1]))
        switch name {
        case "sgd":
            kernels.sgd(p, g, buffers[2], count, -1e-3, 0.9, 1, 0, 0)
        case "lion", "decoupled_lionw":
            kernels.lion(p, g, buffers[2], count, 1, 0.9, 0.1, 0.99, 0.01, -1e-4)
        case "adopt":
            kernels.adopt(p, g, buffers[2], buffers[3], count, 1e-6, 2, 0.1, 0.9999, 1e-4, -1e-3)
        default:
            kernels.adam(p, g, buffers[2], buffers[3], count, 1 - 1e-5, 0.1, 0.999, 1e-3, 0.5, 1e-8, -1e-3)
        }
        steps += 1
        if name == "lookahead", steps % lookaheadK == 0 {
            kernels.lookaheadSync(p, buffers[4], count, 0.5, 0.5)
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
