import COpenSSL
import CStapleGateShim
import Foundation
import StapleGateTLS

/// Why a response was not accepted. Each case's description is the operator-facing sentence.
/// (A response too large to read is the fetcher's business, not a case here.)
public enum OCSPRejection: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not DER, truncated, trailing bytes, or a required field unreadable.
    case malformed(String)
    /// The responder answered but not with a response: malformedRequest, internalError,
    /// tryLater, sigRequired or unauthorized.
    case responderStatus(String)
    /// Successful, but without an id-pkix-ocsp-basic response (the only type RFC 6960 defines).
    case notBasicResponse
    /// OpenSSL's reason, when it gave one.
    case signatureInvalid(String)
    /// Signed by a certificate that may not speak for the issuer.
    case signerNotAuthorized(String)
    /// Neither the response nor the issuer holds the certificate named by the ResponderID.
    case signerNotFound
    case certIDNotInResponse(expected: CertID)
    /// A nonce was sent and the response does not echo it.
    case nonceMismatch
    case notYetValid(thisUpdate: Date)
    case expired(nextUpdate: Date)
    /// No nextUpdate (the responder promises nothing) and thisUpdate older than the policy allows.
    case tooOld(thisUpdate: Date)

    public var description: String {
        switch self {
        case let .malformed(reason): "not an OCSP response (\(reason))"
        case let .responderStatus(status): "responder status \(status)"
        case .notBasicResponse: "not a basic OCSP response (id-pkix-ocsp-basic)"
        case let .signatureInvalid(reason): reason.isEmpty ? "response signature invalid" : "response signature invalid (\(reason))"
        case let .signerNotAuthorized(reason): "signer is not authorized: \(reason)"
        case .signerNotFound: "signer certificate not found in response"
        case let .certIDNotInResponse(expected): "response is not for \(expected)"
        case .nonceMismatch: "response nonce does not match the request's"
        case let .notYetValid(thisUpdate): "response is from the future (thisUpdate \(Self.format(thisUpdate)))"
        case let .expired(nextUpdate): "response expired at \(Self.format(nextUpdate)) (nextUpdate)"
        case let .tooOld(thisUpdate): "response is too old (thisUpdate \(Self.format(thisUpdate)), no nextUpdate)"
        }
    }

    static func format(_ date: Date) -> String { date.iso8601String }
}

/// What makes an OCSP response acceptable for one certificate: RFC 6960 §3.2 as a policy.
/// `verify` returns the reason for a rejection rather than a Bool, so the stapler and the
/// device checker can both log exactly why a response was refused.
public struct OCSPVerificationPolicy: Sendable {
    /// The CA that issued the certificate in question: the only trust anchor for the signer.
    public var issuer: X509Certificate
    /// Tolerance for thisUpdate in the future / nextUpdate in the past (unsynchronised clocks).
    public var clockSkew: Duration = .seconds(300)
    /// How old a response without nextUpdate may be (RFC 5019 §4 leaves this to local policy).
    public var maximumAgeWithoutNextUpdate: Duration = .seconds(7 * 24 * 3600)

    /// Where the certificates responses carry are decoded once; nil: each response is parsed
    /// whole, as OpenSSL does (the same verdicts, at the cost of decoding them every time).
    public var responderCertificates: ResponderCertificates?

    public init(issuer: X509Certificate, clockSkew: Duration = .seconds(300),
                responderCertificates: ResponderCertificates? = .shared) {
        self.issuer = issuer
        self.clockSkew = clockSkew
        self.responderCertificates = responderCertificates
    }

    /// Checks, in this order: DER, responder status, basic response, signature and signer,
    /// CertID, nonce (when one was sent), validity window at `now`.
    public func verify(der: [UInt8], for certID: CertID, nonce: [UInt8]? = nil,
                       now: Date = Date()) -> Result<VerifiedOCSPResponse, OCSPRejection> {
        // OpenSSL's error queue is per thread: start clean so every reason read below is ours,
        // and leave it clean for whatever runs next on this thread.
        ERR_clear_error()
        defer { ERR_clear_error() }

        guard !der.isEmpty else { return .failure(.malformed("empty")) }
        var consumed = 0
        let parsed = der.withUnsafeBufferPointer { buffer -> OpaquePointer? in
            guard let base = buffer.baseAddress else { return nil }
            var cursor: UnsafePointer<UInt8>? = base
            let response = d2i_OCSP_RESPONSE(nil, &cursor, buffer.count)
            consumed = cursor.map { base.distance(to: $0) } ?? 0
            return response
        }
        guard let response = parsed else { return .failure(.malformed("DER parse failed")) }
        defer { OCSP_RESPONSE_free(response) }
        // Bytes after the DER would not be covered by anything we check, yet would be stapled.
        guard consumed == der.count else {
            let extra = der.count - consumed
            return .failure(.malformed("\(extra) \(extra == 1 ? "byte" : "bytes") after the DER"))
        }

        let status = OCSP_response_status(response)
        guard status == OCSP_RESPONSE_STATUS_SUCCESSFUL else {
            return .failure(.responderStatus(OCSPFields.responseStatusName(status)))
        }
        guard let (basic, carried) = basicResponse(der, of: response) else { return .failure(.notBasicResponse) }
        defer { OCSP_BASICRESP_free(basic) }

        if let rejection = verifySigner(basic, carried: carried) { return .failure(rejection) }

        let single: SingleResponse
        switch SingleResponse.find(certID, in: basic) {
        case let .success(found): single = found
        case let .failure(rejection): return .failure(rejection)
        }

        if let nonce {
            // 1 = both carry the same nonce. Anything else (absent, different, or we could not
            // build the comparison) fails closed: the caller asked for freshness proof.
            let check = OCSPRequest.withNonceCarrier(nonce) { request in OCSP_check_nonce(request, basic) }
            guard check == 1 else { return .failure(.nonceMismatch) }
        }

        // Our own comparisons rather than OCSP_check_validity, which reads the wall clock:
        // `now` is injectable (tests, and re-checking a cached response at a given time).
        let skew = clockSkew.timeInterval
        if single.thisUpdate > now.addingTimeInterval(skew) {
            return .failure(.notYetValid(thisUpdate: single.thisUpdate))
        }
        if let nextUpdate = single.nextUpdate {
            guard nextUpdate >= single.thisUpdate else {
                return .failure(.malformed("nextUpdate \(OCSPRejection.format(nextUpdate)) is before thisUpdate"))
            }
            if nextUpdate < now.addingTimeInterval(-skew) { return .failure(.expired(nextUpdate: nextUpdate)) }
        } else if single.thisUpdate < now.addingTimeInterval(-maximumAgeWithoutNextUpdate.timeInterval) {
            return .failure(.tooOld(thisUpdate: single.thisUpdate))
        }

        guard let producedAt = OCSPFields.date(OCSP_resp_get0_produced_at(basic)) else {
            return .failure(.malformed("producedAt unreadable"))
        }
        return .success(VerifiedOCSPResponse(
            der: der, certID: certID, status: single.status, thisUpdate: single.thisUpdate,
            nextUpdate: single.nextUpdate, producedAt: producedAt,
            responderID: OCSPFields.responderID(basic) ?? "(unreadable responder ID)"))
    }

    /// The basic response, parsed without the certificates it carries, each of which comes
    /// decoded from `responderCertificates`; or, for anything `BasicResponseParts` does not
    /// take apart, parsed whole as OpenSSL does (then `carried` is empty: they are inside).
    private func basicResponse(_ der: [UInt8], of response: OpaquePointer) -> (basic: OpaquePointer, carried: [X509Certificate])? {
        if let responderCertificates, let parts = BasicResponseParts.split(der) {
            let carried = parts.certificates.compactMap { responderCertificates.certificate($0) }
            let basic = parts.withoutCertificates.withUnsafeBufferPointer { buffer -> OpaquePointer? in
                guard let base = buffer.baseAddress else { return nil }
                var cursor: UnsafePointer<UInt8>? = base
                let basic = d2i_OCSP_BASICRESP(nil, &cursor, buffer.count)
                guard cursor == base + buffer.count else { OCSP_BASICRESP_free(basic); return nil }
                return basic
            }
            if let basic, carried.count == parts.certificates.count { return (basic, carried) }
            OCSP_BASICRESP_free(basic)
            ERR_clear_error()
        }
        return OCSP_response_get1_basic(response).map { ($0, []) }
    }

    /// Signature and signer authorization (RFC 6960 §4.2.2.2): the issuer itself, or a
    /// certificate the issuer issued with id-kp-OCSPSigning. `carried`: the response's own
    /// certificates, when parsed apart from it. Nil when acceptable.
    private func verifySigner(_ basic: OpaquePointer, carried: [X509Certificate]) -> OCSPRejection? {
        guard let store = X509_STORE_new() else { return .signatureInvalid("not checked: X509_STORE_new failed") }
        defer { X509_STORE_free(store) }
        // The issuer is the only trust anchor: RFC 6960 lets only the issuer, or a responder it
        // certified, sign. It is usually an intermediate whose root we do not hold, hence
        // PARTIAL_CHAIN (an intermediate in the store ends the chain).
        guard X509_STORE_add_cert(store, issuer.pointer) == 1,
              X509_STORE_set_flags(store, UInt(X509_V_FLAG_PARTIAL_CHAIN)) == 1 else {
            return .signatureInvalid("not checked: \(OpenSSLError.drain(operation: "X509_STORE_add_cert"))")
        }
        // The signer's certificate is checked at the wall clock (OpenSSL's default, as in nginx),
        // not at `now`: `now` places the response's own window, and a delegated signer issued
        // minutes ago must not fail as "not yet valid" when a test or a cache asks about a time
        // before it existed.

        // The issuer as an extra certificate: a response signed by the issuer itself usually
        // carries no certificates, and OpenSSL looks for the signer only in these two places.
        // The response's own certificates, when parsed apart, come after it: OpenSSL looks for
        // the signer here first and in the response second, so the issuer is still found before
        // anything the response carries, and the untrusted set for the signer's chain is the
        // same certificates.
        guard let extra = sg_sk_X509_new_null() else { return .signatureInvalid("not checked: out of memory") }
        defer { sg_sk_X509_free(extra) }  // the stack only: `carried` and `issuer` keep theirs
        for certificate in [issuer] + carried where sg_sk_X509_push(extra, certificate.pointer) <= 0 {
            return .signatureInvalid("not checked: out of memory")
        }

        // NOEXPLICIT: otherwise, when the signer is neither the issuer nor delegated by it, OpenSSL
        // still accepts it if the chain's top certificate carries auxiliary trust for OCSP signing
        // (a "TRUSTED CERTIFICATE" PEM): then any certificate under it could sign. RFC 6960 allows
        // only the issuer or its delegated OCSPSigning responder, whatever the anchor says.
        let flags = UInt(OCSP_PARTIAL_CHAIN | OCSP_NOEXPLICIT)
        if OCSP_basic_verify(basic, extra, store, flags) > 0 { return nil }
        return SignerFailure.classify(QueuedError.drainAll(), signer: signerSubject(basic, extra))
    }

    /// For messages only: who signed, as far as OpenSSL can tell.
    private func signerSubject(_ basic: OpaquePointer, _ extra: OpaquePointer) -> String? {
        var signer: OpaquePointer?
        guard OCSP_resp_get0_signer(basic, &signer, extra) == 1, let signer,
              let name = X509_get_subject_name(signer) else { return nil }
        return OCSPFields.rfc2253(name)
    }
}

/// The SingleResponse for our CertID, read into Swift values.
private struct SingleResponse {
    let status: OCSPCertStatus
    let thisUpdate: Date
    let nextUpdate: Date?

    /// Compares CertIDs in Swift (what OCSP_resp_find does in C) so the CertID the caller holds
    /// is matched exactly, without rebuilding an OpenSSL CertID from its hashes.
    static func find(_ certID: CertID, in basic: OpaquePointer) -> Result<SingleResponse, OCSPRejection> {
        let count = OCSP_resp_count(basic)
        guard count > 0 else { return .failure(.certIDNotInResponse(expected: certID)) }
        for index in 0..<count {
            guard let single = OCSP_resp_get0(basic, index), let id = OCSP_SINGLERESP_get0_id(single),
                  CertID(openSSL: id) == certID else { continue }
            return read(single)
        }
        return .failure(.certIDNotInResponse(expected: certID))
    }

    private static func read(_ single: OpaquePointer) -> Result<SingleResponse, OCSPRejection> {
        var reason: Int32 = OCSP_REVOKED_STATUS_NOSTATUS
        var revoked: UnsafeMutablePointer<ASN1_GENERALIZEDTIME>?
        var thisUpdate: UnsafeMutablePointer<ASN1_GENERALIZEDTIME>?
        var nextUpdate: UnsafeMutablePointer<ASN1_GENERALIZEDTIME>?
        let code = OCSP_single_get0_status(single, &reason, &revoked, &thisUpdate, &nextUpdate)
        guard let this = OCSPFields.date(thisUpdate) else { return .failure(.malformed("thisUpdate unreadable")) }
        let next = OCSPFields.date(nextUpdate)
        if nextUpdate != nil, next == nil { return .failure(.malformed("nextUpdate unreadable")) }
        let status: OCSPCertStatus
        switch code {
        case V_OCSP_CERTSTATUS_GOOD: status = .good
        case V_OCSP_CERTSTATUS_UNKNOWN: status = .unknown
        case V_OCSP_CERTSTATUS_REVOKED:
            guard let at = OCSPFields.date(revoked) else { return .failure(.malformed("revocationTime unreadable")) }
            status = .revoked(at: at, reason: RevocationReason(openSSL: reason))
        default: return .failure(.malformed("certStatus unreadable"))
        }
        return .success(SingleResponse(status: status, thisUpdate: this, nextUpdate: next))
    }
}

/// One entry of OpenSSL's error queue, with the detail OCSP_basic_verify attaches to it
/// ("Verify error:self-signed certificate"), which `OpenSSLError` does not keep.
private struct QueuedError {
    let library: Int32
    let reason: Int32
    let text: String
    let detail: String?

    static func drainAll() -> [QueuedError] {
        var errors: [QueuedError] = []
        while true {
            var data: UnsafePointer<CChar>?
            var flags: Int32 = 0
            let code = ERR_get_error_all(nil, nil, nil, &data, &flags)
            if code == 0 { break }
            let text = ERR_reason_error_string(code).map { String(cString: $0) } ?? "error \(code)"
            let detail = (flags & ERR_TXT_STRING) != 0 ? data.map { String(cString: $0) } : nil
            errors.append(QueuedError(library: ERR_GET_LIB(code), reason: ERR_GET_REASON(code), text: text,
                                      detail: detail.flatMap { $0.isEmpty ? nil : $0 }))
        }
        return errors
    }
}

/// Maps why OCSP_basic_verify failed to a rejection, most specific reason first (for a signer
/// without OCSPSigning, OpenSSL queues more than one).
private enum SignerFailure {
    static func classify(_ errors: [QueuedError], signer: String?) -> OCSPRejection {
        func has(_ reason: Int32) -> QueuedError? {
            errors.first { $0.library == ERR_LIB_OCSP && $0.reason == reason }
        }
        let who = signer.map { " (\($0))" } ?? ""
        if has(OCSP_R_SIGNER_CERTIFICATE_NOT_FOUND) != nil { return .signerNotFound }
        if has(OCSP_R_SIGNATURE_FAILURE) != nil {
            // What OpenSSL queues under it is terse ("EVP lib"): say whose key it did not match.
            let causes = errors.filter { !($0.library == ERR_LIB_OCSP && $0.reason == OCSP_R_SIGNATURE_FAILURE) }
            let key = signer.map { "does not match the key of \($0)" } ?? "does not match the signer's key"
            return .signatureInvalid(([key] + causes.map(\.text)).joined(separator: ": "))
        }
        if has(OCSP_R_MISSING_OCSPSIGNING_USAGE) != nil {
            return .signerNotAuthorized("certificate lacks id-kp-OCSPSigning\(who)")
        }
        if let verify = has(OCSP_R_CERTIFICATE_VERIFY_ERROR) {
            let why = verify.detail.map {
                $0.replacingOccurrences(of: "Verify error:", with: "").trimmingCharacters(in: .whitespaces)
            } ?? verify.text
            return .signerNotAuthorized("certificate does not chain to the issuer: \(why)\(who)")
        }
        // An empty queue is OpenSSL's silent "no": the signer's chain is valid, yet neither the
        // signer nor its issuer is the CA named in the response's CertIDs (with OCSP_NOEXPLICIT,
        // ocsp_check_issuer's 0 is returned as is, and it queues nothing for a mismatch).
        if errors.isEmpty || has(OCSP_R_ROOT_CA_NOT_TRUSTED) != nil || has(OCSP_R_NO_CERTIFICATES_IN_CHAIN) != nil {
            return .signerNotAuthorized("neither the issuer nor a responder it delegated to\(who)")
        }
        let reasons = errors.map { error in error.detail.map { "\(error.text) (\($0))" } ?? error.text }
        return .signatureInvalid(reasons.joined(separator: "; "))
    }
}
