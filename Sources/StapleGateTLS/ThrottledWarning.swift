import NIOConcurrencyHelpers
import NIOCore

/// Decides when a warning that may fire for every connection of a fleet gets a log line: at
/// most once per `logInterval`, the line then saying how many happened since the previous one,
/// so that a reconnect storm does not flood the journal with one line per device. Shared by the
/// gateway's warnings and the stores' write failures.
package final class ThrottledWarning: Sendable {
    private let logInterval: TimeAmount
    private let now: @Sendable () -> NIODeadline

    private struct State {
        var lastLine: NIODeadline?
        /// Occurrences since the last line.
        var unlogged = 0
    }

    private let state = NIOLockedValueBox(State())

    package init(logInterval: TimeAmount = .seconds(1), now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.logInterval = logInterval
        self.now = now
    }

    /// Counts one occurrence. Returns how many the line due now reports, or nil when no line
    /// is due yet.
    package func occurred() -> Int? {
        let time = now()
        return state.withLockedValue { state -> Int? in
            state.unlogged += 1
            if let last = state.lastLine, time - last < logInterval { return nil }
            defer { state.lastLine = time; state.unlogged = 0 }
            return state.unlogged
        }
    }

    /// Forgets the last line: the next occurrence is logged at once (a failure that ended and
    /// began again is news).
    package func reset() {
        state.withLockedValue { $0 = State() }
    }
}
