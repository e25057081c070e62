import CoreMetrics
import NIOCore
import StapleGateAdmission

/// What the proxy reports through swift-metrics (exported by the gateway's metrics backend):
/// - `staplegate_sessions_active` (gauge), `staplegate_sessions_total`: device sessions joined
///   to the broker (counted once the broker connection is up);
/// - `staplegate_upstream_failures_total`: admitted devices turned away because the broker
///   could not be reached;
/// - `staplegate_proxied_bytes_total{direction}`, `staplegate_proxied_messages_total{direction}`:
///   plaintext bytes and MQTT packets relayed, `direction` to_broker or to_device.
///
/// The data path never calls into the metrics per packet: each glue side tallies locally and
/// publishes once per read batch (`RelayTally`).
public struct ProxyMetrics: Sendable {
    public enum Direction: String, Sendable, CaseIterable {
        case toBroker = "to_broker"
        case toDevice = "to_device"
    }

    let sessionsActive: Meter
    let sessionsTotal: Counter
    let upstreamFailures: Counter
    let toBroker: RelayCounters
    let toDevice: RelayCounters

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        sessionsActive = Meter(label: "staplegate_sessions_active", factory: factory)
        sessionsTotal = Counter(label: "staplegate_sessions_total", factory: factory)
        upstreamFailures = Counter(label: "staplegate_upstream_failures_total", factory: factory)
        toBroker = RelayCounters(direction: .toBroker, factory: factory)
        toDevice = RelayCounters(direction: .toDevice, factory: factory)
    }

    /// A device session joined to the broker; the gauge drops again when the device channel closes.
    func sessionStarted(device channel: Channel) {
        sessionsTotal.increment()
        sessionsActive.increment()
        channel.closeFuture.whenComplete { [sessionsActive] _ in sessionsActive.decrement() }
    }

    func upstreamFailed() { upstreamFailures.increment() }

    func counters(_ direction: Direction) -> RelayCounters {
        direction == .toBroker ? toBroker : toDevice
    }
}

/// The two counters of one relay direction.
struct RelayCounters: Sendable {
    let bytes: Counter
    let messages: Counter

    init(direction: ProxyMetrics.Direction, factory: any MetricsFactory) {
        let dimensions = [("direction", direction.rawValue)]
        bytes = Counter(label: "staplegate_proxied_bytes_total", dimensions: dimensions, factory: factory)
        messages = Counter(label: "staplegate_proxied_messages_total", dimensions: dimensions, factory: factory)
    }
}

/// One direction of one session: bytes and MQTT packets relayed, accumulated on the event loop
/// and added to the shared counters in one step per read batch (counters are atomics shared by
/// every session, so per-packet updates would be contended work on the hottest path).
struct RelayTally {
    private let counters: RelayCounters
    private var unpublishedBytes = 0
    /// Must see the direction's stream from its first byte: it frames packets by their headers.
    private var packets = MQTTPacketCounter()
    private var publishedPackets = 0

    init(counters: RelayCounters) {
        self.counters = counters
    }

    mutating func count(_ buffer: ByteBuffer) {
        unpublishedBytes += buffer.readableBytes
        packets.count(buffer)
    }

    mutating func publish() {
        if unpublishedBytes > 0 {
            counters.bytes.increment(by: Int64(unpublishedBytes))
            unpublishedBytes = 0
        }
        let newPackets = packets.packets - publishedPackets
        if newPackets > 0 {
            counters.messages.increment(by: Int64(newPackets))
            publishedPackets = packets.packets
        }
    }
}
