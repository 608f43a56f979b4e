#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A thread that calls `work` under `lock` every 100 µs between ``start()`` and ``stop()``.
/// (MPI's `MPI_THREAD_SERIALIZED` allows calls from several threads one at a time: every
/// call of the overlap, from either thread, holds `lock`.)
final class ProgressPoller: @unchecked Sendable {
    let lock = NSLock()
    var work: () -> Void = {}
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private var polling = false, ended = false, running = false

    /// Starts polling; the caller holds `lock`.
    func start() {
        if !running {
            running = true
            let thread = Thread { [self] in loop() }
            thread.name = "optim-overlap-progress"
            thread.start()
        }
        polling = true
        wake.signal()
    }

    /// Returns once the thread has stopped polling (after its current `work`).
    func stop() {
        lock.lock()
        polling = false
        lock.unlock()
        stopped.wait()
    }

    /// Ends the thread (it holds the poller until then).
    func end() {
        guard running else { return }
        ended = true
        wake.signal()
    }

    private func loop() {
        while true {
            wake.wait()
            if ended { return }
            while true {
                lock.lock()
                guard polling else {
                    lock.unlock()
                    break
                }
                work()
                lock.unlock()
                usleep(100)
            }
            stopped.signal()
        }
    }
}
