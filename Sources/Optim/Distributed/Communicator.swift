#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The collective operations data-parallel training needs, over a fixed group of ranks — the
/// transport-agnostic face of MPI (`OptimMPI.MPICommunicator`) and of the in-process
/// `LocalCommunicatorGroup` the tests use.
///
/// Every operation is *collective*: each rank of the group must call the same operations in the
/// same order with matching sizes, or the job hangs (MPI) or fails (the in-process group checks).
/// Buffers are the caller's; nothing here allocates per call. A transport failure is thrown as
/// ``DistributedError/communication(operation:code:message:)``.
///
/// One rank's communicator is used from one thread at a time.
public protocol Communicator: AnyObject {
    /// This process's rank, `0..<size`.
    var rank: Int { get }
    /// The number of ranks.
    var size: Int { get }

    /// Replaces `buffer` on every rank by the element-wise sum of all ranks' buffers (`MPI_Allreduce`
    /// with `MPI_SUM`, in place). Every rank receives the same bits.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(DistributedError)

    /// ``allreduceSum(_:)-(UnsafeMutableBufferPointer<Float>)`` over Double values (metric sums).
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws(DistributedError)

    /// Starts ``allreduceSum(_:)-(UnsafeMutableBufferPointer<Float>)`` on `buffer` and returns
    /// without waiting for it (`MPI_Iallreduce`), so that the sum travels while the caller
    /// computes — what overlapping gradient communication with the backward pass needs. `buffer`
    /// must stay valid and untouched until the returned request completes
    /// (``CommunicationRequest/wait()``, or ``CommunicationRequest/test()`` returning `true`).
    /// Collective, in the same order as every other collective.
    ///
    /// The default implementation does the blocking allreduce and returns a completed request
    /// (the in-process group does this); `MPICommunicator` starts a nonblocking one.
    func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(DistributedError) -> any CommunicationRequest

    /// Sums `send` over the ranks and keeps this rank's part of the sum (`MPI_Reduce_scatter`):
    /// `send` holds `counts[0] + … + counts[size − 1]` elements on every rank, and `receive`
    /// gets elements `o_r ..< o_r + counts[r]` of the element-wise sum, `r` this rank and `o_r`
    /// the sum of the counts before it. `counts` is the same on every rank. What ZeRO-2 reduces
    /// gradients with: each rank receives only the part it updates.
    func reduceScatterSum(_ send: UnsafeBufferPointer<Float>, counts: UnsafeBufferPointer<Int>,
                          into receive: UnsafeMutableBufferPointer<Float>) throws(DistributedError)

    /// Starts ``reduceScatterSum(_:counts:into:)`` without waiting (`MPI_Ireduce_scatter`);
    /// `send`, `counts` and `receive` must stay valid and untouched until the request completes.
    /// The default implementation is the blocking call and a completed request.
    func startReduceScatterSum(_ send: UnsafeBufferPointer<Float>, counts: UnsafeBufferPointer<Int>,
                               into receive: UnsafeMutableBufferPointer<Float>) throws(DistributedError) -> any CommunicationRequest

    /// In-place gather of unequal contributions (`MPI_Allgatherv` with `MPI_IN_PLACE`): rank `r`
    /// contributes `buffer[o_r ..< o_r + counts[r]]` where `o_r = counts[0] + … + counts[r − 1]`;
    /// on return every rank's buffer holds every contribution at its offset. `counts` has `size`
    /// entries, equal on every rank, and `buffer` holds at least their sum.
    func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, counts: UnsafeBufferPointer<Int>) throws(DistributedError)

    /// Gathers a fixed number of integers from every rank (`MPI_Allgather`): `receive` holds
    /// `size × send.count` values, rank `r`'s at `r × send.count`. Used for start-up checks.
    func allgather(_ send: UnsafeBufferPointer<Int64>, into receive: UnsafeMutableBufferPointer<Int64>) throws(DistributedError)

    /// Copies rank `root`'s `buffer` into every other rank's (`MPI_Bcast`).
    func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, from root: Int) throws(DistributedError)

    /// Copies rank `root`'s bytes into every other rank's (`MPI_Bcast` of `MPI_BYTE`).
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, from root: Int) throws(DistributedError)

    /// Returns once every rank has called it (`MPI_Barrier`).
    func barrier() throws(DistributedError)

    /// Ends the whole job because of an error on this rank, after writing `message` to standard
    /// error: MPI calls `MPI_Abort`, which does not return. The in-process group marks itself
    /// failed, so that every other rank's next (or current) collective throws
    /// ``DistributedError/aborted(rank:message:)``, and returns.
    func abort(message: String, code: Int32)
}

extension Communicator {
    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(DistributedError) -> any CommunicationRequest {
        try allreduceSum(buffer)
        return CompletedRequest.shared
    }

    public func startReduceScatterSum(_ send: UnsafeBufferPointer<Float>, counts: UnsafeBufferPointer<Int>,
                                      into receive: UnsafeMutableBufferPointer<Float>) throws(DistributedError) -> any CommunicationRequest {
        try reduceScatterSum(send, counts: counts, into: receive)
        return CompletedRequest.shared
    }

    /// Checks the arguments of a reduce-scatter; returns this rank's offset into `send`.
    package func checkReduceScatter(_ send: UnsafeBufferPointer<Float>, counts: UnsafeBufferPointer<Int>,
                                    into receive: UnsafeMutableBufferPointer<Float>) throws(DistributedError) -> Int {
        guard counts.count == size, counts.allSatisfy({ $0 >= 0 }) else {
            throw .invalidConfiguration("reduce-scatter needs \(size) non-negative counts, got \(Array(counts))")
        }
        let total = counts.reduce(0, +)
        guard send.count == total, receive.count == counts[rank] else {
            throw .invalidConfiguration("reduce-scatter of \(send.count) elements with counts \(Array(counts)) into \(receive.count); expected \(total) and \(counts[rank])")
        }
        return counts[0..<rank].reduce(0, +)
    }

    /// Whether this is rank 0, the rank that prints and writes files.
    public var isRoot: Bool { rank == 0 }

    /// Runs `body`; if it throws, aborts the job with the error's message (see
    /// ``abort(message:code:)``) and rethrows — under MPI the rethrow is never reached, so one
    /// rank's failure ends every rank instead of leaving them waiting in a collective.
    public func abortingOnError<Result>(code: Int32 = 1, _ body: () throws -> Result) throws -> Result {
        do {
            return try body()
        } catch {
            abort(message: "\(error)", code: code)
            throw error
        }
    }

    /// Gathers `values` (the same count on every rank) from every rank: element `r` is rank `r`'s.
    public func allgather(_ values: [Int64]) throws(DistributedError) -> [[Int64]] {
        let width = values.count
        var gathered = [Int64](repeating: 0, count: width * size)
        do {
            try values.withUnsafeBufferPointer { send throws(DistributedError) in
                try gathered.withUnsafeMutableBufferPointer { receive throws(DistributedError) in try allgather(send, into: receive) }
            }
        }
        return (0..<size).map { Array(gathered[$0 * width..<($0 + 1) * width]) }
    }

    /// Rank `root`'s `text` on every rank (the other ranks' arguments are ignored).
    public func broadcast(_ text: String, from root: Int) throws(DistributedError) -> String {
        var bytes = Array(text.utf8)
        var length = [Int64(bytes.count)]
        try length.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try broadcast(UnsafeMutableRawBufferPointer(buffer), from: root) }
        let count = length[0]
        guard count >= 0, count <= Int64(Int32.max) else {
            throw .communication(operation: "broadcast", code: 0, message: "received an invalid text length \(count)")
        }
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(count)) }
        try bytes.withUnsafeMutableBufferPointer { buffer throws(DistributedError) in try broadcast(UnsafeMutableRawBufferPointer(buffer), from: root) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Throws unless `root` names a rank.
    package func checkRoot(_ root: Int) throws(DistributedError) {
        guard (0..<size).contains(root) else {
            throw .invalidConfiguration("root rank \(root) does not exist; the group has \(size) rank(s)")
        }
    }
}

/// A collective started by ``Communicator/startAllreduceSum(_:)`` (an `MPI_Request`): its buffer
/// belongs to the transport until the request completes.
public protocol CommunicationRequest: AnyObject {
    /// Whether the operation has completed, making progress on it without blocking (`MPI_Test`).
    /// Transports that progress only inside their own calls (Open MPI's TCP transport) move
    /// data when this is called, so call it now and then while computing.
    func test() throws(DistributedError) -> Bool
    /// Returns once the operation has completed (`MPI_Wait`).
    func wait() throws(DistributedError)
}

/// A request that was already complete when it was returned: what a communicator without
/// nonblocking collectives gives.
public final class CompletedRequest: CommunicationRequest, Sendable {
    /// The one instance (a completed request holds nothing).
    public static let shared = CompletedRequest()
    private init() {}
    /// Always `true`.
    public func test() throws(DistributedError) -> Bool { true }
    /// Returns at once.
    public func wait() throws(DistributedError) {}
}

/// What distributed training throws. Each case says which rank or operation failed and why.
public enum DistributedError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A collective failed in the transport: the operation (`MPI_Allreduce`, …), the error code
    /// and the transport's own message (MPI: `MPI_Error_string`).
    case communication(operation: String, code: Int, message: String)
    /// Ranks disagree about the parameters (count, names, shapes, groups or optimizer): found by
    /// the start-up check, before any data is exchanged. The message names the ranks that differ.
    case parameterMismatch(String)
    /// Another rank failed and aborted the job with `message` (in-process groups; under MPI the
    /// job simply ends).
    case aborted(rank: Int, message: String)
    /// A setting out of range: bucket size, root rank, group size, …
    case invalidConfiguration(String)
    /// An optimizer or feature that cannot run sharded.
    case unsupported(String)

    /// The error as one line for a person: the operation that failed and why.
    public var description: String {
        switch self {
        case let .communication(operation, code, message):
            return "\(operation) failed (error \(code)): \(message)"
        case let .parameterMismatch(message):
            return "parameter lists differ across ranks: \(message)"
        case let .aborted(rank, message):
            return "rank \(rank) aborted the job: \(message)"
        case let .invalidConfiguration(message):
            return "invalid distributed configuration: \(message)"
        case let .unsupported(message):
            return "unsupported in distributed training: \(message)"
        }
    }
}

/// Writes `text` and a newline to standard error, unbuffered (for messages printed just before
/// a job is aborted).
public func writeToStandardError(_ text: String) {
    var line = Array((text + "\n").utf8)
    line.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset < raw.count {
            let written = write(2, raw.baseAddress! + offset, raw.count - offset)
            if written <= 0 { break }
            offset += written
        }
    }
}
