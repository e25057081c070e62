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
    /// What the device-status cache holds for a certificate: the OCSP details of a check.
    private let deviceStatus: (@Sendable (X509Certificate) -> CachedOCSPStatus?)?
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

    init(tracer: ConnectionTracer, identitySource: AdmissionConfiguration.IdentitySource,
         deviceStatus: (@Sendable (X509Certificate) -> CachedOCSPStatus?)? = nil) {
        self.tracer = tracer
        self.identitySource = identitySource
        self.deviceStatus = deviceStatus
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let TLSEvent.deviceCertificateJudged(certificate, verdict):
            identify(certificate)
            recordCheck(verdict, details: deviceStatus?(certificate)?.traceDetails ?? [:])
        case let TLSEvent.handshakeCompleted(summary):
            if let certificate = summary.deviceCertificate {
                identify(certificate)
                tracer.record(.clientCertificate, "certificate \(certificate.subject), issued by \(certificate.issuer)",
                              details: ["subject": certificate.subject, "issuer": certificate.issuer,
                                        "serial": certificate.serialHex, "not_after": certificate.notAfter.map(Self.format) ?? "-"])
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
            tracer.record(.disconnect,
                          "disconnected (closed by \(who)) after \(String(format: "%.1f", seconds)) s: \(bytesFromDevice) bytes in \(packetsFromDevice.packets) packets from the device, \(bytesToDevice) bytes in \(packetsToDevice.packets) packets to it",
                          details: ["closed_by": who, "duration_s": String(format: "%.3f", seconds),
                                    "bytes_from_device": "\(bytesFromDevice)", "bytes_to_device": "\(bytesToDevice)",
                                    "packets_from_device": "\(packetsFromDevice.packets)",
                                    "packets_to_device": "\(packetsToDevice.packets)"])
        }
        context.fireChannelInactive()
    }

    private func identify(_ certificate: X509Certificate) {
        let identity = DeviceIdentity.of(certificate, source: identitySource) ?? certificate.commonName ?? certificate.subject
        tracer.identify(device: identity, serial: certificate.serialHex)
    }

    /// `details`: the OCSP status behind the verdict (responder, status, validity, revocation,
    /// latency), when the cache has one.
    private func recordCheck(_ verdict: DeviceCertificateVerdict, details: [String: String]) {
        var details = details
        details["detail"] = verdict.reason
        switch verdict {
        case let .accept(note):
            details["verdict"] = "accept"
            details["ocsp.cache"] = note.contains("(cached until") ? "hit" : "miss"
            tracer.record(.ocspCheck, "certificate check passed: \(note)", details: details)
        case let .reject(refusal, reason):
            details["verdict"] = "reject"
            details["refusal"] = "\(refusal)"
            details["ocsp.cache"] = reason.contains("cached until") ? "hit" : "miss"
            tracer.record(.ocspCheck, "certificate check refused the device: \(reason)", failure: true, details: details)
        }
    }

    static func format(_ date: Date) -> String { date.formatted(.iso8601) }
}
