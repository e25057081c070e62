import CoreMetrics
import Logging
import NIOCore
import StapleGateTLS

/// Connections turned away before TLS because of the PROXY protocol, and balancer health checks:
/// - `staplegate_proxy_protocol_refused_total{reason}`: `untrusted_source` (not from a
///   `listen.trusted_proxies` address), `bad_header` (missing, malformed, too large, a version
///   not accepted), `timeout` (no complete header within the handshake timeout);
/// - `staplegate_proxy_protocol_health_checks_total`: v2 LOCAL connections (balancer checks),
///   closed quietly.
/// Refusals are logged at warning at most once a second per reason, with the count since the
/// last line and the last one's details: a misconfigured balancer or a scan is seen, not flooded.
final class ProxyProtocolRefusals: Sendable {
    enum Reason: String, Sendable, CaseIterable {
        case untrustedSource = "untrusted_source"
        case badHeader = "bad_header"
        case timeout
    }

    private let logger: Logger
    private let counters: [Reason: Counter]
    private let throttles: [Reason: ThrottledWarning]
    private let healthChecks: Counter

    init(logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory,
         now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.logger = logger
        counters = Dictionary(uniqueKeysWithValues: Reason.allCases.map { reason in
            (reason, Counter(label: "staplegate_proxy_protocol_refused_total", dimensions: [("reason", reason.rawValue)],
                             factory: metricsFactory))
        })
        throttles = Dictionary(uniqueKeysWithValues: Reason.allCases.map { ($0, ThrottledWarning(now: now)) })
        healthChecks = Counter(label: "staplegate_proxy_protocol_health_checks_total", factory: metricsFactory)
    }

    /// `peer`: the address the connection came from; `detail`: what was wrong, in words.
    func refused(_ reason: Reason, peer: String, detail: String) {
        counters[reason]?.increment()
        guard let count = throttles[reason]?.occurred() else { return }
        let more = count > 1 ? " (\(count) connections refused so since the last line)" : ""
        logger.warning("connection refused before TLS: \(detail)\(more)", metadata: [
            "remote": "\(peer)", "proxy_protocol.refused": "\(reason.rawValue)", "refused": "\(count)",
        ])
    }

    func healthCheck() {
        healthChecks.increment()
    }
}
