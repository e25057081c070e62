import CoreMetrics
import Logging
import NIOCore
import StapleGateTLS

/// Devices turned away because the session cap was reached. Each is counted in
/// `staplegate_sessions_refused_total{reason="session_cap"}`; the log gets a warning at most once
/// per `logInterval`, saying how many were refused since the previous one, so that a whole fleet
/// reconnecting against a full gateway does not flood the journal with one line per device.
final class SessionCapRefusals: Sendable {
    private let capacity: Int
    private let logger: Logger
    private let counter: Counter
    private let throttle: ThrottledWarning

    init(capacity: Int, logger: Logger, metricsFactory: any MetricsFactory, logInterval: TimeAmount = .seconds(1),
         now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.capacity = capacity
        self.logger = logger
        throttle = ThrottledWarning(logInterval: logInterval, now: now)
        counter = Counter(label: "staplegate_sessions_refused_total", dimensions: [("reason", "session_cap")],
                          factory: metricsFactory)
    }

    func refused() {
        counter.increment()
        guard let count = throttle.occurred() else { return }
        let devices = count == 1 ? "1 device" : "\(count) devices"
        // At most one line per interval: "refused" counts every device since the previous line.
        logger.warning("session cap of \(capacity) reached: refused \(devices) (CONNACK \"server busy\")",
                       metadata: ["max_sessions": "\(capacity)", "refused": "\(count)"])
    }
}
