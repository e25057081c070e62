import COpenSSL
import CStapleGateShim
import Foundation

/// One session ticket key in nginx's 80-byte layout (`ssl_session_ticket_key`): the 16-byte
/// key_name of RFC 5077 §4, sent in clear at the head of every ticket it encrypts, then a 32-byte
/// HMAC-SHA256 secret and a 32-byte AES-256-CBC key. Everything but the name is secret, so
/// printing, dumping or interpolating a key shows its short name only.
public struct SessionTicketKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable {
    public static let nameLength = 16
    public static let hmacSecretLength = 32
    public static let aesKeyLength = 32
    public static let length = nameLength + hmacSecretLength + aesKeyLength

    /// name ‖ HMAC secret ‖ AES key.
    let bytes: [UInt8]

    /// nil unless `bytes` is exactly `length` long.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.length else { return nil }
        self.bytes = bytes
    }

    /// A fresh key from OpenSSL's CSPRNG, the source OpenSSL's own ticket keys come from.
    public static func random() -> SessionTicketKey {
        var bytes = [UInt8](repeating: 0, count: length)
        guard RAND_bytes(&bytes, Int32(length)) == 1 else {
            // Without randomness there is no safe key to make, and no TLS either.
            fatalError("RAND_bytes failed: \(OpenSSLError.drain(operation: "RAND_bytes"))")
        }
        return SessionTicketKey(bytes: bytes)!
    }

    public var name: ArraySlice<UInt8> { bytes[0..<Self.nameLength] }

    /// All 80 bytes, for sealing the key before it is stored (`tls.session_ticket_keys: fleet`).
    /// Secret: never log or store them as they are.
    public var secretBytes: [UInt8] { bytes }

    /// The whole name in hex: the fleet's id for the key (public, as the name is).
    public var nameHex: String {
        name.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// The first 8 bytes of the name in hex: enough to tell keys apart, and public anyway (every
    /// ticket carries the whole name in clear).
    public var shortName: String {
        name.prefix(8).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// The file form (`SessionTicketKeyFile`): base64 of all 80 bytes. Secret.
    var base64: String { Data(bytes).base64EncodedString() }

    public var description: String { "session ticket key \(shortName)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["name": shortName]) }

    /// Whether the 16 bytes at `candidate` are this key's name.
    func isNamed(_ candidate: UnsafePointer<UInt8>) -> Bool {
        bytes.withUnsafeBufferPointer { memcmp($0.baseAddress!, candidate, Self.nameLength) == 0 }
    }

    /// Keys OpenSSL's cipher and MAC contexts for one ticket, as nginx does: AES-256-CBC with
    /// `iv`, HMAC-SHA256 with the secret. False when OpenSSL refuses (then the handshake fails
    /// rather than use a half-keyed context).
    func prepare(cipher: OpaquePointer, mac: OpaquePointer, iv: UnsafePointer<UInt8>, encrypting: Bool) -> Bool {
        bytes.withUnsafeBufferPointer { buffer in
            let base = buffer.baseAddress!
            guard sg_ticket_hmac_sha256_init(mac, base + Self.nameLength, Self.hmacSecretLength) == 1 else { return false }
            let aesKey = base + Self.nameLength + Self.hmacSecretLength
            return encrypting
                ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nil, aesKey, iv) == 1
                : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nil, aesKey, iv) == 1
        }
    }
}
