import COpenSSL
import CStapleGateShim
import Foundation
import StapleGateTLS

/// RFC 5280 CRLReason, as a responder gives it for a revoked certificate.
public enum RevocationReason: String, Sendable {
    case unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation,
         certificateHold, removeFromCRL, privilegeWithdrawn, aACompromise

    /// From OpenSSL's `OCSP_REVOKED_STATUS_*`; nil for "no reason given" (and for the unused 7).
    init?(openSSL code: Int32) {
        switch code {
        case OCSP_REVOKED_STATUS_UNSPECIFIED: self = .unspecified
        case OCSP_REVOKED_STATUS_KEYCOMPROMISE: self = .keyCompromise
        case OCSP_REVOKED_STATUS_CACOMPROMISE: self = .cACompromise
        case OCSP_REVOKED_STATUS_AFFILIATIONCHANGED: self = .affiliationChanged
        case OCSP_REVOKED_STATUS_SUPERSEDED: self = .superseded
        case OCSP_REVOKED_STATUS_CESSATIONOFOPERATION: self = .cessationOfOperation
        case OCSP_REVOKED_STATUS_CERTIFICATEHOLD: self = .certificateHold
        case OCSP_REVOKED_STATUS_REMOVEFROMCRL: self = .removeFromCRL
        case OCSP_REVOKED_STATUS_PRIVILEGEWITHDRAWN: self = .privilegeWithdrawn
        case OCSP_REVOKED_STATUS_AACOMPROMISE: self = .aACompromise
        default: return nil
        }
    }
}

/// RFC 6960 CertStatus: what the responder says about the certificate.
public enum OCSPCertStatus: Sendable, Equatable, CustomStringConvertible {
    case good
    case revoked(at: Date, reason: RevocationReason?)
    /// The responder does not know the certificate (not issued by its CA, or not in its database).
    case unknown

    /// "good", "revoked at 2026-11-22T04:41:26Z (keyCompromise)", "unknown": as logs show it.
    public var description: String {
        switch self {
        case .good: "good"
        case let .revoked(at, reason): "revoked at \(at.iso8601String)" + (reason.map { " (\($0.rawValue))" } ?? "")
        case .unknown: "unknown"
        }
    }
}

/// An OCSP response that passed every check of an `OCSPVerificationPolicy`, with the
/// SingleResponse for the CertID it was verified for.
public struct VerifiedOCSPResponse: Sendable {
    /// The whole OCSPResponse, exactly as received: this is what gets stapled.
    public let der: [UInt8]
    public let certID: CertID
    public let status: OCSPCertStatus
    public let thisUpdate: Date
    public let nextUpdate: Date?
    public let producedAt: Date
    /// "CN=StapleGate Demo OCSP Signer" (byName, RFC 2253) or "key hash 3F…" (byKey).
    public let responderID: String
}

/// Reading the fields of OpenSSL's OCSP structures into Swift values.
enum OCSPFields {
    /// The name RFC 6960 §4.2.1 gives each OCSPResponseStatus, for operator messages.
    static func responseStatusName(_ status: Int32) -> String {
        switch status {
        case OCSP_RESPONSE_STATUS_SUCCESSFUL: "successful"
        case OCSP_RESPONSE_STATUS_MALFORMEDREQUEST: "malformedRequest"
        case OCSP_RESPONSE_STATUS_INTERNALERROR: "internalError"
        case OCSP_RESPONSE_STATUS_TRYLATER: "tryLater"
        case OCSP_RESPONSE_STATUS_SIGREQUIRED: "sigRequired"
        case OCSP_RESPONSE_STATUS_UNAUTHORIZED: "unauthorized"
        default: "\(status) (not defined by RFC 6960)"
        }
    }

    /// GeneralizedTime to Date. ASN1_TIME_to_tm normalises to UTC, so timegm (not mktime) applies.
    static func date(_ time: UnsafePointer<ASN1_GENERALIZEDTIME>?) -> Date? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }

    /// The ResponderID as an operator would compare it with `openssl x509 -subject` or with
    /// the signer's subject key identifier.
    static func responderID(_ basic: OpaquePointer) -> String? {
        var keyHash: UnsafePointer<ASN1_OCTET_STRING>?
        var name: OpaquePointer?
        guard OCSP_resp_get0_id(basic, &keyHash, &name) == 1 else { return nil }
        if let name { return rfc2253(name) }
        guard let keyHash else { return nil }
        let length = Int(ASN1_STRING_length(keyHash))
        guard length > 0, let data = ASN1_STRING_get0_data(keyHash) else { return "key hash (empty)" }
        return "key hash \(Hex.upper(Array(UnsafeBufferPointer(start: data, count: length))))"
    }

    static func rfc2253(_ name: OpaquePointer) -> String? {
        guard let bio = BIO_new(BIO_s_mem()) else { return nil }
        defer { BIO_free(bio) }
        guard X509_NAME_print_ex(bio, name, 0, SG_XN_FLAG_RFC2253) >= 0 else { return nil }
        let length = Int(BIO_ctrl_pending(bio))
        guard length > 0 else { return "" }
        var bytes = [UInt8](repeating: 0, count: length)
        let read = BIO_read(bio, &bytes, Int32(length))
        return String(decoding: bytes.prefix(Int(max(read, 0))), as: UTF8.self)
    }
}
