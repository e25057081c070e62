import COpenSSL
import CStapleGateShim
import Foundation
import StapleGateTLS

/// An RFC 6960 OCSPRequest for one certificate, unsigned (responders do not expect signed
/// requests), ready to POST as `application/ocsp-request` or to send as a GET.
public struct OCSPRequest: Sendable {
    public let certID: CertID
    /// 16 random bytes when requested, sent in the id-pkix-ocsp-nonce extension. Off by default:
    /// CDN-fronted responders serve pre-signed responses and ignore (or reject) nonces, and a
    /// stapled response is shared by every handshake anyway.
    public let nonce: [UInt8]?
    /// DER OCSPRequest (i2d_OCSP_REQUEST).
    public let der: [UInt8]

    /// The length RFC 6960 §4.4.1 recommends for a nonce.
    static let nonceLength = 16

    public init(certificate: X509Certificate, issuer: X509Certificate, includeNonce: Bool = false) throws(OCSPError) {
        try self.init(certID: try CertID(certificate: certificate, issuer: issuer), issuer: issuer, includeNonce: includeNonce)
    }

    /// The request for `certID`, whose issuer is `issuer` (checked: a CertID under another CA
    /// would be answered "unknown" and mislead). Needs no certificate, so a device known only
    /// by its cache entry can be asked about again.
    public init(certID: CertID, issuer: X509Certificate, includeNonce: Bool = false) throws(OCSPError) {
        self.certID = certID
        ERR_clear_error()
        guard let request = OCSP_REQUEST_new() else {
            throw OCSPError.drain("cannot allocate an OCSP request", operation: "OCSP_REQUEST_new")
        }
        defer { OCSP_REQUEST_free(request) }

        guard let id = CertID.makeOpenSSL(serialNumber: certID.serialNumber, issuer: issuer) else {
            throw OCSPError.drain("cannot compute the CertID of serial \(certID.serialHex)", operation: "OCSP_cert_id_new")
        }
        guard CertID(openSSL: id) == certID else {
            OCSP_CERTID_free(id)
            throw OCSPError("serial \(certID.serialHex) is not under \(issuer.subject) (its issuer name or key hash differs)")
        }
        // On success the request owns the CertID; on failure it is still ours to free.
        guard OCSP_request_add0_id(request, id) != nil else {
            OCSP_CERTID_free(id)
            throw OCSPError.drain("cannot add the CertID to the OCSP request", operation: "OCSP_request_add0_id")
        }

        if includeNonce {
            var bytes = [UInt8](repeating: 0, count: Self.nonceLength)
            guard RAND_bytes(&bytes, Int32(bytes.count)) == 1 else {
                throw OCSPError.drain("cannot generate an OCSP nonce", operation: "RAND_bytes")
            }
            guard OCSP_request_add1_nonce(request, &bytes, Int32(bytes.count)) == 1 else {
                throw OCSPError.drain("cannot add the nonce to the OCSP request", operation: "OCSP_request_add1_nonce")
            }
            nonce = bytes
        } else {
            nonce = nil
        }

        let length = i2d_OCSP_REQUEST(request, nil)
        guard length > 0 else {
            throw OCSPError.drain("cannot encode the OCSP request", operation: "i2d_OCSP_REQUEST")
        }
        var encoded = [UInt8](repeating: 0, count: Int(length))
        // i2d advances the pointer it is given; it points into `encoded`, which is all we need.
        let written = encoded.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_OCSP_REQUEST(request, &cursor)
        }
        guard written == length else {
            throw OCSPError.drain("cannot encode the OCSP request", operation: "i2d_OCSP_REQUEST")
        }
        der = encoded
    }

    /// RFC 5019 / RFC 6960 appendix A GET form: base URL + "/" + URL-encoded base64 of the DER.
    /// A trailing slash on the base URL is not doubled (some responders route "//" elsewhere).
    /// Caches and CDNs key on this URL, which is why GET is preferred for requests without nonce.
    public func getURL(responderURL: String) -> String {
        var base = Substring(responderURL)
        while base.hasSuffix("/") { base = base.dropLast() }
        return "\(base)/\(Self.urlEncode(Data(der).base64EncodedString()))"
    }

    /// Base64 uses "+", "/" and "=", which mean something in a URL path or are altered by
    /// proxies; RFC 5019 §5 asks for them percent-encoded.
    static func urlEncode(_ base64: String) -> String {
        var encoded = ""
        encoded.reserveCapacity(base64.utf8.count + 8)
        for character in base64 {
            switch character {
            case "+": encoded += "%2B"
            case "/": encoded += "%2F"
            case "=": encoded += "%3D"
            default: encoded.append(character)
            }
        }
        return encoded
    }

    /// Runs `body` with an OpenSSL OCSP_REQUEST that carries only `nonce`, encoded exactly as
    /// `init` encodes it, so that `OCSP_check_nonce` can compare it with a response's.
    /// Nil when OpenSSL cannot build it.
    static func withNonceCarrier<Result>(_ nonce: [UInt8], _ body: (OpaquePointer) -> Result) -> Result? {
        guard let request = OCSP_REQUEST_new() else { return nil }
        defer { OCSP_REQUEST_free(request) }
        var bytes = nonce
        // With a NULL value OpenSSL would make up a random nonce: never ask it to.
        guard !bytes.isEmpty, OCSP_request_add1_nonce(request, &bytes, Int32(bytes.count)) == 1 else { return nil }
        return body(request)
    }
}
