import Foundation
import NIOCore
import StapleGateAdmission
import StapleGateOCSP
import StapleGateProxy
import StapleGateTLS
import StapleGateTrace

/// Turns what happens on one device connection into trace events: the TLS handshake and the
/// certificate checks, the broker connection, and the end of the session with its duration and
/// plaintext bytes each way. Sits right after the TLS handler; only observes, never changes
/// or holds bytes.
final class SessionTraceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    private let tracer: ConnectionTracer
    private let identitySource: AdmissionConfiguration.IdentitySource
    private let opened = NIODeadline.now()
    private var bytesFromDevice = 0
    private var bytesToDevice = 0
    private var packetsFromDevice = MQTTPacketCounter()
    private var packetsToDevice = MQTTPacketCounter()
    /// Who ended the session and why, when a handler after this one said so.
    private var ending: (closedBy: String, reason: String)?
    /// Who ended the session, when it was not the gateway.
    private var deviceClosedFirst = false
    private var closedByGateway = false
    private var admitted = false
    /// The certificate the tracer names the device by.
    private var identified: X509Certificate?

    init(tracer: ConnectionTracer, identitySource: AdmissionConfiguration.IdentitySource) {
        self.tracer = tracer
        self.identitySource = identitySource
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let TLSEvent.deviceCertificateJudged(certificate, verdict, evidence):
            identify(certificate)
            recordCheck(verdict, evidence: evidence)
        case let TLSEvent.handshakeCompleted(summary):
            if let certificate = summary.deviceCertificate {
                identify(certificate)
                let (subject, issuer) = (certificate.subject, certificate.issuer)
                tracer.record(.clientCertificate, "certificate \(subject), issued by \(issuer)",
                              details: ["subject": subject, "issuer": issuer, "serial": tracer.serial ?? certificate.serialHex,
                                        "not_after": certificate.notAfter?.iso8601String ?? "-"])
            }
            tracer.record(.tlsHandshake,
                          "TLS handshake done: \(summary.protocolVersion) \(summary.cipher)\(summary.resumed ? ", resumed" : ""), \(summary.duration.milliseconds) ms",
                          details: ["tls.version": summary.protocolVersion, "tls.cipher": summary.cipher,
                                    "tls.resumed": "\(summary.resumed)", "tls.handshake_ms": "\(summary.duration.milliseconds)"])
        case let TLSEvent.handshakeFailed(reason):
            tracer.record(.tlsFailed, "TLS handshake failed: \(reason)", failure: true, details: ["reason": reason])
        case let ProxyEvent.upstreamConnected(endpoint, duration):
            admitted = true
            tracer.record(.upstream, "connected to the broker at \(endpoint) in \(duration.milliseconds) ms",
                          details: ["endpoint": endpoint, "connect_ms": "\(duration.milliseconds)"])
        case let ProxyEvent.upstreamAttemptFailed(endpoint, reason, next):
            // Not a failure of the session: it goes on to the next broker.
            tracer.record(.upstream, "broker unreachable at \(endpoint): \(reason); trying \(next)",
                          details: ["endpoint": endpoint, "reason": reason, "next": next])
        case let ProxyEvent.upstreamFailed(endpoint, reason):
            tracer.record(.upstream, "broker unreachable at \(endpoint): \(reason)", failure: true,
                          details: ["endpoint": endpoint, "reason": reason])
        case let ProxyEvent.sessionEnding(closedBy, reason):
            if ending == nil { ending = (closedBy, reason) }
        case let channelEvent as ChannelEvent where channelEvent == .inputClosed:
            if !closedByGateway { deviceClosedFirst = true }
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytesFromDevice += buffer.readableBytes
        packetsFromDevice.count(buffer)
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        bytesToDevice += buffer.readableBytes
        packetsToDevice.count(buffer)
        context.write(data, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if !deviceClosedFirst { closedByGateway = true }
        context.close(mode: mode, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if admitted {
            let seconds = Double((NIODeadline.now() - opened).nanoseconds) / 1e9
            var who = deviceClosedFirst ? "device" : (closedByGateway ? "gateway" : "connection lost")
            if let ending, !deviceClosedFirst { who = "\(ending.closedBy): \(ending.reason)" }
            // An MQTT DISCONNECT says who ended the session. Mosquitto closes its socket as soon as
            // it reads the device's, often before the device's own close arrives here: the sockets'
            // order alone named the broker for a device that left as it should.
            if packetsFromDevice.sawDisconnect {
                who = "device"
            } else if packetsToDevice.sawDisconnect {
                who = "broker"  // MQTT 5: the broker's DISCONNECT, with its reason code, reached the device
            }
            tracer.record(.disconnect,
                          "disconnected (closed by \(who)) after \(String(format: "%.1f", seconds)) s: \(bytesFromDevice) bytes in \(packetsFromDevice.packets) packets from the device, \(bytesToDevice) bytes in \(packetsToDevice.packets) packets to it",
                          details: ["closed_by": who, "duration_s": String(format: "%.3f", seconds),
                                    "bytes_from_device": "\(bytesFromDevice)", "bytes_to_device": "\(bytesToDevice)",
                                    "packets_from_device": "\(packetsFromDevice.packets)",
                                    "packets_to_device": "\(packetsToDevice.packets)"])
        }
        context.fireChannelInactive()
    }

    /// Once per certificate: a full handshake judges the device, then completes with the same one.
    private func identify(_ certificate: X509Certificate) {
        if let identified, identified === certificate || identified.isSameCertificate(as: certificate) { return }
        identified = certificate
        let identity = DeviceIdentity.of(certificate, source: identitySource) ?? certificate.commonName ?? certificate.subject
        tracer.identify(device: identity, serial: certificate.serialHex)
    }

    /// `evidence`: the OCSP answer behind the verdict (responder, status, validity, revocation,
    /// latency, whether it was cached), when the gate consulted one.
    private func recordCheck(_ verdict: DeviceCertificateVerdict, evidence: (any DeviceCheckEvidence)?) {
        var details = evidence?.traceDetails ?? [:]
        details["detail"] = verdict.reason
        if let evidence { details["ocsp.cache"] = evidence.fromCache ? "hit" : "miss" }
        switch verdict {
        case let .accept(note):
            details["verdict"] = "accept"
            tracer.record(.ocspCheck, "certificate check passed: \(note)", details: details)
        case let .reject(refusal, reason):
            details["verdict"] = "reject"
            details["refusal"] = "\(refusal)"
            tracer.record(.ocspCheck, "certificate check refused the device: \(reason)", failure: true, details: details)
        }
    }
}
