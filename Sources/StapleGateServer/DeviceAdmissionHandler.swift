import Logging
import NIOCore
import StapleGateProxy
import StapleGateTLS

/// Decides, once the device's TLS handshake has succeeded, that its session goes to the broker,
/// and hands the connection to the proxy. Nothing reaches the broker before this point.
final class DeviceAdmissionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let upstream: UpstreamConfiguration
    private var logger: Logger
    /// Where admitted sessions are recorded, so a later revocation can reach them.
    private let liveSessions: LiveSessions?
    private let connectionID: UInt64

    init(upstream: UpstreamConfiguration, logger: Logger, liveSessions: LiveSessions? = nil, connectionID: UInt64 = 0) {
        self.upstream = upstream
        self.logger = logger
        self.liveSessions = liveSessions
        self.connectionID = connectionID
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case let .handshakeCompleted(summary) = event as? TLSEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        logger[metadataKey: "device"] = "\(summary.deviceIdentity)"
        // Installed synchronously: application data decrypted right after this event must
        // already find the proxy in place.
        let proxy = ProxySessionHandler(configuration: upstream, logger: logger)
        do {
            try context.pipeline.syncOperations.addHandler(proxy, position: .after(self))
        } catch {
            logger.error("cannot start the proxy session: \(error)")
            context.close(promise: nil)
            return
        }
        if let liveSessions, let certificate = summary.deviceCertificate {
            liveSessions.admitted(context.channel, certificate: certificate, identity: summary.deviceIdentity,
                                  connectionID: connectionID)
        }
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Plaintext before admission cannot happen (the TLS handler only decrypts after the
        // handshake); drop it rather than let anything unadmitted travel on.
    }
}
