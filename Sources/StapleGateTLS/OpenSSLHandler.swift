import Logging
import NIOCore

/// Runs TLS with OpenSSL on one connection: ciphertext in from the channel, plaintext on to the
/// next handler; plaintext writes out, ciphertext to the channel. `OpenSSLServerHandler` (devices)
/// and `OpenSSLClientHandler` (HTTPS OCSP responders) differ only in how their `SSL` is made and
/// who speaks first, as NIOSSL's server and client handlers do.
///
/// Everything runs on the channel's event loop, so there are no locks. The connection moves
/// through `State` one way only: idle → handshaking → established → closed.
public class OpenSSLHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        /// `receivedBytes`: whether the peer has sent anything at all, to tell a TLS failure
        /// from a bare TCP probe (health checks, port scans) that connects and leaves.
        case handshaking(startedAt: NIODeadline, receivedBytes: Bool)
        /// The handshake is paused inside OpenSSL until the `DeviceCertificateGate` has judged
        /// the device's chain (e.g. an OCSP request); bytes arriving meanwhile are only buffered.
        case awaitingVerdict(startedAt: NIODeadline)
        /// `inputClosed`: the peer sent close_notify or FIN. `outputClosed`: we sent close_notify.
        case established(inputClosed: Bool, outputClosed: Bool)
        case closed
    }

    public struct SetupError: Error, CustomStringConvertible {
        public let reason: OpenSSLError
        public var description: String { "cannot create a TLS connection: \(reason)" }
    }

    /// The `SSL`, made when the device's first bytes arrive (a server) or at once (a client).
    /// A connection that never sends anything (a port scan, a probe, a flood of bare TCP
    /// connections) then costs no OpenSSL state: 4.7 KiB instead of 14.5 KiB each.
    private var made: SSLConnection?
    private let makeConnection: () -> SSLConnection?
    private let role: SSLConnection.Role
    private var state: State = .idle
    /// Writes issued before the handshake finished, sent once it has.
    private var writesAwaitingHandshake: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var logger: Logger
    /// Thins failure lines during a flood (shared by a gateway's connections); nil logs each.
    private let failureLog: HandshakeFailureLog?
    /// "device" or "server", in what is logged and reported.
    private var peer: String { role.peerNoun }

    /// Only read in the states that follow its making (bytes received, or a client's start).
    private var connection: SSLConnection {
        guard let made else { preconditionFailure("the TLS connection was used before it was made") }
        return made
    }

    init(role: SSLConnection.Role, made: SSLConnection? = nil, logger: Logger, failureLog: HandshakeFailureLog? = nil,
         makeConnection: @escaping () -> SSLConnection?) {
        self.role = role
        self.made = made
        self.makeConnection = makeConnection
        self.logger = logger
        self.failureLog = failureLog
    }

    private func logFailure(_ context: ChannelHandlerContext, level: Logger.Level, _ message: Logger.Message) {
        if let failureLog {
            failureLog.log(logger, level: level, message, on: context.eventLoop)
        } else {
            logger.log(level: level, message)
        }
    }

    // MARK: Lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { beginHandshake(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        beginHandshake(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if case .awaitingVerdict = state {
            let reason = "\(peer) disconnected while its certificate was being checked"
            logFailure(context, level: .info, "\(reason)")
            context.fireUserInboundEventTriggered(TLSEvent.handshakeFailed(reason: reason))
        } else if case let .handshaking(_, receivedBytes) = state {
            let reason = receivedBytes ? "\(peer) disconnected during the TLS handshake" : "connection closed before any TLS data"
            logFailure(context, level: receivedBytes ? .info : .debug, "\(reason)")
            context.fireUserInboundEventTriggered(TLSEvent.handshakeFailed(reason: reason))
        }
        state = .closed
        made?.abandonPausedHandshake()
        failWritesAwaitingHandshake(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        // Still on the event loop: the last chance to unwind a handshake paused for a verdict.
        made?.abandonPausedHandshake()
    }

    private func beginHandshake(context: ChannelHandlerContext) {
        guard case .idle = state else { return }
        state = .handshaking(startedAt: .now(), receivedBytes: false)
        // A client speaks first: its ClientHello goes out as soon as the connection is up.
        if role == .client, makeConnectionIfNeeded(context: context) { advanceHandshake(context: context) }
    }

    private func noteHandshakeBytesReceived(context: ChannelHandlerContext) {
        beginHandshake(context: context)
        if case let .handshaking(startedAt, false) = state { state = .handshaking(startedAt: startedAt, receivedBytes: true) }
    }

    /// False (and the handshake failed) when OpenSSL cannot make the `SSL`, e.g. out of memory.
    private func makeConnectionIfNeeded(context: ChannelHandlerContext) -> Bool {
        if made != nil { return true }
        guard let connection = makeConnection() else {
            failHandshake(context: context, reason: "cannot create a TLS connection: \(OpenSSLError.drain(operation: "SSL_new"))")
            return false
        }
        made = connection
        return true
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let ciphertext = unwrapInboundIn(data)
        switch state {
        case .idle, .handshaking:
            noteHandshakeBytesReceived(context: context)
            guard makeConnectionIfNeeded(context: context) else { return }
            connection.receive(ciphertext)
            advanceHandshake(context: context)
        case .awaitingVerdict:
            connection.receive(ciphertext)  // read once the verdict resumes the handshake
        case .established(inputClosed: false, _):
            connection.receive(ciphertext)
            decryptReceived(context: context)
        case .established(inputClosed: true, _), .closed:
            break  // nothing more is accepted after close_notify or close
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch state {
        case .idle, .handshaking(_, receivedBytes: false):
            failHandshake(context: context, reason: "connection closed before any TLS data", level: .debug)
        case .handshaking(_, receivedBytes: true), .awaitingVerdict:
            failHandshake(context: context, reason: "\(peer) closed its side during the TLS handshake")
        case let .established(inputClosed: false, outputClosed):
            // FIN without close_notify: for a byte-stream proxy this is still an end of input.
            state = .established(inputClosed: true, outputClosed: outputClosed)
            context.fireUserInboundEventTriggered(event)
        case .established(inputClosed: true, _), .closed:
            break  // already reported (close_notify came first) or already gone
        }
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        let startedAt: NIODeadline
        switch state {
        case let .handshaking(started, _): startedAt = started
        case let .awaitingVerdict(started):
            startedAt = started
            state = .handshaking(startedAt: started, receivedBytes: true)
        case .idle, .established, .closed: return
        }
        switch connection.handshake() {
        case .wantRead:
            sendPendingOutput(context: context)
            // Waiting for the peer's next flight, which may never come (a stalled or hostile
            // client holds the connection until tls.handshake_timeout): keep no record buffer
            // or BIO capacity meanwhile (2.7 KiB of the 47.8 a stalled handshake held).
            connection.releaseIdleBuffers()
            connection.shedHandshakeBuffers()
        case let .paused(question):
            sendPendingOutput(context: context)
            if let question { answer(question, startedAt: startedAt, context: context) }
        case let .failed(error):
            var reason = error.description
            if case let .reject(_, why)? = connection.lastVerdict { reason += ": \(why)" }
            failHandshake(context: context, reason: reason)
        case .complete:
            state = .established(inputClosed: false, outputClosed: false)
            sendPendingOutput(context: context)
            let summary = TLSHandshakeSummary(
                protocolVersion: connection.protocolVersion,
                cipher: connection.cipher,
                resumed: connection.sessionReused,
                duration: .nanoseconds((NIODeadline.now() - startedAt).nanoseconds),
                deviceCertificate: connection.peerCertificate,
                certificateCheck: connection.lastVerdict?.reason)
            // Named already when the gate judged the device (a full handshake); a resumed one is named here.
            if role == .server, logger[metadataKey: "device"] == nil { logger[metadataKey: "device"] = "\(summary.deviceIdentity)" }
            var metadata: Logger.Metadata = [
                "tls.version": "\(summary.protocolVersion)", "tls.cipher": "\(summary.cipher)",
                "tls.resumed": "\(summary.resumed)",
                "tls.handshake_ms": "\(summary.duration.milliseconds)",
            ]
            if let check = summary.certificateCheck { metadata["device.check"] = "\(check)" }
            // A device's handshake is an event operators follow; our own fetches' are routine.
            logger.log(level: role == .server ? .info : .debug, "TLS handshake completed", metadata: metadata)
            context.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(summary))
            flushWritesAwaitingHandshake(context: context)
            // Application data can arrive in the same read as the client's Finished.
            decryptReceived(context: context)
            connection.shedHandshakeBuffers()
        }
    }

    /// Gives the paused handshake its answer: at once when the gate has one (cache hit,
    /// resumption), otherwise once `verdict(for:)` returns, back on this event loop.
    private func answer(_ question: SSLConnection.DeviceQuestion, startedAt: NIODeadline, context: ChannelHandlerContext) {
        guard let gate = connection.gate else { return }
        switch question {
        case let .resumption(certificate):
            connection.answerResumption(allowed: gate.allowsResumption(of: certificate))
            advanceHandshake(context: context)
        case let .chain(chain):
            if let judgement = gate.immediateJudgement(for: chain) {
                apply(judgement, to: chain, context: context)
                return
            }
            state = .awaitingVerdict(startedAt: startedAt)
            let eventLoop = context.eventLoop
            let handler = NIOLoopBound(self, eventLoop: eventLoop)
            let boundContext = NIOLoopBound(context, eventLoop: eventLoop)
            Task {
                let judgement = await gate.judgement(for: chain)
                eventLoop.execute { handler.value.receive(judgement, for: chain, context: boundContext.value) }
            }
        }
    }

    private func receive(_ judgement: DeviceCertificateJudgement, for chain: [X509Certificate], context: ChannelHandlerContext) {
        guard case .awaitingVerdict = state else { return }  // closed meanwhile (timeout, device gone)
        apply(judgement, to: chain, context: context)
    }

    private func apply(_ judgement: DeviceCertificateJudgement, to chain: [X509Certificate], context: ChannelHandlerContext) {
        if let device = chain.first {
            logger[metadataKey: "device"] = "\(device.commonName ?? device.subject)"
            context.fireUserInboundEventTriggered(TLSEvent.deviceCertificateJudged(certificate: device, verdict: judgement.verdict,
                                                                                   evidence: judgement.evidence))
        }
        connection.answer(judgement.verdict)
        advanceHandshake(context: context)
    }

    private func failHandshake(context: ChannelHandlerContext, reason: String, level: Logger.Level = .warning) {
        switch state {
        case .idle, .handshaking, .awaitingVerdict: break
        case .established, .closed: return
        }
        state = .closed
        logFailure(context, level: level, "TLS handshake failed: \(reason)")
        context.fireUserInboundEventTriggered(TLSEvent.handshakeFailed(reason: reason))
        failWritesAwaitingHandshake(ChannelError.ioOnClosedChannel)
        closeAfterSendingPendingOutput(context: context)
    }

    /// Decrypts everything received so far into one buffer and passes it on.
    private func decryptReceived(context: ChannelHandlerContext) {
        // Plaintext is never larger than the ciphertext it came from, so one allocation suffices.
        var plaintext = context.channel.allocator.buffer(capacity: max(connection.maximumPlaintextPending, 1))
        var outcome: SSLConnection.ReadResult = .wantRead
        // Only while there is something to decrypt: an SSL_read that finds nothing sets up a
        // fresh 16 KB record buffer and keeps it (SSL_MODE_RELEASE_BUFFERS frees it only after a
        // whole record), which on idle sessions doubled the memory each one holds.
        readLoop: while case .established(inputClosed: false, _) = state, connection.maximumPlaintextPending > 0 {
            if plaintext.writableBytes == 0 {
                context.fireChannelRead(wrapInboundOut(plaintext))
                plaintext = context.channel.allocator.buffer(capacity: max(connection.maximumPlaintextPending, 1))
            }
            outcome = connection.read(into: &plaintext)
            if case .bytesRead = outcome { continue }
            break readLoop
        }
        if plaintext.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plaintext)) }
        sendPendingOutput(context: context)
        // An idle MQTT session is the common case: give its 16 KB record buffers back now rather
        // than hold them until the next record (SSL_MODE_RELEASE_BUFFERS alone misses some).
        connection.releaseIdleBuffers()

        switch outcome {
        case .bytesRead, .wantRead:
            break
        case .closeNotify:
            guard case let .established(inputClosed: false, outputClosed) = state else { return }
            state = .established(inputClosed: true, outputClosed: outputClosed)
            logger.debug("\(peer) sent close_notify")
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        case let .failed(error):
            logger.warning("TLS error from \(peer): \(error)")
            state = .closed
            closeAfterSendingPendingOutput(context: context)
        }
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plaintext = unwrapOutboundIn(data)
        switch state {
        case .idle, .handshaking, .awaitingVerdict:
            writesAwaitingHandshake.append((plaintext, promise))
        case .established(_, outputClosed: true):
            promise?.fail(ChannelError.outputClosed)
        case .established:
            encryptAndWrite(context: context, plaintext: plaintext, promise: promise)
        case .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard case let .established(inputClosed, outputClosed: false) = state, mode != .input else {
            if mode == .all { state = .closed }
            context.close(mode: mode, promise: promise)
            return
        }
        connection.shutdown()
        sendPendingOutput(context: context)
        state = mode == .all ? .closed : .established(inputClosed: inputClosed, outputClosed: true)
        context.close(mode: mode, promise: promise)
    }

    private func encryptAndWrite(context: ChannelHandlerContext, plaintext: ByteBuffer, promise: EventLoopPromise<Void>?) {
        if let error = connection.write(plaintext) {
            logger.warning("TLS error while encrypting for the \(peer): \(error)")
            promise?.fail(error)
            state = .closed
            context.close(promise: nil)
            return
        }
        if let ciphertext = connection.pendingOutput(allocator: context.channel.allocator) {
            context.write(wrapOutboundOut(ciphertext), promise: promise)
        } else {
            promise?.succeed()
        }
    }

    private func flushWritesAwaitingHandshake(context: ChannelHandlerContext) {
        guard !writesAwaitingHandshake.isEmpty else { return }
        let writes = writesAwaitingHandshake
        writesAwaitingHandshake = []
        for (plaintext, promise) in writes { write(context: context, data: wrapOutboundOut(plaintext), promise: promise) }
        context.flush()
    }

    private func failWritesAwaitingHandshake(_ error: Error) {
        let writes = writesAwaitingHandshake
        writesAwaitingHandshake = []
        for (_, promise) in writes { promise?.fail(error) }
    }

    private func sendPendingOutput(context: ChannelHandlerContext) {
        guard let ciphertext = made?.pendingOutput(allocator: context.channel.allocator) else { return }
        context.writeAndFlush(wrapOutboundOut(ciphertext), promise: nil)
    }

    /// Sends what OpenSSL queued (typically an alert naming the reason) before closing, so the
    /// peer learns why, e.g. "unknown ca" or "certificate expired".
    private func closeAfterSendingPendingOutput(context: ChannelHandlerContext) {
        guard let ciphertext = made?.pendingOutput(allocator: context.channel.allocator) else {
            context.close(promise: nil)
            return
        }
        context.writeAndFlush(wrapOutboundOut(ciphertext)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

/// TLS for one device connection, from the gateway's shared `ServerContext`.
public final class OpenSSLServerHandler: OpenSSLHandler {
    /// The `SSL` is made from `context` (the one serving when the device connected) when the
    /// device's first bytes arrive.
    public init(context: ServerContext, logger: Logger, failureLog: HandshakeFailureLog? = nil) {
        super.init(role: .server, logger: logger, failureLog: failureLog, makeConnection: { SSLConnection(context: context) })
    }
}

/// TLS for a connection we open, e.g. to an HTTPS OCSP responder. The handshake starts as soon
/// as the channel is active; it fails unless the server's certificate chains to `context`'s
/// trust and is valid for `serverName` (a DNS name or an IP address literal).
public final class OpenSSLClientHandler: OpenSSLHandler {
    public init(context: ClientTLSContext, serverName: String, logger: Logger) throws(SetupError) {
        guard let connection = SSLConnection(context: context, serverName: serverName) else {
            throw SetupError(reason: OpenSSLError.drain(operation: "SSL_new / SSL_set1_host"))
        }
        super.init(role: .client, made: connection, logger: logger, makeConnection: { connection })
    }
}
