#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Optim

/// The bookkeeping of a gradient reduction overlapped with the backward pass, shared by
/// ``DataParallel`` (an allreduce a bucket) and ZeRO-2's ``ShardedOptimizer`` (a reduce-scatter
/// a bucket): buckets of whole tensors, started in order as soon as all their parameters are
/// reported ready, tested every 100 µs by a polling thread while backward computes, and waited
/// for at the end. What starting and completing a bucket does is the owner's (`start`,
/// `completed`).
final class OverlappedReduction {
    /// Each bucket's parameters (a contiguous range of indices), in launch order: last first.
    let buckets: [Range<Int>]
    /// The bucket of each parameter.
    let bucketOfParameter: [Int]
    /// The most buckets in flight at once (a bucket waits for the one this many before it), or
    /// `Int.max`.
    let maximumInFlight: Int
    /// Packs bucket `b` and starts its communication.
    var start: (Int) throws(DistributedError) -> any CommunicationRequest = { _ throws(DistributedError) in CompletedRequest.shared }
    /// Called once bucket `b` has completed (under the lock).
    var completed: (Int) -> Void = { _ in }

    private var ready: [Bool]
    private var readyCounts: [Int]
    private var requests: [(any CommunicationRequest)?]
    private var done: [Bool]
    private var next = 0
    private(set) var active = false
    private var error: DistributedError?
    private var firstStart = 0.0, lastCompletion = 0.0
    private var startedDuringBackward = 0
    private var polling = false
    /// Its thread starts on first use; its lock guards every call that reaches the transport.
    private let poller = ProgressPoller()

    /// Buckets over tensors of `counts` elements, from the last: each closed once it holds
    /// `bucketElements` (the first at most ``DataParallel/firstBucketBytes``), counting
    /// `overheadPerTensor` more elements a tensor.
    init(counts: [Int], bucketElements: Int, overheadPerTensor: Int, maximumInFlight: Int = .max) {
        var buckets: [Range<Int>] = [], upper = counts.count, elements = 0
        for index in stride(from: counts.count - 1, through: 0, by: -1) {
            elements += counts[index] + overheadPerTensor
            // The first bucket is smaller (DDP's 1 MiB), so that communication starts early.
            let limit = buckets.isEmpty ? min(bucketElements, DataParallel.firstBucketBytes / MemoryLayout<Float>.stride) : bucketElements
            if elements >= limit || index == 0 {
                buckets.append(index..<upper)
                upper = index
                elements = 0
            }
        }
        var bucketOfParameter = Array(repeating: 0, count: counts.count)
        for (bucket, range) in buckets.enumerated() { for index in range { bucketOfParameter[index] = bucket } }
        self.buckets = buckets
        self.bucketOfParameter = bucketOfParameter
        self.maximumInFlight = maximumInFlight
        ready = Array(repeating: false, count: counts.count)
        readyCounts = Array(repeating: 0, count: buckets.count)
        requests = Array(repeating: nil, count: buckets.count)
        done = Array(repeating: false, count: buckets.count)
    }

    deinit {
        if polling { poller.stop() }
        poller.end()
    }

    /// Starts a reduction: nothing ready, nothing sent.
    func begin() {
        for index in ready.indices { ready[index] = false }
        for index in buckets.indices {
            readyCounts[index] = 0
            requests[index] = nil
            done[index] = false
        }
        next = 0
        error = nil
        startedDuringBackward = 0
        active = true
    }

    /// Marks parameters ready, starts every bucket now complete, in order, and tests those in
    /// flight; an error is kept for ``finish()``. Does nothing outside ``begin()`` … ``finish()``.
    func markReady(_ indices: some Sequence<Int>) {
        guard active else { return }
        poller.lock.lock()
        defer { poller.lock.unlock() }
        guard error == nil else { return }
        for index in indices where ready.indices.contains(index) && !ready[index] {
            ready[index] = true
            readyCounts[bucketOfParameter[index]] += 1
        }
        do throws(DistributedError) {
            try launchReady(duringBackward: true, limit: .max)
            try progress()
        } catch {
            self.error = error
        }
    }

    /// Stops polling, sends the buckets never reported (one at a time, each waited for before
    /// the next), waits for every bucket, and returns what it cost.
    func finish() throws(DistributedError) -> DataParallel.ReductionTiming {
        guard active else {
            throw .invalidConfiguration("finishGradientReduction() without beginGradientReduction(scale:averaging:) before the backward pass")
        }
        active = false
        if polling {
            poller.stop()
            polling = false
        }
        if let error { throw error }
        for index in ready.indices where !ready[index] {
            ready[index] = true
            readyCounts[bucketOfParameter[index]] += 1
        }
        let waitStart = Self.now()
        for index in 0..<next where !done[index] { try wait(index) }
        while next < buckets.count {
            let index = next
            try launchReady(duringBackward: false, limit: 1)
            try wait(index)
        }
        return DataParallel.ReductionTiming(communicationSeconds: max(0, lastCompletion - firstStart), exposedSeconds: Self.now() - waitStart,
                                            buckets: buckets.count, bucketsStartedDuringBackward: startedDuringBackward)
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Starts, in order, up to `limit` buckets whose parameters are all ready.
    private func launchReady(duringBackward: Bool, limit: Int) throws(DistributedError) {
        var launched = 0
        while launched < limit, next < buckets.count, readyCounts[next] == buckets[next].count {
            let bucket = next
            if maximumInFlight < .max, bucket >= maximumInFlight, !done[bucket - maximumInFlight] { try wait(bucket - maximumInFlight) }
            if bucket == 0 { firstStart = Self.now() }
            let request = try start(bucket)
            requests[bucket] = request
            next += 1
            launched += 1
            guard duringBackward else { continue }
            startedDuringBackward += 1
            if !polling, try !request.test() {
                // Keep it moving while backward computes (the caller holds the lock).
                poller.work = { [unowned self] in
                    guard self.error == nil else { return }
                    do throws(DistributedError) { try self.progress() } catch { self.error = error }
                }
                polling = true
                poller.start()
            }
        }
    }

    /// Tests the buckets in flight, oldest first.
    private func progress() throws(DistributedError) {
        for index in 0..<next where !done[index] {
            guard try requests[index]!.test() else { return }
            markDone(index)
        }
    }

    private func wait(_ bucket: Int) throws(DistributedError) {
        try requests[bucket]!.wait()
        markDone(bucket)
    }

    private func markDone(_ bucket: Int) {
        done[bucket] = true
        lastCompletion = Self.now()
        completed(bucket)
    }
}
