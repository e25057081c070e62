import Foundation
import Logging
import NIOCore
import StapleGateAdmission
import StapleGateProxy
import StapleGateTLS

/// Decides, once the device's TLS handshake has succeeded, whether its MQTT session goes to
/// the broker: its first packet must be a well-formed CONNECT within the size cap and time
/// limit, claiming what its certificate allows. Only then is a broker dialled and the CONNECT
/// (rewritten when the username comes from the certificate) forwarded; the rest of the session
/// passes untouched. Refusals answer with a CONNACK in the device's MQTT version, then close.
final class MQTTAdmissionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case awaitingHandshake
        /// `received`: the device's plaintext so far (its CONNECT, perhaps more).
        case awaitingConnect(received: ByteBuffer, certificate: X509Certificate?)
        case decided
    }

    struct Settings {
        let upstream: UpstreamConfiguration
        /// Every broker's state, shared by all sessions: which to try first.
        let brokers: BrokerHealth
        let admission: AdmissionConfiguration
        let liveSessions: LiveSessions?
        /// Until when publishes of this device identity are traced (nil: not traced).
        let messageTraceUntil: @Sendable (String) -> Date?
        /// Where the proxy reports sessions and relayed traffic; nil: not measured.
        var proxyMetrics: ProxyMetrics? = nil
        /// What to write first on the broker connection for an admitted device (its identity and
        /// handshake): the PROXY header of `upstream.proxy_protocol`; nil: nothing.
        var upstreamPreamble: ((String, TLSHandshakeSummary?) -> [UInt8])? = nil
    }

    private let settings: Settings
    private let tracer: ConnectionTracer
    private var logger: Logger
    private var state: State = .awaitingHandshake
    private var connectDeadline: Scheduled<Void>?
    /// The device's TLS handshake, once completed (for the broker's PROXY header).
    private var handshake: TLSHandshakeSummary?

    init(settings: Settings, tracer: ConnectionTracer, logger: Logger) {
        self.settings = settings
        self.tracer = tracer
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed, case .awaitingConnect = state {
            // A device (or health check) that leaves before its CONNECT: closed now, not at the timeout.
            refuse("the device closed the connection before sending a complete CONNECT", connack: [], context: context)
            return
        }
        if case let .handshakeCompleted(summary)? = event as? TLSEvent, case .awaitingHandshake = state {
            handshake = summary
            logger[metadataKey: "device"] = "\(summary.deviceIdentity)"
            state = .awaitingConnect(received: context.channel.allocator.buffer(capacity: 0),
                                     certificate: summary.deviceCertificate)
            let timeout = settings.admission.connectTimeout
            connectDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) { [self] in
                refuse("no CONNECT within \(timeout.timeInterval.formatted()) s of the TLS handshake", connack: [], context: context)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .awaitingConnect = state {
            state = .decided
            connectDeadline?.cancel()
            tracer.record(.admission, "refused: the connection ended before a complete CONNECT", failure: true,
                          details: ["reason": "the connection ended before a complete CONNECT"])
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .awaitingConnect(var received, let certificate) = state else { return }
        var bytes = unwrapInboundIn(data)
        state = .decided  // while `received` is out of the enum: no copy on write
        received.writeBuffer(&bytes)
        state = .awaitingConnect(received: received, certificate: certificate)
        switch MQTTConnectParser.parse(received, maximumPacketSize: settings.admission.maximumConnectBytes) {
        case .needMoreBytes:
            return
        case let .refused(refusal):
            // The refusal itself is the admission event (one failure per refused device).
            tracer.record(.connect, "first packet is not an acceptable CONNECT", details: ["reason": refusal.reason])
            refuse(refusal.reason, connack: refusal.connackBytes, context: context)
        case let .connect(connect, packetLength):
            judge(connect, packetLength: packetLength, received: received, certificate: certificate, context: context)
        }
    }

    private func judge(_ connect: MQTTConnect, packetLength: Int, received: ByteBuffer, certificate: X509Certificate?,
                       context: ChannelHandlerContext) {
        tracer.record(.connect, "CONNECT: client id \"\(connect.clientID)\", MQTT \(connect.protocolVersion), keepalive \(connect.keepAlive) s\(connect.cleanStart ? ", clean start" : "")\(connect.will.map { ", will on \"\($0.topic)\"" } ?? "")",
                      details: ["client_id": connect.clientID, "protocol": "\(connect.protocolVersion)",
                                "keepalive": "\(connect.keepAlive)", "clean_start": "\(connect.cleanStart)",
                                "username": connect.username ?? "", "will_topic": connect.will?.topic ?? ""])
        let version = connect.protocolVersion
        guard let certificate, let identity = DeviceIdentity.of(certificate, source: settings.admission.identity) else {
            let reason = "the device certificate has no \(settings.admission.identity.rawValue) to take the identity from"
            refuse(reason, connack: MQTTConnack.bytes(for: .notAuthorized, version: version), context: context)
            return
        }
        if settings.admission.clientIDMustMatchIdentity, connect.clientID != identity {
            let reason = "client id \"\(connect.clientID)\" is not the certificate's identity \"\(identity)\""
            refuse(reason, connack: MQTTConnack.bytes(for: .identifierRejected, version: version), context: context)
            return
        }
        // Last of the checks, so a device refused for what it is hears that, not "busy". Checked and
        // taken atomically across event loops; given back when this connection closes.
        if let sessions = settings.liveSessions, !sessions.reserveSlot(for: context.channel) {
            // Logged at warning by LiveSessions, at most once a second for all such devices.
            refuse(sessions.capReachedReason, connack: MQTTConnack.bytes(for: .serverBusy, version: version), context: context,
                   logLevel: .debug)
            return
        }
        // Registered before the broker is dialled: a recheck that refused the certificate since
        // the handshake judged it has barred it (see `LiveSessions.bar`).
        if let sessions = settings.liveSessions,
           !sessions.admitted(context.channel, certificate: certificate, identity: identity,
                              connectionID: tracer.connectionID, remoteAddress: tracer.remoteAddress) {
            refuse("the certificate was refused by a recheck while this connection was being admitted",
                   connack: MQTTConnack.bytes(for: .notAuthorized, version: version), context: context)
            return
        }
        var forwarded: ByteBuffer
        var note = "admitted as \(identity)"
        if settings.admission.usernameFromCertificate {
            forwarded = context.channel.allocator.buffer(bytes: connect.replacingCredentials(username: identity).encoded())
            note += "; username set from the certificate\(connect.password == nil ? "" : ", password dropped")"
        } else {
            forwarded = received.getSlice(at: received.readerIndex, length: packetLength)!
        }
        // Whatever followed the CONNECT in the same reads belongs to the session.
        var rest = received.getSlice(at: received.readerIndex + packetLength, length: received.readableBytes - packetLength)!
        forwarded.writeBuffer(&rest)

        connectDeadline?.cancel()
        state = .decided
        tracer.record(.admission, note, details: ["identity": identity])
        logger.info("\(note)", metadata: ["mqtt.client_id": "\(connect.clientID)", "mqtt.protocol": "\(version)"])
        // An empty client id (the broker assigns one; no persistent session) still spreads, by identity.
        let hashKey = connect.clientID.isEmpty ? identity : connect.clientID
        let proxy = ProxySessionHandler(configuration: settings.upstream, brokers: settings.brokers, hashKey: hashKey,
                                        logger: logger, farewell: MQTTConnack.bytes(for: .serverUnavailable, version: version),
                                        metrics: settings.proxyMetrics, preamble: settings.upstreamPreamble?(identity, handshake))
        do {
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandler(proxy, position: .after(self))
            if let until = settings.messageTraceUntil(identity) {
                let messageTraceUntil = settings.messageTraceUntil
                try pipeline.addHandler(MessageTraceHandler(version: version, until: { messageTraceUntil(identity) }, tracer: tracer),
                                        position: .before(self))
                tracer.record(.admission, "message trace on for this session until \(until.iso8601String)")
            }
        } catch {
            logger.error("cannot start the proxy session: \(error)")
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(forwarded))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Answers with `connack` (if the version has one for the reason) and closes.
    private func refuse(_ reason: String, connack: [UInt8], context: ChannelHandlerContext,
                        logLevel: Logger.Level = .warning) {
        guard case .awaitingConnect = state else { return }
        state = .decided
        connectDeadline?.cancel()
        tracer.record(.admission, "refused: \(reason)", failure: true, details: ["reason": reason])
        logger.log(level: logLevel, "MQTT session refused: \(reason)")
        guard !connack.isEmpty else {
            context.close(promise: nil)
            return
        }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: connack))).assumeIsolated()
            .whenComplete { _ in context.close(promise: nil) }
    }
}
