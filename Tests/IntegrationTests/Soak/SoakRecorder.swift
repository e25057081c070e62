import Foundation

/// The ledger behind a lock, with the run's clock: devices on several event loops and the
/// operator's task write to it at once.
final class SoakRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var ledger = SoakLedger()
    private let start = DispatchTime.now().uptimeNanoseconds
    /// Devices whose session is open right now (for the samples).
    private var open = 0

    /// Seconds since the run started.
    var now: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    /// A line on the test's output, so a long run shows where it is.
    func progress(_ message: String) {
        print(String(format: "soak [%7.1f s] ", now) + message)
        fflush(stdout)
    }

    func read<T>(_ body: (SoakLedger) -> T) -> T { lock.withLock { body(ledger) } }
    func update(_ body: (inout SoakLedger) -> Void) { lock.withLock { body(&ledger) } }

    var openSessions: Int { lock.withLock { open } }

    /// Returns the admission's index, for `closed(admission:)`.
    func admitted(_ device: String, connectStarted: Double) -> Int {
        let at = now
        return lock.withLock {
            open += 1
            ledger.admissions.append(.init(device: device, connectStarted: connectStarted, admitted: at))
            return ledger.admissions.count - 1
        }
    }

    func closed(admission index: Int) {
        let at = now
        lock.withLock {
            open -= 1
            ledger.admissions[index].closed = at
        }
    }

    func failed(_ device: String, _ reason: String) {
        let at = now
        lock.withLock { ledger.failures.append(.init(device: device, at: at, reason: reason)) }
    }

    func published(_ device: String, _ number: Int, again: Bool) {
        lock.withLock {
            ledger.published[device, default: []].insert(number)
            if again { ledger.resent[device, default: []].insert(number) }
        }
    }

    func acknowledged(_ device: String, _ number: Int) {
        lock.withLock { _ = ledger.acknowledged[device, default: []].insert(number) }
    }
}
