import Foundation
import Training
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SIGINT and SIGTERM, caught while a run trains: the handler only records the signal; the
/// training loop sees it before its next step, saves the checkpoint and a summary marked
/// interrupted, and the command exits with 128 + the signal (130, 143). A save in progress
/// finishes first, so no temporary file is left behind.
enum Interrupts {
    private static let received = Atomic<Int32>(0)

    /// Starts catching SIGINT and SIGTERM.
    static func install() {
        for number in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                _ = Interrupts.received.compareExchange(expected: 0, desired: number, ordering: .relaxed)
            }
            action.sa_flags = SA_RESTART
            sigemptyset(&action.sa_mask)
            sigaction(number, &action, nil)
        }
        // A parent may have started us with them blocked (a process spawned from a thread of
        // libdispatch inherits its mask): unblock them, or the run could not be stopped cleanly.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        // Output whose reader has gone (`optim train | head`) is dropped; the run goes on.
        Glibc.signal(SIGPIPE, SIG_IGN)
    }

    /// The first signal caught, or 0.
    static var signal: Int32 { received.load(ordering: .relaxed) }

    static func name(_ number: Int32) -> String { number == SIGINT ? "SIGINT" : number == SIGTERM ? "SIGTERM" : "signal \(number)" }
}
