import CoreMetrics
import Logging
import NIOConcurrencyHelpers

/// Says when the OCSP cache file cannot be written (a full disk, say):
/// each failed batch counted in `staplegate_device_ocsp_cache_write_failures_total`, logged on
/// the first failure and then at most once per `logInterval` while it lasts (the writer retries
/// every few seconds, a line each time would bury the log), and once more when a write succeeds
/// again. Devices see nothing of it: the in-memory cache answers meanwhile.
final class OCSPCacheWriteReport: Sendable {
    private let failures: Counter
    private let logger: Logger?
    private let logInterval: Duration

    private struct State {
        var failing = false
        var lastLine: ContinuousClock.Instant?
        /// Failed batches since the last line.
        var unlogged = 0
    }

    private let state = NIOLockedValueBox(State())

    init(logger: Logger?, factory: any MetricsFactory, logInterval: Duration = .seconds(60)) {
        self.logger = logger
        self.logInterval = logInterval
        failures = Counter(label: "staplegate_device_ocsp_cache_write_failures_total", factory: factory)
    }

    /// A batch failed; `kept`: answers held for the next attempt.
    func failed(_ message: String, kept: Int) {
        failures.increment()
        let now = ContinuousClock.now
        let count = state.withLockedValue { state -> Int? in
            state.failing = true
            state.unlogged += 1
            if let last = state.lastLine, now - last < logInterval { return nil }
            defer { state.lastLine = now; state.unlogged = 0 }
            return state.unlogged
        }
        if let count {
            logger?.warning("\(message); \(kept) device answer(s) kept in memory and written once it can be (\(count) failed write(s) since the last such line); devices are not affected")
        }
    }

    /// A batch was written; says so if writes had been failing.
    func written(_ count: Int, path: String) {
        let recovered = state.withLockedValue { state -> Bool in
            defer { state.failing = false; state.lastLine = nil; state.unlogged = 0 }
            return state.failing
        }
        if recovered {
            logger?.notice("the OCSP cache \(path) is written again: \(count) device answer(s) kept meanwhile are in it")
        }
    }
}
