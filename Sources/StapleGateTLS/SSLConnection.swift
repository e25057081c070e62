import COpenSSL
import CStapleGateShim
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// One OpenSSL `SSL`, driven over two memory BIOs: ciphertext from the peer is pushed into
/// `networkIn`, ciphertext for the peer is pulled out of `networkOut`. It never touches a socket,
/// so the channel handler above it decides when bytes move (NIOSSLHandler's shape).
/// Not thread-safe: it lives on its channel's event loop.
final class SSLConnection {
    enum Role {
        /// Device connections: we accept, the device presents a client certificate.
        case server
        /// Connections we open (HTTPS OCSP responders): we verify the server's certificate and name.
        case client

        /// Who is at the other end, in log and error messages.
        var peerNoun: String { self == .server ? "device" : "server" }
    }

    let role: Role
    private let ssl: OpaquePointer
    private var networkIn: OpaquePointer
    private var networkOut: OpaquePointer
    /// The context this `SSL` came from, kept alive as long as this connection: OpenSSL's
    /// callbacks (e.g. stapling) reach it through an unretained pointer, which must not dangle
    /// mid-handshake after a reload has replaced the context.
    private let context: AnyObject
    /// Present when device certificates are judged during the handshake.
    let gate: (any DeviceCertificateGate)?
    private let verdictSlot: HandshakeVerdictSlot?
    /// The thread whose `SSL_do_handshake` paused the async job: the only one that may resume it.
    private var pausedOn: pthread_t?
    /// The gate's last verdict on the device's chain, for the log.
    private(set) var lastVerdict: DeviceCertificateVerdict?

    enum HandshakeResult {
        case complete
        case wantRead
        /// The handshake is paused until the gate's verdict is given with `answer` (see
        /// `HandshakeVerdictSlot`). The question comes once; nil on later calls while it waits.
        case paused(DeviceQuestion?)
        case failed(OpenSSLError)
    }

    /// What a paused handshake asks the `DeviceCertificateGate`.
    enum DeviceQuestion {
        /// The device's verified chain, leaf first: may the handshake finish?
        case chain([X509Certificate])
        /// A session ticket for this device certificate: may it be resumed?
        case resumption(X509Certificate)
    }

    enum ReadResult {
        /// Bytes were appended to the buffer; there may be more.
        case bytesRead
        /// Everything received so far has been decrypted.
        case wantRead
        /// The device sent close_notify: no more application data will come.
        case closeNotify
        case failed(OpenSSLError)
    }

    convenience init?(context: ServerContext) {
        guard let ssl = context.makeSSL() else { return nil }
        self.init(ssl: ssl, role: .server, context: context, gate: context.deviceCertificateGate)
    }

    convenience init?(context: ClientTLSContext, serverName: String) {
        guard let ssl = context.makeSSL(serverName: serverName) else { return nil }
        self.init(ssl: ssl, role: .client, context: context, gate: nil)
    }

    /// Takes ownership of `ssl`.
    private init?(ssl: OpaquePointer, role: Role, context: AnyObject, gate: (any DeviceCertificateGate)?) {
        guard let networkIn = BIO_new(BIO_s_mem()) else { SSL_free(ssl); return nil }
        guard let networkOut = BIO_new(BIO_s_mem()) else { BIO_free(networkIn); SSL_free(ssl); return nil }
        // An empty input BIO must mean "wait for more", never end-of-stream.
        _ = sg_BIO_set_mem_eof_return(networkIn, -1)
        SSL_set_bio(ssl, networkIn, networkOut)  // the SSL now owns both BIOs
        switch role {
        case .server: SSL_set_accept_state(ssl)
        case .client: SSL_set_connect_state(ssl)
        }
        self.role = role
        self.ssl = ssl
        self.networkIn = networkIn
        self.networkOut = networkOut
        self.context = context
        self.gate = gate
        if gate != nil {
            let slot = HandshakeVerdictSlot()
            verdictSlot = slot
            // Unretained: the slot lives exactly as long as this connection, which frees the SSL.
            SSL_set_ex_data(ssl, HandshakeVerdictSlot.exDataIndex, Unmanaged.passUnretained(slot).toOpaque())
            // Only the handshake runs in async jobs; the mode is cleared once it is done, so
            // reads and writes of an established session pay nothing for it.
            _ = sg_SSL_set_mode(ssl, Int(SSL_MODE_ASYNC))
        } else {
            verdictSlot = nil
        }
    }

    deinit {
        // The handler unwinds a paused job on its event loop (`abandonPausedHandshake`). One still
        // paused here means this runs elsewhere (the last reference dropped by a verdict task):
        // resuming an async job off its thread crashes, so its small stack is left behind instead.
        if let verdictSlot, verdictSlot.holdsPausedJob { return }
        // As nginx does: without it, SSL_free marks the session of a connection that ended
        // without our close_notify (a reset) unresumable, and the device that lost its network
        // pays a full handshake. A session that saw a fatal alert was dropped when it was sent.
        SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_SENT_SHUTDOWN)
        SSL_free(ssl)
    }

    /// Ends a handshake paused for a verdict that will no longer be used (the connection
    /// closed): resumes the job with a refusal so it returns its stack. On the event loop only,
    /// as the job must be resumed on the thread that paused it.
    func abandonPausedHandshake() {
        guard let verdictSlot, verdictSlot.holdsPausedJob else { return }
        checkResumingThread()
        verdictSlot.phase = .answered(X509_V_ERR_OCSP_VERIFY_NEEDED)
        OpenSSLError.clearQueue()
        _ = SSL_do_handshake(ssl)
        OpenSSLError.clearQueue()
    }

    /// Hands ciphertext received from the peer to OpenSSL.
    func receive(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
            // A memory BIO grows as needed, so the write always takes everything.
            _ = BIO_write(networkIn, base, Int32(bytes.count))
        }
    }

    func handshake() -> HandshakeResult {
        checkResumingThread()
        OpenSSLError.clearQueue()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            if verdictSlot != nil { _ = sg_SSL_clear_mode(ssl, Int(SSL_MODE_ASYNC)) }
            if role == .server, SSL_session_reused(ssl) == 0 { releaseSentChain() }
            return .complete
        }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantRead
        case SSL_ERROR_WANT_ASYNC:
            pausedOn = pthread_self()
            return .paused(takeQuestion())
        default:
            return .failed(failure(operation: "SSL_do_handshake"))
        }
    }

    /// Frees the certificates a device sent besides its own (its issuing CA, usually): OpenSSL
    /// parsed them to build the chain and keeps them in the session for as long as the session
    /// lives, though the verified chain holds its own references (the bundle's copies, as a rule)
    /// and nothing reads them again. One parsed CA certificate per idle session.
    /// Race-free: a TLS 1.3 session is reachable by another connection only through the ticket
    /// in this handshake's last output, sent after this returns; a TLS 1.2 session id is known
    /// earlier, but OpenSSL resuming it (on another thread, from the cache) uses the session as
    /// it is and reads only the device's own certificate, never this stack. A resumed session
    /// is shared with the cache and left alone.
    private func releaseSentChain() {
        guard let sent = SSL_get_peer_cert_chain(ssl) else { return }
        while let certificate = sg_sk_X509_pop(sent) { X509_free(certificate) }
    }

    /// A job's fibre returns to the stack of the thread that paused it: resumed from any other
    /// thread it would jump into that thread's stack. An event loop is one thread, so this only
    /// trips on an executor that hops threads (a DispatchQueue-backed test loop): stop with a
    /// message rather than a wild jump.
    private func checkResumingThread() {
        guard let pausedOn, verdictSlot?.holdsPausedJob == true else { return }
        precondition(pthread_equal(pausedOn, pthread_self()) != 0,
                     "a TLS handshake paused in an OpenSSL async job was resumed on another thread")
    }

    /// Hands the paused job's question to the caller, once.
    private func takeQuestion() -> DeviceQuestion? {
        guard let verdictSlot else { return nil }
        switch verdictSlot.phase {
        case let .awaitingChainVerdict(stack?):
            verdictSlot.phase = .asked
            // get1_chain took a reference to each certificate: the wrappers take them over.
            let chain = (0..<sg_sk_X509_num(stack)).compactMap { sg_sk_X509_value(stack, $0).map(X509Certificate.init(taking:)) }
            sg_sk_X509_free(stack)
            return .chain(chain)
        case let .awaitingResumptionVerdict(certificate?):
            verdictSlot.phase = .asked
            return .resumption(X509Certificate(taking: certificate))
        default:
            return nil
        }
    }

    /// The gate's verdict on the chain; the next `handshake()` resumes with it.
    func answer(_ verdict: DeviceCertificateVerdict) {
        lastVerdict = verdict
        switch verdict {
        case .accept: verdictSlot?.phase = .answered(1)
        case let .reject(refusal, _): verdictSlot?.phase = .answered(refusal.verifyError)
        }
    }

    /// Whether the session ticket may be used; the next `handshake()` resumes with it.
    func answerResumption(allowed: Bool) {
        verdictSlot?.phase = .answered(allowed ? 1 : 0)
    }

    /// Decrypts into the free space of `buffer` (which must have some).
    func read(into buffer: inout ByteBuffer) -> ReadResult {
        OpenSSLError.clearQueue()
        var bytesRead = 0
        var result: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1) { space in
            result = SSL_read_ex(ssl, space.baseAddress, space.count, &bytesRead)
            return result == 1 ? bytesRead : 0
        }
        if result == 1 { return .bytesRead }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .wantRead
        case SSL_ERROR_ZERO_RETURN: return .closeNotify
        default: return .failed(failure(operation: "SSL_read"))
        }
    }

    /// Frees OpenSSL's record buffers when nothing is buffered in them (a partial record keeps
    /// them); the next record allocates again.
    func releaseIdleBuffers() {
        guard maximumPlaintextPending == 0 else { return }
        _ = SSL_free_buffers(ssl)
    }

    /// Replaces both memory BIOs by empty ones once they are drained. A memory BIO keeps the
    /// largest buffer it ever held, here the handshake's certificate flights, which an idle
    /// session would otherwise carry for its whole life.
    func shedHandshakeBuffers() {
        guard BIO_ctrl_pending(networkIn) == 0, BIO_ctrl_pending(networkOut) == 0,
              let freshIn = BIO_new(BIO_s_mem()) else { return }
        guard let freshOut = BIO_new(BIO_s_mem()) else { BIO_free(freshIn); return }
        _ = sg_BIO_set_mem_eof_return(freshIn, -1)
        SSL_set_bio(ssl, freshIn, freshOut)  // frees the old pair
        networkIn = freshIn
        networkOut = freshOut
    }

    /// Encrypts all of `buffer`; the records land in the output BIO.
    func write(_ buffer: ByteBuffer) -> OpenSSLError? {
        guard buffer.readableBytes > 0 else { return nil }
        OpenSSLError.clearQueue()
        var written = 0
        let result = buffer.withUnsafeReadableBytes { bytes in
            SSL_write_ex(ssl, bytes.baseAddress, bytes.count, &written)
        }
        return result == 1 ? nil : failure(operation: "SSL_write")
    }

    /// Queues close_notify. Our side only: neither MQTT sessions nor OCSP fetches wait for the peer's.
    func shutdown() {
        OpenSSLError.clearQueue()
        _ = SSL_shutdown(ssl)
        OpenSSLError.clearQueue()
    }

    /// Ciphertext waiting to go to the peer, if any.
    func pendingOutput(allocator: ByteBufferAllocator) -> ByteBuffer? {
        let pending = Int(BIO_ctrl_pending(networkOut))
        guard pending > 0 else { return nil }
        var buffer = allocator.buffer(capacity: pending)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { space in
            Int(max(BIO_read(networkOut, space.baseAddress, Int32(pending)), 0))
        }
        return buffer
    }

    /// An upper bound on the plaintext that can be read now: ciphertext not yet processed plus
    /// plaintext OpenSSL already decrypted.
    var maximumPlaintextPending: Int {
        Int(BIO_ctrl_pending(networkIn)) + Int(SSL_pending(ssl))
    }

    // MARK: What was negotiated

    var protocolVersion: String { String(cString: SSL_get_version(ssl)) }
    var cipher: String { SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "" }
    var sessionReused: Bool { SSL_session_reused(ssl) == 1 }

    /// How many certificates the peer sent besides its own the session still holds.
    var peerChainCount: Int { SSL_get_peer_cert_chain(ssl).map { Int(sg_sk_X509_num($0)) } ?? 0 }
    var peerCertificate: X509Certificate? {
        SSL_get0_peer_certificate(ssl).map { X509Certificate(borrowing: $0) }
    }

    /// The error queue plus, when chain verification is what failed, the verifier's own words
    /// ("certificate has expired", "unable to get local issuer certificate", "hostname mismatch", ...).
    private func failure(operation: String) -> OpenSSLError {
        let verifyResult = SSL_get_verify_result(ssl)
        var extra: [String] = []
        if verifyResult != X509_V_OK {
            extra.append("\(role.peerNoun) certificate: \(String(cString: X509_verify_cert_error_string(verifyResult)))")
        }
        return OpenSSLError.drain(operation: operation, extra: extra)
    }
}
