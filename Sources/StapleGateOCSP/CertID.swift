import COpenSSL
import CStapleGateShim
import Foundation
import StapleGateTLS

/// A failure while building an OCSP request or CertID (not a rejected response: those are
/// `OCSPRejection`s). These happen before anything is sent, so they point at our own inputs.
public struct OCSPError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What we were doing, e.g. "cannot compute the CertID of CN=device-1".
    public let message: String
    /// What OpenSSL queued, when it was OpenSSL that failed.
    public let openSSL: OpenSSLError?

    public init(_ message: String, openSSL: OpenSSLError? = nil) {
        self.message = message
        self.openSSL = openSSL
    }

    /// Drains this thread's OpenSSL error queue into the error, right where the call failed.
    static func drain(_ message: String, operation: String) -> OCSPError {
        OCSPError(message, openSSL: OpenSSLError.drain(operation: operation))
    }

    public var description: String {
        guard let openSSL else { return message }
        return "\(message): \(openSSL)"
    }
}

/// RFC 6960 CertID (SHA-1, as every responder including `openssl ocsp` expects by default).
///
/// It names a certificate by its issuer (hashes of the issuer's name and public key) and its
/// serial number, so it is the key both for finding a certificate in a response and for caching.
public struct CertID: Hashable, Sendable, CustomStringConvertible {
    /// SHA-1 of the DER of the issuer's subject name.
    public let issuerNameHash: [UInt8]
    /// SHA-1 of the issuer's subjectPublicKey BIT STRING contents.
    public let issuerKeyHash: [UInt8]
    /// The certificate's serial number as a big-endian magnitude, without leading zero bytes
    /// (zero itself is `[0]`). RFC 5280 forbids negative serials, so the sign is not kept.
    public let serialNumber: [UInt8]

    /// The CertID of `certificate` as issued by `issuer`.
    ///
    /// Throws when `issuer` cannot have issued `certificate` (names, key identifiers, key usage):
    /// OCSP_cert_to_id would not notice, and would hash the name from the certificate's issuer
    /// field with the key of `issuer`, a hybrid CertID that responders answer "unknown" for and
    /// that no signer is authorized for, which would be reported far from the actual mistake.
    public init(certificate: X509Certificate, issuer: X509Certificate) throws(OCSPError) {
        let check = X509_check_issued(issuer.pointer, certificate.pointer)
        guard check == X509_V_OK else {
            let reason = X509_verify_cert_error_string(Int(check)).map { String(cString: $0) } ?? "error \(check)"
            throw OCSPError("\(certificate.subject) was not issued by \(issuer.subject) (\(reason))")
        }
        ERR_clear_error()
        guard let id = OCSP_cert_to_id(EVP_sha1(), certificate.pointer, issuer.pointer) else {
            throw OCSPError.drain("cannot compute the CertID of \(certificate.subject)", operation: "OCSP_cert_to_id")
        }
        defer { OCSP_CERTID_free(id) }
        guard let parts = CertID(openSSL: id) else {
            throw OCSPError.drain("cannot read the CertID of \(certificate.subject)", operation: "OCSP_id_get0_info")
        }
        self = parts
    }

    /// For a pair OpenSSL has just verified as a chain (issuer checks done): the CertID
    /// without checking again, on the handshake's hot path. Nil if OpenSSL cannot compute it.
    init?(verifiedCertificate certificate: X509Certificate, issuer: X509Certificate) {
        guard let id = OCSP_cert_to_id(EVP_sha1(), certificate.pointer, issuer.pointer) else {
            ERR_clear_error()
            return nil
        }
        defer { OCSP_CERTID_free(id) }
        self.init(openSSL: id)
    }

    /// The CertID of serial `serialNumber` issued by `issuer`, for a certificate known only by
    /// its cache entry (a device not connected now). Nil when OpenSSL cannot compute it.
    init?(serialNumber: [UInt8], issuer: X509Certificate) {
        guard let id = Self.makeOpenSSL(serialNumber: serialNumber, issuer: issuer) else { return nil }
        defer { OCSP_CERTID_free(id) }
        self.init(openSSL: id)
    }

    /// Whether `issuer` is the CA this CertID names (its name and key hashes match).
    public func isIssued(by issuer: X509Certificate) -> Bool {
        CertID(serialNumber: serialNumber, issuer: issuer) == self
    }

    /// A new OpenSSL `OCSP_CERTID` (the caller frees it) for this serial under `issuer`: what
    /// `OCSP_cert_to_id` computes from the certificate, here from the serial alone.
    static func makeOpenSSL(serialNumber: [UInt8], issuer: X509Certificate) -> OpaquePointer? {
        ERR_clear_error()
        guard let bignum = BN_bin2bn(serialNumber, Int32(serialNumber.count), nil) else { return nil }
        defer { BN_free(bignum) }
        guard let serial = BN_to_ASN1_INTEGER(bignum, nil) else { return nil }
        defer { ASN1_INTEGER_free(serial) }
        guard let name = X509_get_subject_name(issuer.pointer), let key = X509_get0_pubkey_bitstr(issuer.pointer) else {
            return nil
        }
        return OCSP_cert_id_new(EVP_sha1(), name, key, serial)
    }

    public init(issuerNameHash: [UInt8], issuerKeyHash: [UInt8], serialNumber: [UInt8]) {
        self.issuerNameHash = issuerNameHash
        self.issuerKeyHash = issuerKeyHash
        let significant = Array(serialNumber.drop(while: { $0 == 0 }))
        self.serialNumber = significant.isEmpty ? [0] : significant
    }

    /// Reads the parts of an OpenSSL `OCSP_CERTID` it does not take ownership of. Nil when it
    /// is not a SHA-1 CertID (the only kind this type describes) or cannot be read.
    init?(openSSL id: OpaquePointer) {
        var nameHash: UnsafeMutablePointer<ASN1_OCTET_STRING>?
        var algorithm: OpaquePointer?
        var keyHash: UnsafeMutablePointer<ASN1_OCTET_STRING>?
        var serial: UnsafeMutablePointer<ASN1_INTEGER>?
        guard OCSP_id_get0_info(&nameHash, &algorithm, &keyHash, &serial, id) == 1,
              let nameHash, let algorithm, let keyHash, let serial,
              OBJ_obj2nid(algorithm) == NID_sha1,
              let magnitude = Self.magnitude(of: serial) else { return nil }
        self.init(issuerNameHash: Self.bytes(of: nameHash), issuerKeyHash: Self.bytes(of: keyHash),
                  serialNumber: magnitude)
    }

    /// Upper-case hex, like `openssl x509 -serial` (two digits per byte).
    public var serialHex: String { Hex.upper(serialNumber) }

    public var description: String {
        "serial \(serialHex) (issuer key hash \(Hex.upper(issuerKeyHash)))"
    }

    private static func bytes(of string: UnsafePointer<ASN1_STRING>) -> [UInt8] {
        let length = Int(ASN1_STRING_length(string))
        guard length > 0, let data = ASN1_STRING_get0_data(string) else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: length))
    }

    /// Through a BIGNUM so that the bytes are normalised whatever encoding the INTEGER had.
    private static func magnitude(of integer: UnsafePointer<ASN1_INTEGER>) -> [UInt8]? {
        guard let bignum = ASN1_INTEGER_to_BN(integer, nil) else { return nil }
        defer { BN_free(bignum) }
        // BN_num_bytes is a macro; this is its definition.
        let count = (Int(BN_num_bits(bignum)) + 7) / 8
        var bytes = [UInt8](repeating: 0, count: count)
        guard Int(BN_bn2bin(bignum, &bytes)) == count else { return nil }
        return bytes
    }
}

enum Hex {
    static func upper(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

extension CertID {
    /// Whether this CertID is about `certificate`: the same serial, and an issuer name hash of
    /// the name the certificate gives for its issuer. The key hash would need the issuer's
    /// certificate; callers use this only to refuse, where two CAs of one name issuing one
    /// serial is the only confusion.
    public func names(_ certificate: X509Certificate) -> Bool {
        guard let serial = X509_get0_serialNumber(certificate.pointer), let bignum = ASN1_INTEGER_to_BN(serial, nil) else {
            return false
        }
        defer { BN_free(bignum) }
        var magnitude = [UInt8](repeating: 0, count: Int((BN_num_bits(bignum) + 7) / 8))
        BN_bn2bin(bignum, &magnitude)
        guard (magnitude.isEmpty ? [0] : magnitude) == serialNumber else { return false }
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard let issuer = X509_get_issuer_name(certificate.pointer),
              X509_NAME_digest(issuer, EVP_sha1(), &digest, &length) == 1 else { return false }
        return Array(digest.prefix(Int(length))) == issuerNameHash
    }
}
