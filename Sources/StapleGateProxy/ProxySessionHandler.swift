#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix

/// What the proxy tells the handlers after it (traces), as user inbound events. `endpoint` is
/// the broker's name as configured (`127.0.0.1:1883`, `unix:/run/mosquitto/mosquitto.sock`).
public enum ProxyEvent: Sendable {
    case upstreamConnected(endpoint: String, duration: Duration)
    /// A broker could not be reached and `next` is tried now (several brokers configured).
    case upstreamAttemptFailed(endpoint: String, reason: String, next: String)
    /// No broker could be reached (`endpoint` is the last one tried); the device is being
    /// disconnected (after `farewell`, if any, was sent).
    case upstreamFailed(endpoint: String, reason: String)
    /// Why an established session is ending, when the gateway knows: `closedBy` is "device",
    /// "broker" or "gateway". Fired on the device's pipeline just before it closes.
    case sessionEnding(closedBy: String, reason: String)
}

/// Joins an admitted device connection to a broker. Added to the device pipeline once the
/// device is admitted; connects to the first broker of the session's plan that accepts (see
/// `BrokerHealth` and `BrokerDialer`), holds the device's bytes (and its reads) until that
/// connection is up, then hands over to a `GlueHandler` pair and removes itself.
public final class ProxySessionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        /// `heldBytes`: device bytes that arrived before the broker connection was up.
        case connecting(heldBytes: [ByteBuffer], deviceInputClosed: Bool, readRequested: Bool)
        case joined
        case failed
    }

    private let configuration: UpstreamConfiguration
    private let brokers: BrokerHealth
    /// What `client_id_hash` ranks the brokers by.
    private let hashKey: String
    private let logger: Logger
    /// Sent to the device before it is disconnected because no broker can be reached: a
    /// CONNACK "server unavailable" in the device's MQTT version, so it backs off as the
    /// protocol intends instead of seeing a bare disconnect.
    private let farewell: [UInt8]?
    private let metrics: ProxyMetrics?
    /// Written first on the broker connection, before any device byte: a PROXY protocol header
    /// (`upstream.proxy_protocol`), so the broker learns who the device is.
    private let preamble: [UInt8]?
    private var state: State = .connecting(heldBytes: [], deviceInputClosed: false, readRequested: false)

    /// - Parameters:
    ///   - hashKey: the device's MQTT client id, for `client_id_hash`;
    ///   - preamble: bytes the broker must read before the device's (a PROXY header).
    public init(configuration: UpstreamConfiguration, brokers: BrokerHealth, hashKey: String, logger: Logger,
                farewell: [UInt8]? = nil, metrics: ProxyMetrics? = nil, preamble: [UInt8]? = nil) {
        self.preamble = preamble
        self.configuration = configuration
        self.brokers = brokers
        self.hashKey = hashKey
        self.logger = logger
        self.farewell = farewell
        self.metrics = metrics
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let plan = brokers.plan(for: configuration, hashKey: hashKey)
        let dialer = BrokerDialer(upstream: configuration, health: brokers)
        dialer.dial(plan, on: context.eventLoop) { broker, failure, next in
            guard context.channel.isActive else { return false }  // the device left: stop dialling
            self.logger.warning("broker unreachable at \(broker): \(failure.reason); trying \(next)")
            context.pipeline.fireUserInboundEventTriggered(
                ProxyEvent.upstreamAttemptFailed(endpoint: "\(broker)", reason: failure.reason, next: "\(next)"))
            return true
        }.assumeIsolated().whenComplete { result in
            switch result {
            case let .success(connected):
                self.logger.info("connected to broker \(connected.broker)", metadata: [
                    "upstream.connect_ms": "\(Double(Int(connected.duration / .microseconds(1))) / 1000)",
                ])
                // From the head of the pipeline, so handlers before this one (traces) hear it too.
                context.pipeline.fireUserInboundEventTriggered(
                    ProxyEvent.upstreamConnected(endpoint: "\(connected.broker)", duration: connected.duration))
                self.join(context: context, upstream: connected.channel, broker: connected.broker)
            case let .failure(error):
                self.state = .failed
                guard context.channel.isActive else {
                    self.logger.debug("the device left while its broker was being connected")
                    return
                }
                self.metrics?.upstreamFailed()
                let attempts = (error as? BrokerDialer.Exhausted)?.attempts ?? []
                let last = attempts.last ?? (plan.candidates[0].broker, BrokerConnectFailure(error))
                let tried = attempts.count > 1 ? "; every broker tried (\(attempts.map { "\($0.broker)" }.joined(separator: ", ")))" : ""
                self.logger.error("broker unreachable at \(last.broker): \(last.failure.reason)\(tried); disconnecting device")
                context.pipeline.fireUserInboundEventTriggered(
                    ProxyEvent.upstreamFailed(endpoint: "\(last.broker)", reason: last.failure.reason))
                self.disconnectDevice(context: context)
            }
        }
    }

    private func disconnectDevice(context: ChannelHandlerContext) {
        guard let farewell, context.channel.isActive else {
            context.close(promise: nil)
            return
        }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: farewell))).assumeIsolated()
            .whenComplete { _ in context.close(promise: nil) }
    }

    private func join(context: ChannelHandlerContext, upstream: Channel, broker: UpstreamConfiguration.Endpoint) {
        guard case let .connecting(heldBytes, deviceInputClosed, readRequested) = state,
              context.channel.isActive else {
            upstream.close(promise: nil)  // the device left while we were connecting
            return
        }
        state = .joined
        // The session's later log lines (its end, errors) name the broker it went to.
        var sessionLogger = logger
        sessionLogger[metadataKey: "broker"] = "\(broker)"
        let (deviceGlue, upstreamGlue) = GlueHandler.matchedPair(logger: sessionLogger, metrics: metrics)
        do {
            try upstream.pipeline.syncOperations.addHandler(upstreamGlue)
            var deviceHandlers: [ChannelHandler] = []
            if let idle = configuration.idleTimeout {
                deviceHandlers.append(SessionIdleHandler(timeout: TimeAmount(idle)))
            }
            deviceHandlers.append(deviceGlue)
            try context.pipeline.syncOperations.addHandlers(deviceHandlers, position: .after(self))
        } catch {
            logger.error("cannot join device to broker: \(error)")
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        metrics?.sessionStarted(device: context.channel)
        // The first bytes on the broker connection: the preamble, then the device's CONNECT and
        // whatever followed it.
        if let preamble { upstream.write(upstream.allocator.buffer(bytes: preamble), promise: nil) }
        for bytes in heldBytes {
            deviceGlue.countRelayed(bytes)
            upstream.write(bytes, promise: nil)
        }
        upstream.flush()
        if deviceInputClosed { upstream.close(mode: .output, promise: nil) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        // Through the whole pipeline, so the glue's backpressure check sees the request (this
        // handler's own context is detached once removed).
        if readRequested { context.channel.read() }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .connecting(var heldBytes, let inputClosed, let readRequested):
            heldBytes.append(unwrapInboundIn(data))
            state = .connecting(heldBytes: heldBytes, deviceInputClosed: inputClosed, readRequested: readRequested)
        case .joined:
            context.fireChannelRead(data)
        case .failed:
            break
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed,
           case let .connecting(heldBytes, _, readRequested) = state {
            state = .connecting(heldBytes: heldBytes, deviceInputClosed: true, readRequested: readRequested)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Reads from the device wait until the broker can take the bytes.
    public func read(context: ChannelHandlerContext) {
        switch state {
        case let .connecting(heldBytes, inputClosed, _):
            state = .connecting(heldBytes: heldBytes, deviceInputClosed: inputClosed, readRequested: true)
        case .joined:
            context.read()
        case .failed:
            break
        }
    }

    public static func describe(_ error: Error) -> String {
        if let error = error as? ChannelError, case .connectTimeout = error { return "connect timed out" }
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return describe(first.error)
        }
        // NIO's own text names its internal call; the errno's message is what operators know.
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        return "\(error)"
    }
}
