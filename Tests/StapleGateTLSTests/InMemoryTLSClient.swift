import COpenSSL
import CStapleGateShim
import Foundation

/// A real OpenSSL client over memory BIOs, so the server handler can be driven byte for byte in
/// an EmbeddedChannel without sockets.
final class InMemoryTLSClient {
    private let context: OpaquePointer
    private let ssl: OpaquePointer
    private let networkIn: OpaquePointer
    private let networkOut: OpaquePointer

    init(caFile: String, certificate: String?, key: String?, maxVersion: Int32? = nil,
         tls12Ciphers: String? = nil, requestStaple: Bool = false) {
        context = SSL_CTX_new(TLS_client_method())!
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        precondition(SSL_CTX_load_verify_locations(context, caFile, nil) == 1)
        if let certificate, let key {
            precondition(SSL_CTX_use_certificate_chain_file(context, certificate) == 1)
            precondition(SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1)
        }
        if let maxVersion { _ = sg_SSL_CTX_set_max_proto_version(context, maxVersion) }
        if let tls12Ciphers { precondition(SSL_CTX_set_cipher_list(context, tls12Ciphers) == 1) }
        ssl = SSL_new(context)!
        if requestStaple { _ = sg_SSL_set_tlsext_status_type(ssl, TLSEXT_STATUSTYPE_ocsp) }
        networkIn = BIO_new(BIO_s_mem())!
        networkOut = BIO_new(BIO_s_mem())!
        _ = sg_BIO_set_mem_eof_return(networkIn, -1)
        SSL_set_bio(ssl, networkIn, networkOut)
        SSL_set_connect_state(ssl)
        _ = "localhost".withCString { SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, Int(TLSEXT_NAMETYPE_host_name), UnsafeMutableRawPointer(mutating: $0)) }
    }

    deinit {
        SSL_free(ssl)
        SSL_CTX_free(context)
    }

    enum Step: Equatable { case done, wantRead, failed(String) }

    func handshake() -> Step {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 { return .done }
        let error = SSL_get_error(ssl, result)
        if error == SSL_ERROR_WANT_READ { return .wantRead }
        return .failed(Self.errorQueue())
    }

    /// Ciphertext the client wants to send.
    func outgoing() -> [UInt8] {
        let pending = Int(BIO_ctrl_pending(networkOut))
        guard pending > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: pending)
        let read = BIO_read(networkOut, &bytes, Int32(pending))
        return Array(bytes.prefix(Int(max(read, 0))))
    }

    func incoming(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        _ = bytes.withUnsafeBytes { BIO_write(networkIn, $0.baseAddress, Int32($0.count)) }
    }

    func write(_ bytes: [UInt8]) {
        var written = 0
        precondition(bytes.withUnsafeBytes { SSL_write_ex(ssl, $0.baseAddress, $0.count, &written) } == 1)
    }

    enum ReadOutcome: Equatable { case bytes([UInt8]), wantRead, closeNotify, failed(String) }

    /// Everything decryptable now.
    func read() -> ReadOutcome {
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            ERR_clear_error()
            var count = 0
            let result = SSL_read_ex(ssl, &buffer, buffer.count, &count)
            if result == 1 { collected += buffer.prefix(count); continue }
            let error = SSL_get_error(ssl, result)
            if !collected.isEmpty { return .bytes(collected) }
            switch error {
            case SSL_ERROR_WANT_READ: return .wantRead
            case SSL_ERROR_ZERO_RETURN: return .closeNotify
            default: return .failed(Self.errorQueue())
            }
        }
    }

    func shutdown() { _ = SSL_shutdown(ssl) }

    /// Offers `session` (from `keptSession()` of an earlier client) for resumption; before the handshake.
    func offer(_ session: ClientSession) {
        precondition(SSL_set_session(ssl, session.pointer) == 1)
    }

    /// The session the client would resume next time: the last ticket received (TLS 1.3 sends
    /// it after the handshake, so `read()` must have run), or nil when it has none.
    func keptSession() -> ClientSession? {
        guard let session = SSL_get1_session(ssl), SSL_SESSION_is_resumable(session) == 1 else { return nil }
        return ClientSession(taking: session)
    }

    var sessionReused: Bool { SSL_session_reused(ssl) == 1 }

    var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// The OCSP response the server stapled, if any.
    var receivedStaple: [UInt8]? {
        var der: UnsafePointer<UInt8>?
        let length = sg_SSL_get_tlsext_status_ocsp_resp(ssl, &der)
        guard length > 0, let der else { return nil }
        return Array(UnsafeBufferPointer(start: der, count: length))
    }

    /// Whether the server presented its RSA certificate (rather than its ECDSA one).
    var serverPresentedRSA: Bool {
        guard let certificate = SSL_get0_peer_certificate(ssl), let key = X509_get0_pubkey(certificate) else { return false }
        return EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA
    }

    static func errorQueue() -> String {
        var reasons: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            reasons.append(ERR_reason_error_string(code).map { String(cString: $0) } ?? "\(code)")
        }
        return reasons.joined(separator: "; ")
    }
}

/// A client-side `SSL_SESSION`, with the ticket the server gave for it.
final class ClientSession {
    let pointer: OpaquePointer

    init(taking pointer: OpaquePointer) { self.pointer = pointer }
    deinit { SSL_SESSION_free(pointer) }

    /// The ticket as received: a sealed session, or only a name for one kept by the server.
    var ticket: [UInt8] {
        var ticket: UnsafePointer<UInt8>?
        var length = 0
        SSL_SESSION_get0_ticket(pointer, &ticket, &length)
        guard let ticket else { return [] }
        return Array(UnsafeBufferPointer(start: ticket, count: length))
    }

    /// The ticket's first 16 bytes: the name of the key that encrypted it (RFC 5077 §4).
    var ticketKeyName: [UInt8] {
        let ticket = self.ticket
        return ticket.count >= 16 ? Array(ticket.prefix(16)) : []
    }

    var ticketLength: Int { ticket.count }
}
