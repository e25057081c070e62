import CoreMetrics
import NIOCore
import StapleGateProxy
import StapleGateTLS

/// What the device listener reports through swift-metrics (exported by the gateway's metrics
/// backend; with none bootstrapped they cost nothing):
/// - `staplegate_connections_active` (gauge), `staplegate_connections_total`: TCP connections
///   accepted from devices (including those refused before TLS);
/// - `staplegate_handshakes_total{result}`: TLS handshakes by outcome, `result` one of
///   `HandshakeResult`;
/// - `staplegate_handshake_duration_seconds` (timer): completed handshakes, from the first
///   byte sent to the device's Finished;
/// - the proxy's metrics (`ProxyMetrics`): sessions, relayed bytes and messages, upstream failures;
///   and each broker's (`BrokerMetrics`, made by the gateway's `BrokerHealth`): up, connects by result.
public struct GatewayMetrics: Sendable {
    public enum HandshakeResult: String, Sendable, CaseIterable {
        case ok
        /// Completed by resuming an earlier session.
        case resumed
        /// Failed for a reason other than the device certificate check (protocol, chain, timeout, left).
        case failed
        /// The device certificate's OCSP status is revoked.
        case revoked
        /// The device certificate was refused by OCSP policy for another reason (status
        /// unknown, responder unreachable, no responder).
        case refused
    }

    public static let handshakeDurationLabel = "staplegate_handshake_duration_seconds"
    public static let responderLatencyLabel = "staplegate_device_ocsp_responder_latency_seconds"

    /// Histogram buckets for the duration timers, by label, for backends that bucket: a
    /// handshake takes ~1 ms on loopback and up to the handshake timeout over a poor link; an
    /// OCSP responder answers in a few ms nearby and up to its timeout when struggling.
    public static let durationBuckets: [String: [Duration]] = [
        handshakeDurationLabel: [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                                 .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                 .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)],
        responderLatencyLabel: [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                .milliseconds(2500), .seconds(5), .seconds(10)],
    ]

    let connectionsActive: Meter
    let connectionsTotal: Counter
    private let handshakes: [HandshakeResult: Counter]
    private let handshakeDuration: Timer
    public let proxy: ProxyMetrics
    /// For the metrics made as brokers are configured (`BrokerHealth`: one set per broker).
    let factory: any MetricsFactory

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        connectionsActive = Meter(label: "staplegate_connections_active", factory: factory)
        connectionsTotal = Counter(label: "staplegate_connections_total", factory: factory)
        // Every result exists from the start (at 0), so rate() and alerts see the series before
        // the first failure.
        handshakes = Dictionary(uniqueKeysWithValues: HandshakeResult.allCases.map { result in
            (result, Counter(label: "staplegate_handshakes_total", dimensions: [("result", result.rawValue)], factory: factory))
        })
        handshakeDuration = Timer(label: Self.handshakeDurationLabel, factory: factory)
        proxy = ProxyMetrics(factory: factory)
    }

    /// A device connection accepted; the gauge drops again when it closes.
    func connectionAccepted(_ channel: Channel) {
        connectionsTotal.increment()
        connectionsActive.increment()
        channel.closeFuture.whenComplete { [connectionsActive] _ in connectionsActive.decrement() }
    }

    func handshakeEnded(_ result: HandshakeResult, duration: Duration? = nil) {
        handshakes[result]?.increment()
        if let duration { handshakeDuration.recordNanoseconds(Int64(duration.timeInterval * 1e9)) }
    }
}

/// Counts one connection's TLS handshake in `GatewayMetrics`, then leaves the pipeline: the
/// data path that follows pays nothing for it. Sits right after the TLS handler.
final class HandshakeMetricsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let metrics: GatewayMetrics
    /// The certificate check's refusal, announced before the handshake fails with it.
    private var refusal: DeviceCertificateRefusal?

    init(metrics: GatewayMetrics) {
        self.metrics = metrics
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        var ended = false
        switch event {
        case let TLSEvent.deviceCertificateJudged(_, verdict, _):
            if case let .reject(refusal, _) = verdict { self.refusal = refusal }
        case let TLSEvent.handshakeCompleted(summary):
            metrics.handshakeEnded(summary.resumed ? .resumed : .ok, duration: summary.duration)
            ended = true
        case TLSEvent.handshakeFailed:
            switch refusal {
            case .revoked?: metrics.handshakeEnded(.revoked)
            case .some: metrics.handshakeEnded(.refused)
            case nil: metrics.handshakeEnded(.failed)
            }
            ended = true
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
        if ended { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }
}
