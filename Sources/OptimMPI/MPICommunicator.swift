#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Optim
import Synchronization
#if MPI
import CMPI
#endif

/// MPI for distributed training: the entry points exist in every build, and work when the
/// package is built with the `MPI` trait (`swift build --traits MPI`, which needs Open MPI's
/// development files: `apt-get install libopenmpi-dev openmpi-bin`).
///
/// ```swift
/// let communicator = try MPIRuntime.world()      // MPI_Init_thread on first use
/// try communicator.abortingOnError {             // one rank's error ends the job (MPI_Abort)
///     let dataParallel = try DataParallel(model, communicator: communicator)
///     …
/// }
/// try MPIRuntime.finalize()
/// ```
/// Run with `mpirun -np 4 program …` (as root, add `--allow-run-as-root`; with more ranks than
/// cores, `--oversubscribe`; across machines, `--hostfile hosts`).
public enum MPIRuntime {
    /// Whether this build binds MPI (was built with the `MPI` trait).
    public static var isAvailable: Bool {
        #if MPI
        return true
        #else
        return false
        #endif
    }

    /// Whether a launcher (`mpirun`/`mpiexec` of Open MPI or MPICH, or a PMIx launcher such as
    /// `srun`) started this process, judged by the environment it sets.
    public static var isLaunchedByMPI: Bool {
        let environment = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].contains { environment[$0] != nil }
    }

    /// The communicator of every process of the job (a duplicate of `MPI_COMM_WORLD`, with
    /// `MPI_ERRORS_RETURN`, so that errors are thrown rather than fatal), initialising MPI on the
    /// first call. Throws `DistributedError.unsupported(_:)` in a build without the trait.
    public static func world() throws(DistributedError) -> any Communicator {
        #if MPI
        return try MPICommunicator.world()
        #else
        throw .unsupported("this build has no MPI; rebuild with `swift build --traits MPI` (needs libopenmpi-dev)")
        #endif
    }

    /// Finalises MPI (`MPI_Finalize`) if it was initialised and not yet finalised; every rank
    /// calls it, after its last collective. Also done at exit if not called.
    public static func finalize() throws(DistributedError) {
        #if MPI
        try MPICommunicator.finalize()
        #endif
    }
}

#if MPI
/// A `Communicator` over MPI (Open MPI through `CMPI`): Float, Double and Int64 collectives
/// on a duplicate of `MPI_COMM_WORLD` whose error handler is `MPI_ERRORS_RETURN`, each failure
/// thrown as `DistributedError.communication(operation:code:message:)` with the text of
/// `MPI_Error_string` (and of the error class). Counts above `Int32.max` are split into several
/// calls where MPI allows it (allreduce, broadcast) and refused otherwise.
///
/// MPI is initialised once per process with `MPI_Init_thread` asking for
/// `MPI_THREAD_SERIALIZED`: any thread may call, one at a time (``threadLevel`` is what the
/// library granted).
public final class MPICommunicator: Communicator, @unchecked Sendable {
    /// This process's rank in `MPI_COMM_WORLD`, `0..<size`.
    public let rank: Int
    /// The number of ranks in `MPI_COMM_WORLD`.
    public let size: Int
    /// The thread support MPI granted (`MPI_THREAD_SINGLE` 0 … `MPI_THREAD_MULTIPLE` 3).
    public let threadLevel: Int
    private let communicator: MPI_Comm
    /// Scratch for allgatherv's counts and displacements, allocated once.
    private let counts: UnsafeMutablePointer<Int32>
    private let displacements: UnsafeMutablePointer<Int32>

    private struct Runtime: @unchecked Sendable {
        var world: MPICommunicator?
        var finalized = false
    }

    private static let runtime = Mutex(Runtime())
    /// Stands in for an empty buffer (never read or written); kept for the life of the process.
    private nonisolated(unsafe) static let spare = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    private init(communicator: MPI_Comm, rank: Int, size: Int, threadLevel: Int) {
        self.communicator = communicator
        self.rank = rank
        self.size = size
        self.threadLevel = threadLevel
        counts = .allocate(capacity: size)
        displacements = .allocate(capacity: size)
    }

    deinit {
        counts.deallocate()
        displacements.deallocate()
    }

    /// The world communicator, initialising MPI the first time.
    public static func world() throws(DistributedError) -> MPICommunicator {
        let result: Result<MPICommunicator, DistributedError> = runtime.withLock { runtime in
            if let world = runtime.world { return .success(world) }
            if runtime.finalized { return .failure(.communication(operation: "MPI_Init_thread", code: -1, message: "MPI was finalized; it cannot start again")) }
            do throws(DistributedError) {
                let world = try start()
                runtime.world = world
                atexit { MPICommunicator.finalizeAtExit() }
                return .success(world)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func start() throws(DistributedError) -> MPICommunicator {
        var initialized: Int32 = 0
        try check(MPI_Initialized(&initialized), "MPI_Initialized")
        var provided: Int32 = 0
        if initialized == 0 {
            try check(MPI_Init_thread(nil, nil, cmpi_thread_serialized(), &provided), "MPI_Init_thread")
        } else {
            try check(MPI_Query_thread(&provided), "MPI_Query_thread")
        }
        try check(MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return()), "MPI_Comm_set_errhandler")
        var duplicate: MPI_Comm? = cmpi_comm_null()
        try check(MPI_Comm_dup(cmpi_comm_world(), &duplicate), "MPI_Comm_dup")
        guard let communicator = duplicate else { throw .communication(operation: "MPI_Comm_dup", code: -1, message: "no communicator returned") }
        try check(MPI_Comm_set_errhandler(communicator, cmpi_errors_return()), "MPI_Comm_set_errhandler")
        var rank: Int32 = 0, size: Int32 = 0
        try check(MPI_Comm_rank(communicator, &rank), "MPI_Comm_rank")
        try check(MPI_Comm_size(communicator, &size), "MPI_Comm_size")
        return MPICommunicator(communicator: communicator, rank: Int(rank), size: Int(size), threadLevel: Int(provided))
    }

    /// Frees the world communicator and finalises MPI, once.
    static func finalize() throws(DistributedError) {
        let result: Result<Void, DistributedError> = runtime.withLock { runtime in
            guard !runtime.finalized else { return .success(()) }
            var initialized: Int32 = 0
            MPI_Initialized(&initialized)
            runtime.finalized = true
            guard initialized != 0 else { return .success(()) }
            var finalized: Int32 = 0
            MPI_Finalized(&finalized)
            guard finalized == 0 else { return .success(()) }
            if let world = runtime.world {
                var handle: MPI_Comm? = world.communicator
                MPI_Comm_free(&handle)
            }
            do throws(DistributedError) {
                try check(MPI_Finalize(), "MPI_Finalize")
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    private static func finalizeAtExit() {
        do { try finalize() } catch { writeToStandardError("MPI_Finalize at exit: \(error)") }
    }

    /// `MPI_Error_string` of `code`, with its class's when that differs.
    static func describe(_ code: Int32) -> String {
        func text(_ code: Int32) -> String {
            var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
            var length: Int32 = 0
            guard MPI_Error_string(code, &buffer, &length) == cmpi_success() else { return "unknown MPI error" }
            return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        var errorClass: Int32 = 0
        let message = text(code)
        guard MPI_Error_class(code, &errorClass) == cmpi_success(), errorClass != code else { return message }
        return "\(message) (class \(errorClass): \(text(errorClass)))"
    }

    /// The error thrown for MPI error code `code` returned by `operation` (for code that calls
    /// MPI itself on this communicator's job).
    public static func error(code: Int32, operation: String) -> DistributedError {
        .communication(operation: operation, code: Int(code), message: describe(code))
    }

    static func check(_ code: Int32, _ operation: String) throws(DistributedError) {
        guard code != cmpi_success() else { return }
        throw error(code: code, operation: operation)
    }

    private func checkRunning(_ operation: String) throws(DistributedError) {
        if Self.runtime.withLock({ $0.finalized }) {
            throw .communication(operation: operation, code: -1, message: "MPI is finalized")
        }
    }

    /// Calls `body(offset, count)` over `total` elements in pieces that fit MPI's `int` counts.
    private func inPieces(_ total: Int, _ body: (Int, Int32) throws(DistributedError) -> Void) throws(DistributedError) {
        var offset = 0
        repeat {
            let count = min(total - offset, Int(Int32.max))
            try body(offset, Int32(count))
            offset += count
        } while offset < total
    }

    private func allreduce(_ base: UnsafeMutableRawPointer?, count: Int, stride: Int, type: MPI_Datatype) throws(DistributedError) {
        try checkRunning("MPI_Allreduce")
        try inPieces(count) { offset, count throws(DistributedError) in
            try Self.check(MPI_Allreduce(cmpi_in_place(), base.map { $0 + offset * stride }, count, type, cmpi_op_sum(), communicator), "MPI_Allreduce")
        }
    }

    /// Sums `buffer` over the ranks in place (`MPI_Allreduce` with `MPI_SUM`, in pieces beyond
    /// `Int32.max` elements).
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(DistributedError) {
        try allreduce(buffer.baseAddress.map(UnsafeMutableRawPointer.init), count: buffer.count, stride: 4, type: cmpi_float())
    }

    /// Starts summing `buffer` over the ranks in place (`MPI_Iallreduce` with `MPI_SUM`, in pieces
    /// beyond `Int32.max` elements) and returns the request without waiting. Open MPI moves the
    /// data only inside MPI calls: call the request's `test()` now and then while computing.
    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(DistributedError) -> any CommunicationRequest {
        try checkRunning("MPI_Iallreduce")
        let request = MPIRequest(operation: "MPI_Iallreduce")
        let base = buffer.baseAddress
        try inPieces(buffer.count) { offset, count throws(DistributedError) in
            var handle: MPI_Request? = cmpi_request_null()
            try Self.check(MPI_Iallreduce(cmpi_in_place(), base.map { $0 + offset }, count, cmpi_float(), cmpi_op_sum(), communicator, &handle),
                           "MPI_Iallreduce")
            request.handles.append(handle)
        }
        return request
    }

    /// This rank's part of the sum of `send` over the ranks (`MPI_Reduce_scatter`); at most
    /// `Int32.max` elements in all.
    public func reduceScatterSum(_ send: UnsafeBufferPointer<Float>, counts: UnsafeBufferPointer<Int>,
                                 into receive: UnsafeMutableBufferPointer<Float>) throws(DistributedError) {
        try startReduceScatterSum(send, counts: counts, into: receive).wait()
    }

    /// Starts ``reduceScatterSum(_:counts:into:)`` (`MPI_Ireduce_scatter`) and returns without
    /// waiting.
    public func startReduceScatterSum(_ send: UnsafeBufferPointer<Float>, counts: UnsafeBufferPointer<Int>,
                                      into receive: UnsafeMutableBufferPointer<Float>) throws(DistributedError) -> any CommunicationRequest {
        try checkRunning("MPI_Ireduce_scatter")
        _ = try checkReduceScatter(send, counts: counts, into: receive)
        guard send.count <= Int(Int32.max) else {
            throw .invalidConfiguration("reduce-scatter of \(send.count) elements; MPI_Ireduce_scatter takes at most \(Int32.max)")
        }
        let request = MPIRequest(operation: "MPI_Ireduce_scatter")
        request.counts = counts.map { Int32($0) }
        var handle: MPI_Request? = cmpi_request_null()
        // MPI wants non-null buffers even for zero elements.
        let spare = Self.spare
        let code = request.counts.withUnsafeBufferPointer { recvcounts in
            MPI_Ireduce_scatter(send.baseAddress ?? UnsafePointer(spare), receive.baseAddress ?? spare, recvcounts.baseAddress, cmpi_float(), cmpi_op_sum(),
                                communicator, &handle)
        }
        try Self.check(code, "MPI_Ireduce_scatter")
        request.handles.append(handle)
        return request
    }

    /// Sums `buffer` of Double values over the ranks in place (`MPI_Allreduce` with `MPI_SUM`).
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws(DistributedError) {
        try allreduce(buffer.baseAddress.map(UnsafeMutableRawPointer.init), count: buffer.count, stride: 8, type: cmpi_double())
    }

    /// Gathers each rank's `counts[r]` elements into every rank's `buffer` in place
    /// (`MPI_Allgatherv`); at most `Int32.max` in all.
    public func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, counts: UnsafeBufferPointer<Int>) throws(DistributedError) {
        try checkRunning("MPI_Allgatherv")
        guard counts.count == size else { throw .invalidConfiguration("allgather needs \(size) counts, got \(counts.count)") }
        var total = 0
        for index in 0..<size {
            guard counts[index] >= 0, total + counts[index] <= Int(Int32.max) else {
                throw .invalidConfiguration("allgather of \(Array(counts)) elements; MPI_Allgatherv takes at most \(Int32.max) in all")
            }
            self.counts[index] = Int32(counts[index])
            displacements[index] = Int32(total)
            total += counts[index]
        }
        guard total <= buffer.count else { throw .invalidConfiguration("allgather of \(total) elements into a buffer of \(buffer.count)") }
        try Self.check(MPI_Allgatherv(cmpi_in_place(), 0, cmpi_datatype_null(), buffer.baseAddress, self.counts, displacements, cmpi_float(), communicator),
                       "MPI_Allgatherv")
    }

    /// Gathers `send` from every rank into `receive`, rank by rank (`MPI_Allgather`).
    public func allgather(_ send: UnsafeBufferPointer<Int64>, into receive: UnsafeMutableBufferPointer<Int64>) throws(DistributedError) {
        try checkRunning("MPI_Allgather")
        guard send.count <= Int(Int32.max), receive.count >= send.count * size else {
            throw .invalidConfiguration("allgather of \(send.count) values from \(size) ranks into a buffer of \(receive.count)")
        }
        try Self.check(MPI_Allgather(send.baseAddress, Int32(send.count), cmpi_int64(), receive.baseAddress, Int32(send.count), cmpi_int64(), communicator),
                       "MPI_Allgather")
    }

    private func broadcast(_ base: UnsafeMutableRawPointer?, count: Int, stride: Int, type: MPI_Datatype, root: Int) throws(DistributedError) {
        try checkRunning("MPI_Bcast")
        guard (0..<size).contains(root) else { throw .invalidConfiguration("root rank \(root) does not exist; the job has \(size) rank(s)") }
        try inPieces(count) { offset, count throws(DistributedError) in
            try Self.check(MPI_Bcast(base.map { $0 + offset * stride }, count, type, Int32(root), communicator), "MPI_Bcast")
        }
    }

    /// Copies rank `root`'s `buffer` into every other rank's (`MPI_Bcast`, in pieces beyond
    /// `Int32.max` elements).
    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, from root: Int) throws(DistributedError) {
        try broadcast(buffer.baseAddress.map(UnsafeMutableRawPointer.init), count: buffer.count, stride: 4, type: cmpi_float(), root: root)
    }

    /// Copies rank `root`'s bytes into every other rank's (`MPI_Bcast` of `MPI_BYTE`).
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, from root: Int) throws(DistributedError) {
        try broadcast(bytes.baseAddress, count: bytes.count, stride: 1, type: cmpi_byte(), root: root)
    }

    /// Returns once every rank has called it (`MPI_Barrier`).
    public func barrier() throws(DistributedError) {
        try checkRunning("MPI_Barrier")
        try Self.check(MPI_Barrier(communicator), "MPI_Barrier")
    }

    /// Writes `rank R: message` to standard error and ends every process of the job with
    /// `MPI_Abort(MPI_COMM_WORLD, code)`; does not return.
    public func abort(message: String, code: Int32) {
        writeToStandardError("rank \(rank): \(message)")
        MPI_Abort(cmpi_comm_world(), code)
        exit(code)  // MPI_Abort does not return; should it, leave anyway
    }
}

/// Nonblocking MPI operations in flight (`MPI_Request` handles), completed together.
final class MPIRequest: CommunicationRequest {
    let operation: String
    var handles: [MPI_Request?] = []
    /// Arguments MPI reads until the operation completes (a reduce-scatter's counts).
    var counts: [Int32] = []
    private var complete = false

    init(operation: String) { self.operation = operation }

    /// `MPI_Testall`: whether every handle has completed, progressing them.
    func test() throws(DistributedError) -> Bool {
        guard !complete else { return true }
        var flag: Int32 = 0
        let code = handles.withUnsafeMutableBufferPointer { MPI_Testall(Int32($0.count), $0.baseAddress, &flag, cmpi_statuses_ignore()) }
        try MPICommunicator.check(code, "MPI_Testall (\(operation))")
        complete = flag != 0
        return complete
    }

    /// `MPI_Waitall`.
    func wait() throws(DistributedError) {
        guard !complete else { return }
        let code = handles.withUnsafeMutableBufferPointer { MPI_Waitall(Int32($0.count), $0.baseAddress, cmpi_statuses_ignore()) }
        try MPICommunicator.check(code, "MPI_Waitall (\(operation))")
        complete = true
    }
}
#endif
