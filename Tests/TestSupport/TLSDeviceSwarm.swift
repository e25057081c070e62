import Foundation
import Logging
import NIOCore
import NIOPosix
import StapleGateTLS

/// Many devices connecting to the gateway at once, in this process: each connection is a real
/// mutual-TLS handshake by our own OpenSSL handler in the client role (`OpenSSLClientHandler`),
/// on NIO, so hundreds cost no processes. Every connection reports whether it got in, and is
/// then closed.
///
/// In TLS 1.3 a client's handshake is complete before the server has judged the client's
/// certificate (the client sends it with its Finished), so `handshakeCompleted` on the device's
/// side does not mean the gateway admitted it: a refusal arrives as an alert just after. So by
/// default a connection only counts as admitted once the broker behind the gateway answered an
/// MQTT CONNECT with CONNACK "accepted", which nothing but an admitted session can get.
public enum TLSDeviceSwarm {
    public enum Result: Sendable, Equatable, CustomStringConvertible {
        case succeeded
        /// Why not: the handshake's failure, the TLS error that closed it (e.g. "… alert
        /// certificate revoked"), a refused CONNACK, or a timeout.
        case failed(String)

        public var succeeded: Bool { self == .succeeded }

        public var failureReason: String? {
            guard case let .failed(reason) = self else { return nil }
            return reason
        }

        public var description: String {
            switch self {
            case .succeeded: return "succeeded"
            case let .failed(reason): return "failed: \(reason)"
            }
        }
    }

    /// What counts as success.
    public enum Confirmation: Sendable {
        /// The device's TLS handshake completed (in TLS 1.3, before the gateway's verdict).
        case handshake
        /// The handshake completed and the broker answered CONNECT with CONNACK "accepted".
        case mqttConnack
    }

    /// Connects every device at once (one connection per entry; an entry may repeat) to
    /// 127.0.0.1:`port`, verifying the gateway against `trustBundle` and the name `localhost`,
    /// and returns one result per entry, in order. Each connection has `timeout` from its start.
    /// Throws only when a device's certificate or key cannot be loaded.
    public static func connect(port: Int, devices: [(certificate: String, key: String)], trustBundle: String,
                               timeout: Duration, confirmation: Confirmation = .mqttConnack,
                               serverName: String = "localhost") async throws -> [Result] {
        // One context per distinct device: its certificate and key are loaded once.
        var contexts: [String: ClientTLSContext] = [:]
        for device in devices {
            let name = device.certificate + "\n" + device.key
            guard contexts[name] == nil else { continue }
            let context = try ClientTLSContext(caBundleAt: trustBundle)
            try context.useClientCertificate(chain: PEMFile.certificateChain(at: device.certificate),
                                             key: PEMFile.privateKey(at: device.key))
            contexts[name] = context
        }
        let group = MultiThreadedEventLoopGroup.singleton
        let run = UUID().uuidString.prefix(8).lowercased()
        let futures = devices.enumerated().map { index, device in
            attempt(port: port, context: contexts[device.certificate + "\n" + device.key]!, serverName: serverName,
                    clientID: "swarm-\(run)-\(index)", timeout: timeout, confirmation: confirmation,
                    eventLoop: group.next())
        }
        let settled = try await EventLoopFuture.whenAllComplete(futures, on: group.any()).get()
        return settled.map { outcome in
            switch outcome {
            case let .success(result): return result
            case let .failure(error): return .failed("\(error)")
            }
        }
    }

    /// One device's connection; the future always succeeds, with the connection's result.
    private static func attempt(port: Int, context: ClientTLSContext, serverName: String, clientID: String,
                                timeout: Duration, confirmation: Confirmation, eventLoop: EventLoop) -> EventLoopFuture<Result> {
        let promise = eventLoop.makePromise(of: Result.self)
        let tlsErrors = LastWarning()
        // Settles the promise once and closes the connection; only ever called on `eventLoop`.
        let outcome = Outcome(promise: promise)
        let deadline = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            outcome.settle(.failed("no result within \(timeout)"))
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }

        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let logger = Logger(label: "swarm-device") { _ in LastWarningLogHandler(box: tlsErrors) }
                    let tls = try OpenSSLClientHandler(context: context, serverName: serverName, logger: logger)
                    let probe = AdmissionProbe(clientID: clientID, confirmation: confirmation, outcome: outcome,
                                               tlsErrors: tlsErrors)
                    guard !outcome.settled else { throw ChannelError.ioOnClosedChannel }  // timed out already
                    outcome.channel = channel
                    try channel.pipeline.syncOperations.addHandlers([tls, probe])
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .whenFailure { error in outcome.settle(.failed("cannot connect: \(error)")) }
        return promise.futureResult
    }
}

/// The one result of one connection. Lives on the connection's event loop.
private final class Outcome: @unchecked Sendable {
    private let promise: EventLoopPromise<TLSDeviceSwarm.Result>
    private(set) var settled = false
    var channel: Channel?

    init(promise: EventLoopPromise<TLSDeviceSwarm.Result>) {
        self.promise = promise
    }

    func settle(_ result: TLSDeviceSwarm.Result) {
        guard !settled else { return }
        settled = true
        promise.succeed(result)
        channel?.close(promise: nil)
        channel = nil
    }
}

/// After the TLS handler: turns its events, and the broker's CONNACK, into the result.
private final class AdmissionProbe: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let clientID: String
    private let confirmation: TLSDeviceSwarm.Confirmation
    private let outcome: Outcome
    private let tlsErrors: LastWarning
    private var handshakeCompleted = false
    private var received: [UInt8] = []

    init(clientID: String, confirmation: TLSDeviceSwarm.Confirmation, outcome: Outcome, tlsErrors: LastWarning) {
        self.clientID = clientID
        self.confirmation = confirmation
        self.outcome = outcome
        self.tlsErrors = tlsErrors
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? TLSEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch event {
        case .handshakeCompleted:
            handshakeCompleted = true
            switch confirmation {
            case .handshake: outcome.settle(.succeeded)
            case .mqttConnack: context.writeAndFlush(wrapOutboundOut(connectPacket(context.channel.allocator)), promise: nil)
            }
        case let .handshakeFailed(reason):
            outcome.settle(.failed(reason))
        case .deviceCertificateJudged:
            break  // a server-side event; this is the client
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += Array(buffer: unwrapInboundIn(data))
        guard received.count >= 4 else { return }
        guard received[0] == 0x20, received[1] == 0x02 else {
            outcome.settle(.failed("expected CONNACK, got \(received.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " "))"))
            return
        }
        guard received[3] == 0 else {
            outcome.settle(.failed("CONNACK refused the connection (return code \(received[3]))"))
            return
        }
        // DISCONNECT, so the broker logs a clean goodbye; the close follows it out.
        var disconnect = context.channel.allocator.buffer(capacity: 2)
        disconnect.writeBytes([0xE0, 0x00])
        context.writeAndFlush(wrapOutboundOut(disconnect), promise: nil)
        outcome.settle(.succeeded)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let stage = handshakeCompleted ? "after the TLS handshake, before CONNACK" : "during the TLS handshake"
        outcome.settle(.failed(tlsErrors.message.map { "\($0) (\(stage))" } ?? "connection closed \(stage)"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        outcome.settle(.failed("\(error)"))
    }

    /// MQTT 3.1.1 CONNECT: clean session, keepalive 60 s, this connection's client id.
    private func connectPacket(_ allocator: ByteBufferAllocator) -> ByteBuffer {
        let id = Array(clientID.utf8)
        var body: [UInt8] = [0x00, 0x04] + Array("MQTT".utf8) + [0x04, 0x02, 0x00, 0x3C]
        body += [UInt8(id.count >> 8), UInt8(id.count & 0xFF)] + id
        precondition(body.count < 128, "client id too long for a one-byte remaining length")
        var buffer = allocator.buffer(capacity: body.count + 2)
        buffer.writeBytes([0x10, UInt8(body.count)] + body)
        return buffer
    }
}

/// The last warning the device's TLS handler logged ("TLS error from server: … alert
/// certificate revoked"): the reason a connection closed after its handshake.
private final class LastWarning: @unchecked Sendable {
    private let lock = NSLock()
    private var last: String?

    var message: String? { lock.withLock { last } }
    func set(_ message: String) { lock.withLock { last = message } }
}

private struct LastWarningLogHandler: LogHandler {
    let box: LastWarning
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        box.set(event.message.description)
    }
}
