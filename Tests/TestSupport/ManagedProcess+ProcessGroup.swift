import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// For children that lead their own process group and fork workers into it, such as
/// `openssl ocsp -multi N`: it calls setpgid(0, 0), and its parent only notices SIGTERM once a
/// worker exits (its waitpid() is restarted after the signal), so a SIGTERM to the parent alone
/// does nothing, and the registry's SIGKILL to the parent alone would orphan the workers (still
/// holding the port). Signalling the whole group ends the workers, then the parent (which waits
/// one more second before exiting).
extension ManagedProcess {
    /// Kills the group with SIGKILL when the test runner exits, should the test not get to
    /// `terminateProcessGroup` (a crash in the middle). Call right after launching.
    public func killProcessGroupAtExit() {
        ProcessGroups.register(pid)
    }

    /// True once neither the process nor anything in its group is left. Once seen, the group is
    /// also dropped from the SIGKILL at exit (`killProcessGroupAtExit`): its number is a pid the
    /// kernel hands out again (pid_max is 32768 here, and the machine's other test runs wrap it in
    /// minutes), so a kill(-pid) at exit could hit an unrelated process group. A PostgreSQL
    /// stopped with SIGINT was never dropped.
    public var processGroupIsGone: Bool {
        let gone = !isRunning && kill(-pid, 0) != 0 && errno == ESRCH
        if gone { ProcessGroups.unregister(pid) }
        return gone
    }

    /// SIGTERM to the group, SIGKILL to the group after `grace`; returns once the process has
    /// exited and its group is empty.
    public func terminateProcessGroup(grace: Duration = .seconds(5)) async {
        signalProcessGroup(SIGTERM)
        if (try? await waitUntil(timeout: grace, "process group \(pid) to exit", { self.processGroupIsGone })) == nil {
            signalProcessGroup(SIGKILL)
            try? await waitUntil(timeout: .seconds(5), "process group \(pid) to exit after SIGKILL") {
                self.processGroupIsGone
            }
        }
        _ = try? await waitForExit(timeout: .seconds(5))  // drains its output, unregisters it
        ProcessGroups.unregister(pid)
    }

    public func terminateProcessGroupBlocking(grace: Duration = .seconds(5)) {
        signalProcessGroup(SIGTERM)
        if (try? waitUntilBlocking(timeout: grace, "process group \(pid) to exit", { self.processGroupIsGone })) == nil {
            signalProcessGroup(SIGKILL)
            try? waitUntilBlocking(timeout: .seconds(5), "process group \(pid) to exit after SIGKILL") {
                self.processGroupIsGone
            }
        }
        _ = try? waitForExitBlocking(timeout: .seconds(5))
        ProcessGroups.unregister(pid)
    }

    /// To the group when there is one; to the process alone when it has not made its group yet
    /// (then it has no workers either).
    public func signalProcessGroup(_ signal: Int32) {
        if kill(-pid, signal) != 0 && errno == ESRCH { self.signal(signal) }
    }
}

private enum ProcessGroups {
    private static let lock = NSLock()
    private static var groups: Set<Int32> = []
    private static var installed = false

    static func register(_ pid: Int32) {
        lock.lock()
        defer { lock.unlock() }
        groups.insert(pid)
        if !installed {
            installed = true
            atexit { ProcessGroups.killAllNow() }
        }
    }

    static func unregister(_ pid: Int32) {
        lock.lock()
        groups.remove(pid)
        lock.unlock()
    }

    private static func killAllNow() {
        lock.lock()
        let remaining = groups
        lock.unlock()
        for pid in remaining { kill(-pid, SIGKILL) }
    }
}
