import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StapleGateProxyProtocol
import StapleGateTLS

/// `listen.per_source_connection_rate`: new connections per second from one source address (the
/// device's own, from the PROXY header behind a balancer), as a token bucket per address that
/// holds `rate` tokens and refills at `rate` a second. A connection past it is closed before TLS,
/// counted (`staplegate_connections_refused_total{reason="source_rate"}`) and logged at most once a
/// second: one host reconnecting in a loop, or opening connections to exhaust the handshake
/// slots, costs the gateway a socket accept and a close, not a handshake.
final class SourceRateLimit: Sendable {
    let rate: Int

    private struct Bucket {
        var tokens: Double
        var refilled: NIODeadline
    }

    /// The most addresses remembered; beyond, buckets full again are forgotten first.
    static let maximumSources = 100_000

    private let buckets = NIOLockedValueBox<[String: Bucket]>([:])
    private let refused: Counter
    private let warning = ThrottledWarning()
    private let logger: Logger

    init(rate: Int, logger: Logger, factory: any MetricsFactory) {
        self.rate = rate
        self.logger = logger
        refused = Counter(label: "staplegate_connections_refused_total", dimensions: [("reason", "source_rate")], factory: factory)
    }

    /// Whether a new connection from `source` (an address, without port) is within its rate;
    /// counts and logs it when it is not.
    func admits(_ source: String, now: NIODeadline = .now()) -> Bool {
        let capacity = Double(rate)
        let admitted = buckets.withLockedValue { buckets -> Bool in
            var bucket = buckets[source] ?? Bucket(tokens: capacity, refilled: now)
            let elapsed = Double((now - bucket.refilled).nanoseconds) / 1e9
            bucket.tokens = min(capacity, bucket.tokens + max(0, elapsed) * capacity)
            bucket.refilled = now
            let admitted = bucket.tokens >= 1
            if admitted { bucket.tokens -= 1 }
            if buckets[source] == nil, buckets.count >= Self.maximumSources { Self.forgetIdle(&buckets, now: now) }
            buckets[source] = bucket
            return admitted
        }
        if !admitted {
            refused.increment()
            if let count = warning.occurred() {
                logger.warning("connection refused before TLS: \(source) opened more than \(rate) new connections in a second (listen.per_source_connection_rate; \(count) refused since the last such line)")
            }
        }
        return admitted
    }

    /// The address part of an endpoint; nil for a Unix socket (not limited).
    static func address(of endpoint: ProxyEndpoint) -> String? {
        switch endpoint {
        case let .ipv4(address, _): "\(address)"
        case let .ipv6(address, _): "\(address)"
        case .unix: nil
        }
    }

    /// A full bucket (idle for a second or more) says nothing a new one would not.
    private static func forgetIdle(_ buckets: inout [String: Bucket], now: NIODeadline) {
        buckets = buckets.filter { now - $0.value.refilled < .seconds(1) }
        // Still full: as many sources as that at once are no single host's doing; start over.
        if buckets.count >= maximumSources { buckets.removeAll(keepingCapacity: true) }
    }
}
