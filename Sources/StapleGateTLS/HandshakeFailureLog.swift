import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The log lines of failed and timed-out handshakes: the first `burst` of each `interval` one by
/// one, the rest as one summary line at the end of the interval. A connection flood (8 000
/// connections stalling in the handshake) had written a warning line each, burying everything
/// else in the journal; every failure is still counted (`staplegate_handshakes_total`) and kept in
/// the trace, only the log is thinned. Shared by every connection of a gateway, on any event loop.
public final class HandshakeFailureLog: Sendable {
    private let burst: Int
    private let interval: TimeAmount
    /// Where the summary goes: the gateway's logger, without one connection's metadata.
    private let summaryLogger: Logger

    private struct Window {
        var start: NIODeadline
        var logged = 0
        var suppressed = 0
        /// The most severe level among the suppressed lines: the summary's own.
        var level: Logger.Level = .info
        var summaryScheduled = false
    }

    private let window: NIOLockedValueBox<Window>

    public init(burst: Int = 10, interval: TimeAmount = .seconds(10), summaryLogger: Logger) {
        self.burst = burst
        self.interval = interval
        self.summaryLogger = summaryLogger
        window = NIOLockedValueBox(Window(start: .now()))
    }

    /// Logs `message` on `logger` unless this interval's burst is spent; then counts it for the
    /// summary, which `eventLoop` writes when the interval ends.
    public func log(_ logger: Logger, level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
                    on eventLoop: any EventLoop) {
        // Lines the log level drops anyway are neither written nor counted.
        guard logger.logLevel <= level else { return }
        let now = NIODeadline.now()
        let decision = window.withLockedValue { window -> (write: Bool, scheduleAt: NIODeadline?) in
            if window.suppressed == 0, now - window.start >= interval { window = Window(start: now) }
            guard window.logged >= burst else {
                window.logged += 1
                return (true, nil)
            }
            window.suppressed += 1
            window.level = max(window.level, level)
            guard !window.summaryScheduled else { return (false, nil) }
            window.summaryScheduled = true
            return (false, window.start + interval)
        }
        if decision.write { logger.log(level: level, message()) }
        if let deadline = decision.scheduleAt {
            eventLoop.scheduleTask(deadline: deadline) { self.writeSummary() }
        }
    }

    private func writeSummary() {
        let now = NIODeadline.now()
        let (count, level) = window.withLockedValue { window -> (Int, Logger.Level) in
            let taken = (window.suppressed, window.level)
            // The next interval starts now, with its own burst.
            window = Window(start: now)
            return taken
        }
        guard count > 0 else { return }
        summaryLogger.log(level: level, "\(count) more TLS handshake failures in the last \(HandshakeDeadlineHandler.describe(interval)) were not logged one by one (at most \(burst) are); each is counted in staplegate_handshakes_total and kept in the trace")
    }
}
