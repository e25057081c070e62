import COpenSSL
import Foundation
import NIOConcurrencyHelpers
import StapleGateTLS

/// The certificates responders put in their responses (RFC 6960 §4.2.1 `certs`: the delegated
/// signer), each decoded once per process rather than once per response.
///
/// OpenSSL 3.0 decodes a certificate's public key through its provider decoders, which cost more
/// than the response's signature check: in a first-connect profile, parsing the signer
/// certificate carried by every response was 8.7 % of the gateway's CPU. A responder signs with
/// the same certificate for days, so the response is parsed without its `certs`
/// (`BasicResponseParts`) and each certificate there is looked up by its exact DER here.
/// Handed to `OCSP_basic_verify` after the issuer, they are searched for the signer after it,
/// as the response's own field would be, and make the same untrusted set (ocsp_vfy.c).
public final class ResponderCertificates: Sendable {
    /// Shared by every policy: responders rarely change certificates, and an entry is only a
    /// parsed copy of bytes, valid whatever the clock says.
    public static let shared = ResponderCertificates()

    private let capacity: Int
    /// Oldest first; a handful of entries at most in practice, so a linear search is cheapest.
    private let entries = NIOLockedValueBox<[(der: [UInt8], certificate: X509Certificate)]>([])

    public init(capacity: Int = 32) {
        self.capacity = capacity
    }

    /// The certificate encoded by `der`, decoded now or earlier; nil if it is no certificate.
    func certificate(_ der: ArraySlice<UInt8>) -> X509Certificate? {
        if let known = entries.withLockedValue({ $0.first { $0.der.elementsEqual(der) }?.certificate }) { return known }
        guard let decoded = Self.decode(der) else { return nil }
        entries.withLockedValue { entries in
            if entries.count >= capacity { entries.removeFirst(entries.count - capacity + 1) }
            entries.append((Array(der), decoded))
        }
        return decoded
    }

    var count: Int { entries.withLockedValue { $0.count } }

    private static func decode(_ der: ArraySlice<UInt8>) -> X509Certificate? {
        der.withUnsafeBufferPointer { buffer -> X509Certificate? in
            guard let base = buffer.baseAddress else { return nil }
            var cursor: UnsafePointer<UInt8>? = base
            guard let parsed = d2i_X509(nil, &cursor, buffer.count) else { return nil }
            let certificate = X509Certificate(taking: parsed)
            // Exactly one certificate, or the bytes looked up would not be what was decoded.
            return cursor == base + buffer.count ? certificate : nil
        }
    }
}

/// A DER OCSPResponse split into its BasicOCSPResponse without `certs`, and the DER of each
/// certificate that was there. nil for anything not plainly DER in the expected shape (then
/// the caller parses the whole response as OpenSSL does, and its verdict stands).
struct BasicResponseParts: Equatable {
    /// BasicOCSPResponse { tbsResponseData, signatureAlgorithm, signature }, re-wrapped.
    let withoutCertificates: [UInt8]
    let certificates: [ArraySlice<UInt8>]

    /// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1, as DER content bytes.
    private static let basicResponseType: [UInt8] = [0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01]

    static func split(_ der: [UInt8]) -> BasicResponseParts? {
        // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ResponseBytes }
        guard let response = DERElement.read(der[...], tag: 0x30), response.rest.isEmpty,
              let status = DERElement.read(response.content, tag: 0x0A),
              let explicit = DERElement.read(status.rest, tag: 0xA0), explicit.rest.isEmpty,
              // ResponseBytes ::= SEQUENCE { responseType OID, response OCTET STRING }
              let bytes = DERElement.read(explicit.content, tag: 0x30), bytes.rest.isEmpty,
              let type = DERElement.read(bytes.content, tag: 0x06), type.content.elementsEqual(basicResponseType),
              let octets = DERElement.read(type.rest, tag: 0x04), octets.rest.isEmpty,
              // BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature, certs [0] EXPLICIT OPTIONAL }
              let basic = DERElement.read(octets.content, tag: 0x30), basic.rest.isEmpty,
              let tbs = DERElement.read(basic.content, tag: 0x30),
              let algorithm = DERElement.read(tbs.rest, tag: 0x30),
              let signature = DERElement.read(algorithm.rest, tag: 0x03) else { return nil }
        var certificates: [ArraySlice<UInt8>] = []
        if !signature.rest.isEmpty {
            guard let field = DERElement.read(signature.rest, tag: 0xA0), field.rest.isEmpty,
                  let sequence = DERElement.read(field.content, tag: 0x30), sequence.rest.isEmpty else { return nil }
            var remaining = sequence.content
            while !remaining.isEmpty {
                guard let certificate = DERElement.read(remaining, tag: 0x30) else { return nil }
                certificates.append(certificate.whole)
                remaining = certificate.rest
            }
        }
        let kept = basic.content[basic.content.startIndex..<signature.rest.startIndex]
        return BasicResponseParts(withoutCertificates: DERElement.header(tag: 0x30, length: kept.count) + kept,
                                  certificates: certificates)
    }
}

/// One DER TLV: low tag numbers and definite lengths only (all DER allows for these types).
struct DERElement {
    let whole: ArraySlice<UInt8>
    let content: ArraySlice<UInt8>
    let rest: ArraySlice<UInt8>

    static func read(_ bytes: ArraySlice<UInt8>, tag: UInt8) -> DERElement? {
        var index = bytes.startIndex
        guard index < bytes.endIndex, bytes[index] == tag else { return nil }
        index += 1
        guard index < bytes.endIndex else { return nil }
        let first = bytes[index]
        index += 1
        var length = 0
        if first < 0x80 {
            length = Int(first)
        } else {
            // 0x80 is BER's indefinite length; more than 4 length bytes is no OCSP response.
            let count = Int(first & 0x7F)
            guard (1...4).contains(count), bytes.endIndex - index >= count, bytes[index] != 0 else { return nil }
            for _ in 0..<count {
                length = length << 8 | Int(bytes[index])
                index += 1
            }
            guard length >= 0x80 else { return nil }  // DER: the short form where it fits
        }
        guard bytes.endIndex - index >= length else { return nil }
        let end = index + length
        return DERElement(whole: bytes[bytes.startIndex..<end], content: bytes[index..<end], rest: bytes[end...])
    }

    static func header(tag: UInt8, length: Int) -> [UInt8] {
        guard length >= 0x80 else { return [tag, UInt8(length)] }
        var octets: [UInt8] = []
        var remaining = length
        while remaining > 0 {
            octets.insert(UInt8(remaining & 0xFF), at: 0)
            remaining >>= 8
        }
        return [tag, 0x80 | UInt8(octets.count)] + octets
    }
}
