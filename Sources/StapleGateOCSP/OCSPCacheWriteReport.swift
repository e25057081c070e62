import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import StapleGateTLS

/// Says when the OCSP cache file cannot be written (a full disk, say):
/// each failed batch counted in `staplegate_device_ocsp_cache_write_failures_total`, logged on
/// the first failure and then at most once per `logInterval` while it lasts (the writer retries
/// every few seconds, a line each time would bury the log), and once more when a write succeeds
/// again. Devices see nothing of it: the in-memory cache answers meanwhile.
final class OCSPCacheWriteReport: Sendable {
    private let failures: Counter
    private let logger: Logger?
    private let warning: ThrottledWarning
    /// Since a batch failed and until one is written.
    private let failing = NIOLockedValueBox(false)

    init(logger: Logger?, factory: any MetricsFactory, logInterval: Duration = .seconds(60)) {
        self.logger = logger
        warning = ThrottledWarning(logInterval: .nanoseconds(Int64(logInterval.components.seconds) * 1_000_000_000))
        failures = Counter(label: "staplegate_device_ocsp_cache_write_failures_total", factory: factory)
    }

    /// A batch failed; `kept`: answers held for the next attempt.
    func failed(_ message: String, kept: Int) {
        failures.increment()
        failing.withLockedValue { $0 = true }
        if let count = warning.occurred() {
            logger?.warning("\(message); \(kept) device answer(s) kept in memory and written once it can be (\(count) failed write(s) since the last such line); devices are not affected")
        }
    }

    /// A batch was written; says so if writes had been failing.
    func written(_ count: Int, path: String) {
        let recovered = failing.withLockedValue { failing in defer { failing = false }; return failing }
        guard recovered else { return }
        warning.reset()
        logger?.notice("the OCSP cache \(path) is written again: \(count) device answer(s) kept meanwhile are in it")
    }
}
