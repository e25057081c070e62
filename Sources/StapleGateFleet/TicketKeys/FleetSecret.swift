import COpenSSL
import Foundation
import StapleGateTLS
#if canImport(Glibc)
import Glibc
#endif

/// Why `fleet.secret_file` cannot be used; the message names the key and the file, since the
/// fix is about that file (and every gateway of the fleet needs the same one).
public struct FleetSecretError: Error, Sendable, Equatable, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "fleet.secret_file \(path): \(reason)" }
}

/// `fleet.secret_file`: a secret of this machine (every gateway of the fleet is given the same
/// file), from which the key that seals the fleet's session ticket keys in the database is
/// derived. Whoever can read the database but not this file cannot open a ticket.
///
/// The file's bytes are the secret, trailing line breaks aside (so `openssl rand -base64 48 >
/// FILE` and an editor's final newline give the same secret). At least `minimumBytes` of them,
/// and the file no more open than the ticket key files (0640).
public struct FleetSecret: Sendable {
    public static let minimumBytes = 32
    static let maximumBytes = 4096

    public let path: String
    /// AES-256 key sealing the ticket keys: HKDF-SHA256 of the secret, so the secret itself is
    /// used for nothing else and a later use can derive a key of its own (another `info`).
    let sealingKey: [UInt8]

    static let salt = Array("staplegate fleet secret".utf8)
    static let ticketKeyInfo = Array("staplegate ticket key sealing v1".utf8)

    init(secret: [UInt8], path: String) {
        self.path = path
        sealingKey = HKDF.sha256(secret: secret, salt: Self.salt, info: Self.ticketKeyInfo, length: 32)
    }

    /// Reads and checks the file; throws naming `fleet.secret_file`, the file and the fix.
    public static func load(at path: String) throws(FleetSecretError) -> FleetSecret {
        func failure(_ reason: String) -> FleetSecretError { FleetSecretError(path: path, reason: reason) }
        let data: Data
        switch SecretFile.read(at: path, maximumBytes: maximumBytes) {
        case let .success(bytes): data = bytes
        case let .failure(problem):
            throw failure(problem.reason(kind: "a secret", exposure: "with it and the database, every device's resumed session can be opened",
                                         maximumBytes: maximumBytes))
        }
        var bytes = [UInt8](data)
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard bytes.count >= minimumBytes else {
            throw failure("holds \(bytes.count) bytes, fewer than \(minimumBytes); make one with `openssl rand -base64 48 > \(path)` and give every gateway of the fleet the same file")
        }
        return FleetSecret(secret: bytes, path: path)
    }
}

/// HKDF (RFC 5869) with HMAC-SHA256 from libcrypto: extract, then as many expand blocks as
/// `length` needs.
enum HKDF {
    static func sha256(secret: [UInt8], salt: [UInt8], info: [UInt8], length: Int) -> [UInt8] {
        precondition(length <= 255 * 32, "HKDF-SHA256 gives at most 8160 bytes")
        let prk = hmac(key: salt, data: secret)
        var output: [UInt8] = []
        var block: [UInt8] = []
        var counter: UInt8 = 1
        while output.count < length {
            block = hmac(key: prk, data: block + info + [counter])
            output += block
            counter += 1
        }
        return Array(output.prefix(length))
    }

    static func hmac(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        // An empty salt is HashLen zero bytes (RFC 5869 §2.2); libcrypto wants a non-nil pointer.
        let key = key.isEmpty ? [UInt8](repeating: 0, count: 32) : key
        precondition(!data.isEmpty, "HKDF never MACs empty data here")
        let done = key.withUnsafeBytes { keyBytes in
            data.withUnsafeBufferPointer { dataBytes in
                HMAC(EVP_sha256(), keyBytes.baseAddress, Int32(key.count), dataBytes.baseAddress, dataBytes.count,
                     &digest, &length)
            }
        }
        precondition(done != nil && length == 32, "HMAC-SHA256 failed")
        return digest
    }
}
