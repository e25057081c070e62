import COpenSSL
import CStapleGateShim
import Foundation

/// A parsed X.509 certificate. Immutable once loaded, so it is shared freely across event loops.
public final class X509Certificate: @unchecked Sendable {
    /// Owned reference (freed in deinit).
    package let pointer: OpaquePointer

    /// Takes ownership of `pointer`.
    package init(taking pointer: OpaquePointer) {
        self.pointer = pointer
    }

    /// Adds a reference to a certificate OpenSSL owns (e.g. the peer's) and wraps it.
    package init(borrowing pointer: OpaquePointer) {
        X509_up_ref(pointer)
        self.pointer = pointer
    }

    deinit { X509_free(pointer) }

    public var subject: String { Self.format(X509_get_subject_name(pointer)) }
    public var issuer: String { Self.format(X509_get_issuer_name(pointer)) }

    /// The subject's commonName, which is what device fleets conventionally use as identity.
    public var commonName: String? {
        guard let name = X509_get_subject_name(pointer) else { return nil }
        let index = X509_NAME_get_index_by_NID(name, NID_commonName, -1)
        guard index >= 0, let entry = X509_NAME_get_entry(name, index),
              let data = X509_NAME_ENTRY_get_data(entry) else { return nil }
        var utf8: UnsafeMutablePointer<UInt8>?
        let length = ASN1_STRING_to_UTF8(&utf8, data)
        guard length >= 0, let utf8 else { return nil }
        defer { sg_OPENSSL_free(utf8) }
        return String(decoding: UnsafeBufferPointer(start: utf8, count: Int(length)), as: UTF8.self)
    }

    /// Serial number as upper-case hex without separators, as `openssl x509 -serial` prints it.
    public var serialHex: String {
        guard let serial = X509_get0_serialNumber(pointer),
              let bignum = ASN1_INTEGER_to_BN(serial, nil) else { return "" }
        defer { BN_free(bignum) }
        guard let hex = BN_bn2hex(bignum) else { return "" }
        defer { sg_OPENSSL_free(hex) }
        return String(cString: hex)
    }

    public var notBefore: Date? { Self.date(X509_get0_notBefore(pointer)) }
    public var notAfter: Date? { Self.date(X509_get0_notAfter(pointer)) }

    /// Key algorithm, used to keep one certificate per OpenSSL key slot.
    public var keyAlgorithm: KeyAlgorithm {
        guard let key = X509_get0_pubkey(pointer) else { return .other("none") }
        return KeyAlgorithm(EVP_PKEY_get_base_id(key))
    }

    public var isCA: Bool { X509_check_ca(pointer) != 0 }

    /// Issued by itself (a root): where walking up a chain stops.
    public var isSelfIssued: Bool { X509_check_issued(pointer, pointer) == X509_V_OK }

    /// Whether `other` is the same certificate (same DER). Cheap: OpenSSL compares the SHA-1
    /// it keeps from parsing before the encodings, where a fingerprint would hash again.
    public func isSameCertificate(as other: X509Certificate) -> Bool { X509_cmp(pointer, other.pointer) == 0 }

    /// SHA-256 of the DER certificate in lower-case hex: a stable name for state kept about it.
    public var sha256Fingerprint: String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(pointer, EVP_sha256(), &digest, &length) == 1 else { return "" }
        return digest.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
    }

    /// The OCSP responder URLs in the Authority Information Access extension, in order.
    public var ocspResponderURLs: [String] {
        guard let urls = X509_get1_ocsp(pointer) else { return [] }
        defer { X509_email_free(urls) }
        return (0..<sg_sk_OPENSSL_STRING_num(urls)).compactMap { index in
            sg_sk_OPENSSL_STRING_value(urls, index).map { String(cString: $0) }
        }
    }

    public enum SubjectAlternativeName: Sendable, Equatable {
        case dns(String)
        case uri(String)
    }

    /// The DNS and URI entries of the subject alternative name extension, in order (other
    /// kinds, such as IP addresses and e-mail, are not device identities here).
    public var subjectAlternativeNames: [SubjectAlternativeName] {
        guard let names = sg_X509_subject_alt_names(pointer) else { return [] }
        defer { sg_GENERAL_NAMES_free(names) }
        return (0..<sg_sk_GENERAL_NAME_num(names)).compactMap { index -> SubjectAlternativeName? in
            guard let name = sg_sk_GENERAL_NAME_value(names, index) else { return nil }
            var type: Int32 = 0
            var length: Int32 = 0
            guard let text = sg_GENERAL_NAME_text(name, &type, &length), length > 0 else { return nil }
            let value = String(decoding: UnsafeBufferPointer(start: text, count: Int(length)), as: UTF8.self)
            return type == GEN_DNS ? .dns(value) : .uri(value)
        }
    }

    /// Whether the certificate carries the TLS Feature extension with status_request
    /// (RFC 7633 "must-staple"): clients may then refuse it without a stapled response.
    public var isMustStaple: Bool {
        sg_X509_has_status_request_feature(pointer) == 1
    }

    public enum KeyAlgorithm: Equatable, CustomStringConvertible, Sendable {
        case rsa, ecdsa, ed25519, other(String)
        init(_ id: Int32) {
            switch id {
            case EVP_PKEY_RSA, EVP_PKEY_RSA_PSS: self = .rsa
            case EVP_PKEY_EC: self = .ecdsa
            case EVP_PKEY_ED25519: self = .ed25519
            default: self = .other(OBJ_nid2sn(id).map { String(cString: $0) } ?? "NID \(id)")
            }
        }
        public var description: String {
            switch self {
            case .rsa: "RSA"
            case .ecdsa: "ECDSA"
            case .ed25519: "Ed25519"
            case let .other(name): name
            }
        }
    }

    static func format(_ name: OpaquePointer?) -> String {
        guard let name, let bio = BIO_new(BIO_s_mem()) else { return "" }
        defer { BIO_free(bio) }
        X509_NAME_print_ex(bio, name, 0, SG_XN_FLAG_RFC2253)
        return MemoryBIO.readAll(bio)
    }

    static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }
}

/// A parsed private key.
public final class PrivateKey: @unchecked Sendable {
    package let pointer: OpaquePointer
    package init(taking pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }

    public func matches(_ certificate: X509Certificate) -> Bool {
        defer { ERR_clear_error() }
        return X509_check_private_key(certificate.pointer, pointer) == 1
    }
}

enum MemoryBIO {
    /// Everything currently buffered in a memory BIO, as UTF-8 text.
    static func readAll(_ bio: OpaquePointer) -> String {
        let length = Int(BIO_ctrl_pending(bio))
        guard length > 0 else { return "" }
        var bytes = [UInt8](repeating: 0, count: length)
        let read = BIO_read(bio, &bytes, Int32(length))
        return String(decoding: bytes.prefix(Int(max(read, 0))), as: UTF8.self)
    }
}
