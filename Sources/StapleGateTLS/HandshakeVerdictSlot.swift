import COpenSSL
import CStapleGateShim

/// Where a paused handshake and its handler meet, one per connection with a gate.
///
/// With `SSL_MODE_ASYNC`, OpenSSL runs the handshake inside an async job on a small (32 KB)
/// stack. Our callbacks there only park what needs judging in this slot and pause the job,
/// which makes `SSL_do_handshake` return `SSL_ERROR_WANT_ASYNC`; the handler, back on the event
/// loop's own stack, judges it (cache or responder), answers here, and calls
/// `SSL_do_handshake` again on the same thread to resume the job where it paused.
final class HandshakeVerdictSlot {
    enum Phase {
        case idle
        /// The verified chain (a `STACK_OF(X509)` we own) waits for a verdict.
        case awaitingChainVerdict(OpaquePointer?)
        /// A resumed session's device certificate (an `X509` we own a reference to) waits.
        case awaitingResumptionVerdict(OpaquePointer?)
        /// The question was handed to the handler; the job stays paused until answered.
        case asked
        /// 1: go on. Otherwise the X509_V_ERR to fail the chain with (or, for a ticket, "do
        /// not resume").
        case answered(Int32)
    }

    var phase: Phase = .idle

    /// Anything but idle means a job is paused inside a callback.
    var holdsPausedJob: Bool {
        if case .idle = phase { return false }
        return true
    }

    deinit { releaseParked() }

    /// Frees what a question still holds (a connection closed before its verdict).
    private func releaseParked() {
        switch phase {
        case let .awaitingChainVerdict(chain?): sg_sk_X509_pop_free(chain)
        case let .awaitingResumptionVerdict(certificate?): X509_free(certificate)
        default: break
        }
        phase = .idle
    }

    /// Inside the job: parks the question (taking ownership of what it holds) and pauses until
    /// the handler has answered. Returns the answer, or nil when the job cannot pause (then the
    /// caller fails closed).
    func pauseForAnswer(_ question: Phase) -> Int32? {
        phase = question
        guard ASYNC_get_current_job() != nil else {
            releaseParked()
            return nil
        }
        while true {
            if case let .answered(answer) = phase {
                phase = .idle
                return answer
            }
            // Returns when SSL_do_handshake is called again: for an answer, or because more
            // bytes arrived meanwhile (then we pause again).
            guard ASYNC_pause_job() == 1 else {
                releaseParked()
                return nil
            }
        }
    }

    // MARK: OpenSSL callbacks (run inside the async job: keep them light)

    static let exDataIndex: Int32 = sg_SSL_get_ex_new_index()

    static func slot(of ssl: OpaquePointer) -> HandshakeVerdictSlot? {
        SSL_get_ex_data(ssl, exDataIndex).map { Unmanaged<HandshakeVerdictSlot>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Replaces OpenSSL's chain verification: verifies as usual (from the issuing CA up when
    /// `argument` holds the bundle's `VerifiedIntermediatePaths`), then waits for the gate.
    static let certificateVerifyCallback: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { storeContext, argument in
        guard let storeContext else { return 0 }
        let verified = argument.map { Unmanaged<VerifiedIntermediatePaths>.fromOpaque($0).takeUnretainedValue().verify(storeContext) }
            ?? X509_verify_cert(storeContext)
        guard verified == 1 else { return 0 }
        guard let sslPointer = X509_STORE_CTX_get_ex_data(storeContext, SSL_get_ex_data_X509_STORE_CTX_idx()),
              let slot = slot(of: OpaquePointer(sslPointer)) else { return 1 }
        let answer = slot.pauseForAnswer(.awaitingChainVerdict(X509_STORE_CTX_get1_chain(storeContext)))
            ?? X509_V_ERR_OCSP_VERIFY_NEEDED
        if answer == 1 { return 1 }
        X509_STORE_CTX_set_error(storeContext, answer)
        return 0
    }

    /// Whether `session` may be resumed on `ssl`: yes without a gate; with one, only if the gate
    /// lets the session's device certificate in now (a device revoked since its first handshake
    /// must not slip back in by resuming). Pauses the job until the handler answers.
    static func mayResume(_ session: OpaquePointer, on ssl: OpaquePointer) -> Bool {
        guard let slot = slot(of: ssl) else { return true }
        guard let peer = SSL_SESSION_get0_peer(session) else { return false }
        X509_up_ref(peer)
        return slot.pauseForAnswer(.awaitingResumptionVerdict(peer)) == 1
    }

    /// A sealed session ticket decrypted (`SessionTicketKeyRing`, or OpenSSL's own keys): resume
    /// only if `mayResume`; otherwise a full handshake (and a full check) follows.
    static let ticketDecryptCallback: @convention(c) (
        OpaquePointer?, OpaquePointer?, UnsafePointer<UInt8>?, Int, Int32, UnsafeMutableRawPointer?
    ) -> Int32 = { ssl, session, _, _, status, _ in
        guard status == SSL_TICKET_SUCCESS || status == SSL_TICKET_SUCCESS_RENEW else {
            // No ticket, or one we cannot decrypt: a full handshake. Allocation failures abort.
            return status == SSL_TICKET_EMPTY || status == SSL_TICKET_NO_DECRYPT || status == SSL_TICKET_NONE
                ? SSL_TICKET_RETURN_IGNORE_RENEW : SSL_TICKET_RETURN_ABORT
        }
        let use = status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW
        guard let ssl, let session else { return SSL_TICKET_RETURN_IGNORE_RENEW }
        return mayResume(session, on: ssl) ? use : SSL_TICKET_RETURN_IGNORE_RENEW
    }

    /// Sealed tickets only, each asked about: OpenSSL's server-side session cache would resume
    /// TLS 1.2 session ids without asking, so it is off.
    static func gateSealedTickets(on context: OpaquePointer) {
        _ = sg_SSL_CTX_set_session_cache_mode(context, Int(SSL_SESS_CACHE_OFF))
        _ = SSL_CTX_set_session_ticket_cb(context, nil, ticketDecryptCallback, nil)
    }
}
