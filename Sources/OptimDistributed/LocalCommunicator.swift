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

/// A group of ranks inside one process, each a thread, exchanging data through shared memory:
/// the `Communicator` the tests use to run data-parallel and sharded training without MPI.
///
/// Collectives follow MPI's semantics (same calls, same order, matching sizes) and check them:
/// ranks that call different operations or sizes get an error instead of a hang, as do ranks
/// still waiting when another rank has returned, failed (``LocalCommunicator/abort(message:code:)``)
/// or when ``timeout`` passes. Sums add the ranks' values in rank order, so results are
/// deterministic and identical on every rank.
///
/// ```swift
/// let group = try LocalCommunicatorGroup(size: 3)
/// let results = group.run { communicator in try train(on: communicator) }   // one thread per rank
/// ```
public final class LocalCommunicatorGroup: @unchecked Sendable {
    /// The number of ranks.
    public let size: Int
    /// Seconds a rank waits in a collective for the others before failing the group.
    public let timeout: Double

    // Everything below is guarded by `mutex`, except `calls[r]`, which rank r writes before
    // entering a barrier and every rank reads between that barrier and the next.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var arrived = 0
    private var generation = 0
    private var failure: DistributedError?
    private var returnedRank: Int?
    let calls: UnsafeMutablePointer<Call>

    /// One rank's side of a collective, published for the others to check and read.
    struct Call {
        enum Operation: String {
            case allreduceFloat = "allreduceSum(Float)", allreduceDouble = "allreduceSum(Double)", allgatherFloat = "allgather(Float)"
            case allgatherInt64 = "allgather(Int64)", broadcastFloat = "broadcast(Float)", broadcastBytes = "broadcast(bytes)", barrier
            case reduceScatterFloat = "reduceScatterSum(Float)"
        }
        var operation = Operation.barrier
        var count = 0
        var root = 0
        var data: UnsafeRawPointer?
        var counts: UnsafePointer<Int>?

        var summary: String {
            switch operation {
            case .broadcastFloat, .broadcastBytes: return "\(operation.rawValue) of \(count) from rank \(root)"
            case .barrier: return "barrier"
            default: return "\(operation.rawValue) of \(count)"
            }
        }
    }

    /// A group of `size` ranks; `timeout` is how long a rank waits for the others in a collective.
    public init(size: Int, timeout: Double = 300) throws(DistributedError) {
        guard size >= 1 else { throw .invalidConfiguration("a group needs at least one rank, got \(size)") }
        guard timeout > 0, timeout.isFinite else { throw .invalidConfiguration("timeout must be a finite number of seconds > 0, got \(timeout)") }
        self.size = size
        self.timeout = timeout
        calls = .allocate(capacity: size)
        calls.initialize(repeating: Call(), count: size)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
        calls.deinitialize(count: size)
        calls.deallocate()
    }

    /// Rank `rank`'s communicator; use each from one thread.
    public func communicator(rank: Int) throws(DistributedError) -> LocalCommunicator {
        guard (0..<size).contains(rank) else { throw .invalidConfiguration("rank \(rank) does not exist; the group has \(size) rank(s)") }
        return LocalCommunicator(group: self, rank: rank)
    }

    /// Runs `body` once per rank, each on its own thread with that rank's communicator, and
    /// returns the outcomes in rank order. A rank that throws aborts the group, so the others
    /// fail at their next collective rather than wait; so does a rank that returns while others
    /// still wait in a collective. One run at a time.
    public func run<Value: Sendable>(_ body: @escaping @Sendable (LocalCommunicator) throws -> Value) -> [Result<Value, any Error>] {
        reset()
        let outcomes = Mutex<[Result<Value, any Error>?]>(Array(repeating: nil, count: size))
        let done = DispatchSemaphore(value: 0)
        for rank in 0..<size {
            let communicator = LocalCommunicator(group: self, rank: rank)
            let thread = Thread {
                let outcome: Result<Value, any Error>
                do {
                    outcome = .success(try body(communicator))
                    self.rankReturned(rank)
                } catch {
                    outcome = .failure(error)
                    self.fail(.aborted(rank: rank, message: "\(error)"))
                }
                outcomes.withLock { $0[rank] = outcome }
                done.signal()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        for _ in 0..<size { done.wait() }
        return outcomes.withLock { $0.map { $0! } }
    }

    /// Clears a previous run's failure and departures.
    private func reset() {
        pthread_mutex_lock(mutex)
        (arrived, failure, returnedRank) = (0, nil, nil)
        pthread_mutex_unlock(mutex)
    }

    /// Marks the group failed (first failure wins) and wakes every waiting rank.
    func fail(_ error: DistributedError) {
        pthread_mutex_lock(mutex)
        if failure == nil { failure = error }
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    private func rankReturned(_ rank: Int) {
        pthread_mutex_lock(mutex)
        if returnedRank == nil { returnedRank = rank }
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until every rank has arrived; throws if the group failed, a rank returned while
    /// others wait, or the timeout passed.
    func synchronize(rank: Int, operation: String) throws(DistributedError) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if let failure { throw failure }
        arrived += 1
        if arrived == size {
            arrived = 0
            generation &+= 1
            pthread_cond_broadcast(condition)
            return
        }
        let entered = generation
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let whole = timeout.rounded(.down)
        deadline.tv_sec += Int(whole)
        deadline.tv_nsec += Int((timeout - whole) * 1e9)
        if deadline.tv_nsec >= 1_000_000_000 {
            deadline.tv_sec += 1
            deadline.tv_nsec -= 1_000_000_000
        }
        while generation == entered {
            if let failure { throw failure }
            if let returnedRank {
                let error = DistributedError.communication(
                    operation: operation, code: -1,
                    message: "rank \(returnedRank) returned while rank \(rank) waits in \(operation): the ranks made different collective calls")
                failure = error
                pthread_cond_broadcast(condition)
                throw error
            }
            if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT, generation == entered {
                let error = DistributedError.communication(
                    operation: operation, code: Int(ETIMEDOUT),
                    message: "rank \(rank) waited \(timeout) s in \(operation) for the other ranks")
                if failure == nil { failure = error }
                pthread_cond_broadcast(condition)
                throw failure!
            }
        }
    }
}

/// One rank of a ``LocalCommunicatorGroup``.
public final class LocalCommunicator: Communicator, @unchecked Sendable {
    /// The group this rank belongs to.
    public let group: LocalCommunicatorGroup
    public let rank: Int
    public var size: Int { group.size }

    /// This rank's copy of its input to an allreduce (the others read it while it overwrites its
    /// buffer); grown when needed, kept between calls.
    private var staging = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    private var stagingBytes = 64

    init(group: LocalCommunicatorGroup, rank: Int) {
        self.group = group
        self.rank = rank
    }

    deinit { staging.deallocate() }

    /// Publishes this rank's call, waits for every rank, and checks that all made the same call.
    private func enter(_ call: LocalCommunicatorGroup.Call) throws(DistributedError) {
        group.calls[rank] = call
        try group.synchronize(rank: rank, operation: call.operation.rawValue)
        for other in 0..<size {
            let theirs = group.calls[other]
            var same = theirs.operation == call.operation && theirs.count == call.count && theirs.root == call.root
            if same, call.operation == .allgatherFloat || call.operation == .reduceScatterFloat, let mine = call.counts, let their = theirs.counts {
                var index = 0
                while same, index < size {
                    same = mine[index] == their[index]
                    index += 1
                }
            }
            if !same {
                let error = DistributedError.communication(
                    operation: call.operation.rawValue, code: -1,
                    message: "rank \(rank) called \(call.summary) while rank \(other) called \(theirs.summary)")
                group.fail(error)
                throw error
            }
        }
    }

    /// Waits until every rank has finished reading the others' published buffers.
    private func leave(_ operation: LocalCommunicatorGroup.Call.Operation) throws(DistributedError) {
        try group.synchronize(rank: rank, operation: operation.rawValue)
    }

    private func stage(_ source: UnsafeRawPointer, bytes: Int) -> UnsafeRawPointer {
        if bytes > stagingBytes {
            staging.deallocate()
            stagingBytes = bytes
            staging = .allocate(byteCount: bytes, alignment: 64)
        }
        staging.copyMemory(from: source, byteCount: bytes)
        return UnsafeRawPointer(staging)
    }

    private func sumInRankOrder<Element: FloatingPoint>(_ buffer: UnsafeMutableBufferPointer<Element>, _ operation: LocalCommunicatorGroup.Call.Operation) throws(DistributedError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else {
            try enter(.init(operation: operation, count: 0))
            return try leave(operation)
        }
        let data = stage(UnsafeRawPointer(base), bytes: buffer.count * MemoryLayout<Element>.stride)
        try enter(.init(operation: operation, count: buffer.count, data: data))
        let first = group.calls[0].data!.assumingMemoryBound(to: Element.self)
        base.update(from: first, count: buffer.count)
        for other in 1..<size {
            let values = group.calls[other].data!.assumingMemoryBound(to: Element.self)
            for index in 0..<buffer.count { base[index] += values[index] }
        }
        try leave(operation)
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(DistributedError) {
        try sumInRankOrder(buffer, .allreduceFloat)
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws(DistributedError) {
        try sumInRankOrder(buffer, .allreduceDouble)
    }

    public func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, counts: UnsafeBufferPointer<Int>) throws(DistributedError) {
        guard counts.count == size, counts.allSatisfy({ $0 >= 0 }) else {
            throw .invalidConfiguration("allgather needs \(size) non-negative counts, got \(Array(counts))")
        }
        let total = counts.reduce(0, +)
        guard total <= buffer.count else { throw .invalidConfiguration("allgather of \(total) elements into a buffer of \(buffer.count)") }
        try enter(.init(operation: .allgatherFloat, count: total, data: buffer.baseAddress.map(UnsafeRawPointer.init), counts: counts.baseAddress))
        var offset = 0
        for other in 0..<size {
            if other != rank, counts[other] > 0 {
                let source = group.calls[other].data!.assumingMemoryBound(to: Float.self)
                (buffer.baseAddress! + offset).update(from: source + offset, count: counts[other])
            }
            offset += counts[other]
        }
        try leave(.allgatherFloat)
    }

    /// This rank's part of the sum, added in rank order (as ``allreduceSum(_:)-(UnsafeMutableBufferPointer<Float>)``
    /// adds: the same bits as that part of an allreduce).
    public func reduceScatterSum(_ send: UnsafeBufferPointer<Float>, counts: UnsafeBufferPointer<Int>,
                                 into receive: UnsafeMutableBufferPointer<Float>) throws(DistributedError) {
        let offset = try checkReduceScatter(send, counts: counts, into: receive)
        try enter(.init(operation: .reduceScatterFloat, count: send.count, data: send.baseAddress.map(UnsafeRawPointer.init), counts: counts.baseAddress))
        if let base = receive.baseAddress, receive.count > 0 {
            base.update(from: group.calls[0].data!.assumingMemoryBound(to: Float.self) + offset, count: receive.count)
            for other in 1..<size {
                let values = group.calls[other].data!.assumingMemoryBound(to: Float.self) + offset
                for index in 0..<receive.count { base[index] += values[index] }
            }
        }
        try leave(.reduceScatterFloat)
    }

    public func allgather(_ send: UnsafeBufferPointer<Int64>, into receive: UnsafeMutableBufferPointer<Int64>) throws(DistributedError) {
        guard receive.count >= send.count * size else {
            throw .invalidConfiguration("allgather of \(send.count) values from \(size) ranks into a buffer of \(receive.count)")
        }
        try enter(.init(operation: .allgatherInt64, count: send.count, data: send.baseAddress.map(UnsafeRawPointer.init)))
        if send.count > 0 {
            for other in 0..<size {
                let source = group.calls[other].data!.assumingMemoryBound(to: Int64.self)
                (receive.baseAddress! + other * send.count).update(from: source, count: send.count)
            }
        }
        try leave(.allgatherInt64)
    }

    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, from root: Int) throws(DistributedError) {
        try checkRoot(root)
        try enter(.init(operation: .broadcastFloat, count: buffer.count, root: root, data: buffer.baseAddress.map(UnsafeRawPointer.init)))
        if rank != root, buffer.count > 0 {
            buffer.baseAddress!.update(from: group.calls[root].data!.assumingMemoryBound(to: Float.self), count: buffer.count)
        }
        try leave(.broadcastFloat)
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, from root: Int) throws(DistributedError) {
        try checkRoot(root)
        try enter(.init(operation: .broadcastBytes, count: bytes.count, root: root, data: bytes.baseAddress.map(UnsafeRawPointer.init)))
        if rank != root, bytes.count > 0 {
            bytes.baseAddress!.copyMemory(from: group.calls[root].data!, byteCount: bytes.count)
        }
        try leave(.broadcastBytes)
    }

    public func barrier() throws(DistributedError) {
        try enter(.init(operation: .barrier))
        try leave(.barrier)  // nobody publishes its next call while another still checks this one
    }

    /// Writes `message` to standard error and fails the group: every other rank's current or
    /// next collective throws `DistributedError.aborted(rank:message:)`. Returns.
    public func abort(message: String, code: Int32) {
        writeToStandardError("rank \(rank): \(message)")
        group.fail(.aborted(rank: rank, message: message))
    }
}
