#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import COptimSIMD
import Foundation
import Synchronization

/// A fixed set of worker threads that run a parallel loop, for the optimizers' kernels.
///
/// `parallelFor` hands out iteration indices dynamically (an atomic counter), runs on the
/// calling thread too, and returns when every index is done. It allocates nothing per call,
/// so a training loop's steps stay allocation-free.
public final class ThreadPool: @unchecked Sendable {
    /// A pool with one thread per core, shared by optimizers that are not given their own.
    public static let shared = ThreadPool(threadCount: ProcessInfo.processInfo.activeProcessorCount)

    /// Threads that run a loop, the caller included.
    public let threadCount: Int

    /// The state the workers share; they hold it strongly, so it outlives the pool until the
    /// last worker has seen the shutdown.
    private let core: Core

    /// A pool running loops on `threadCount` threads (the caller and `threadCount - 1` workers);
    /// values below 1 count as 1.
    public init(threadCount: Int) {
        self.threadCount = max(1, threadCount)
        core = Core(threadCount: self.threadCount)
        for _ in 1..<self.threadCount {
            let core = self.core
            let thread = Thread { core.workerLoop() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Stops the workers; each exits at its next wake-up (no loop can be running, since a run
    /// holds a reference to the pool).
    deinit { core.shutDown() }

    /// Runs `body(i)` for every `i` in `0..<count`, spread over the pool's threads, and returns
    /// when all are done. Safe to call from several threads: while the workers serve one caller,
    /// another caller runs its loop on its own thread.
    ///
    /// Handing a non-escaping closure to other threads costs one small allocation per call; a hot
    /// loop that must not allocate keeps an escaping job and calls ``run(_:_:)``.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { run(count, $0) }
    }

    /// Runs `job(i)` for every `i` in `0..<count` on the pool's threads, and returns when all are
    /// done; allocates nothing. Safe to call from several threads: while the workers serve one
    /// caller, another caller runs its loop on its own thread (two optimizers stepping at once on
    /// the shared pool both finish, correctly, the second without help).
    public func run(_ count: Int, _ job: @escaping (Int) -> Void) {
        guard count > 0 else { return }
        if threadCount == 1 || count == 1 || !core.tryBeginRun() {
            for index in 0..<count { job(index) }
            return
        }
        core.run(count, job)
    }

    private final class Core: @unchecked Sendable {
        let threadCount: Int
        private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        /// Held for the whole of a parallel run: one run at a time uses the workers.
        private let runLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private var generation = 0
        /// Workers inside the current run (they took its job and have not finished).
        private var running = 0
        /// ``generation``, readable without the mutex: what a spinning worker watches.
        private let published = Atomic<Int>(0)
        private var shuttingDown = false
        private var body: ((Int) -> Void)?
        private var iterations = 0
        private let nextIndex = Atomic<Int>(0)

        init(threadCount: Int) {
            self.threadCount = threadCount
            pthread_mutex_init(mutex, nil)
            pthread_mutex_init(runLock, nil)
            pthread_cond_init(wake, nil)
            pthread_cond_init(finished, nil)
        }

        deinit {
            pthread_mutex_destroy(mutex)
            pthread_mutex_destroy(runLock)
            pthread_cond_destroy(wake)
            pthread_cond_destroy(finished)
            mutex.deallocate()
            runLock.deallocate()
            wake.deallocate()
            finished.deallocate()
        }

        func shutDown() {
            pthread_mutex_lock(mutex)
            shuttingDown = true
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)
        }

        func tryBeginRun() -> Bool { pthread_mutex_trylock(runLock) == 0 }

        /// Runs a loop with the run lock held (``tryBeginRun()``), and releases it.
        func run(_ count: Int, _ job: @escaping (Int) -> Void) {
            defer { pthread_mutex_unlock(runLock) }
            pthread_mutex_lock(mutex)
            body = job
            iterations = count
            nextIndex.store(0, ordering: .relaxed)
            generation &+= 1
            published.store(generation, ordering: .releasing)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)

            drain(job, count)

            // Close the run: a worker that has not taken the job yet (still asleep, or descheduled
            // on a busy machine) skips it; wait only for those that did, which are finishing the
            // last indices they claimed.
            pthread_mutex_lock(mutex)
            body = nil
            while running > 0 { pthread_cond_wait(finished, mutex) }
            pthread_mutex_unlock(mutex)
        }

        @inline(__always)
        private func drain(_ body: (Int) -> Void, _ count: Int) {
            while true {
                let index = nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
                if index >= count { return }
                body(index)
            }
        }

        func workerLoop() {
            var seen = 0
            pthread_mutex_lock(mutex)
            while true {
                if generation == seen && !shuttingDown {
                    // Loops come in quick succession (the layers of a training step): watch for the
                    // next one for a few microseconds before sleeping on the condition variable.
                    pthread_mutex_unlock(mutex)
                    var spins = 0
                    while spins < Self.spinLimit && published.load(ordering: .acquiring) == seen {
                        spins += 1
                        Self.pause()
                    }
                    pthread_mutex_lock(mutex)
                }
                while generation == seen && !shuttingDown { pthread_cond_wait(wake, mutex) }
                if shuttingDown { break }
                seen = generation
                // The run may be closed already (its caller did every index): nothing to do.
                guard let body = self.body else { continue }
                let count = iterations
                running += 1
                pthread_mutex_unlock(mutex)
                drain(body, count)
                pthread_mutex_lock(mutex)
                running -= 1
                if running == 0 { pthread_cond_signal(finished) }
            }
            pthread_mutex_unlock(mutex)
        }

        /// Polls of ``published`` (each after a spin-wait hint) before a worker sleeps: some
        /// tens of microseconds.
        static var spinLimit: Int { 1000 }

        @inline(__always)
        static func pause() {
            optim_cpu_relax()
        }
    }
}
