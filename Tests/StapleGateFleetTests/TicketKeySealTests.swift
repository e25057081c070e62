import Foundation
@testable import StapleGateFleet
import StapleGateTLS
import TestSupport
import XCTest

/// How the fleet's ticket keys are kept in the database: AES-256-GCM under a key derived from
/// `fleet.secret_file`, the key's id as associated data. Whatever is wrong (another secret, a
/// changed byte, a blob moved to another id) fails to open, and says which file to look at.
final class TicketKeySealTests: XCTestCase {
    private let secret = FleetSecret(secret: Array("the fleet's shared secret, 32+ bytes long".utf8), path: "/etc/staplegate/fleet.secret")

    func testASealedKeyOpensToTheSameKey() throws {
        let key = SessionTicketKey.random()
        let sealed = TicketKeySeal.seal(key, id: key.nameHex, with: secret)
        XCTAssertEqual(sealed.count, TicketKeySeal.sealedLength)
        XCTAssertEqual(sealed.first, 1, "format version")
        XCTAssertEqual(try TicketKeySeal.open(sealed, id: key.nameHex, with: secret), key)
    }

    func testTheSealedBlobHoldsNoPartOfTheKeyInTheClear() {
        let key = SessionTicketKey.random()
        let sealed = TicketKeySeal.seal(key, id: key.nameHex, with: secret)
        let raw = key.secretBytes
        // No 8-byte run of the key (its name included) appears anywhere in the blob.
        for start in stride(from: 0, through: raw.count - 8, by: 1) {
            let window = Array(raw[start..<(start + 8)])
            XCTAssertFalse(sealed.indices.dropLast(7).contains { Array(sealed[$0..<($0 + 8)]) == window },
                           "key bytes \(start)..<\(start + 8) in the clear")
        }
        XCTAssertNotEqual(TicketKeySeal.seal(key, id: key.nameHex, with: secret), sealed, "a fresh nonce each time")
    }

    func testAnotherSecretCannotOpenItAndTheErrorNamesTheSecretFile() {
        let key = SessionTicketKey.random()
        let sealed = TicketKeySeal.seal(key, id: key.nameHex, with: secret)
        let other = FleetSecret(secret: Array("another fleet's secret, also 32+ bytes".utf8), path: "/etc/other.secret")
        XCTAssertThrowsError(try TicketKeySeal.open(sealed, id: key.nameHex, with: other)) { error in
            XCTAssertEqual(error as? TicketKeySealError, .notOpened(path: "/etc/other.secret"))
            XCTAssertTrue("\(error)".contains("cannot be opened with fleet.secret_file /etc/other.secret"), "\(error)")
        }
    }

    func testAnyChangedByteOrAnotherIDFailsToOpen() {
        let key = SessionTicketKey.random()
        let sealed = TicketKeySeal.seal(key, id: key.nameHex, with: secret)
        // The nonce, the ciphertext and the tag: each byte is covered.
        for index in 1..<sealed.count {
            var tampered = sealed
            tampered[index] ^= 0x01
            XCTAssertThrowsError(try TicketKeySeal.open(tampered, id: key.nameHex, with: secret), "byte \(index)")
        }
        let otherID = SessionTicketKey.random().nameHex
        XCTAssertThrowsError(try TicketKeySeal.open(sealed, id: otherID, with: secret)) { error in
            XCTAssertEqual(error as? TicketKeySealError, .notOpened(path: secret.path), "the id is associated data")
        }
    }

    func testABlobThatIsNoSealedKeyIsMalformed() {
        let id = SessionTicketKey.random().nameHex
        XCTAssertThrowsError(try TicketKeySeal.open([1, 2, 3], id: id, with: secret)) { error in
            guard case .malformed? = error as? TicketKeySealError else { return XCTFail("\(error)") }
        }
        var future = TicketKeySeal.seal(SessionTicketKey.random(), id: id, with: secret)
        future[0] = 2
        XCTAssertThrowsError(try TicketKeySeal.open(future, id: id, with: secret)) { error in
            XCTAssertTrue("\(error)".contains("format version 2"), "\(error)")
        }
    }

    /// A key sealed under its own id opens only to a key of that name: a sealed key copied,
    /// with its id, from one row to another still fails (here: sealed under the wrong id).
    func testAKeySealedUnderAnotherNameIsRefused() {
        let key = SessionTicketKey.random()
        let id = SessionTicketKey.random().nameHex
        let sealed = TicketKeySeal.seal(key, id: id, with: secret)
        XCTAssertThrowsError(try TicketKeySeal.open(sealed, id: id, with: secret)) { error in
            XCTAssertEqual(error as? TicketKeySealError, .wrongName)
        }
    }

    // MARK: The secret and its derived key

    /// RFC 5869 appendix A.1 (and A.3: no salt, no info), so the derivation is HKDF indeed.
    func testHKDFMatchesRFC5869() {
        let ikm = [UInt8](repeating: 0x0b, count: 22)
        let salt: [UInt8] = Array(0x00...0x0c)
        let info: [UInt8] = Array(0xf0...0xf9)
        XCTAssertEqual(hex(HKDF.sha256(secret: ikm, salt: salt, info: info, length: 42)),
                       "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        XCTAssertEqual(hex(HKDF.sha256(secret: ikm, salt: [], info: [], length: 42)),
                       "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    }

    func testTheSecretFileIsCheckedAndATrailingNewlineDoesNotChangeTheSecret() throws {
        let folder = try TemporaryDirectory(prefix: "fleet-secret")
        defer { folder.remove() }
        let text = "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IHNlY3JldCBzZWNyZXQ="
        let plain = try folder.write("plain.secret", text)
        let withNewline = try folder.write("newline.secret", text + "\n")
        for path in [plain, withNewline] { XCTAssertEqual(chmod(path, 0o600), 0) }
        XCTAssertEqual(try FleetSecret.load(at: plain).sealingKey, try FleetSecret.load(at: withNewline).sealingKey)

        let short = try folder.write("short.secret", "too short\n")
        XCTAssertEqual(chmod(short, 0o600), 0)
        XCTAssertThrowsError(try FleetSecret.load(at: short)) { error in
            XCTAssertTrue("\(error)".contains("fleet.secret_file \(short): holds 9 bytes, fewer than 32"), "\(error)")
        }
        XCTAssertEqual(chmod(plain, 0o644), 0)
        XCTAssertThrowsError(try FleetSecret.load(at: plain)) { error in
            XCTAssertTrue("\(error)".contains("mode 644 is wider than 640"), "\(error)")
        }
        XCTAssertThrowsError(try FleetSecret.load(at: folder.file("missing.secret"))) { error in
            XCTAssertTrue("\(error)".contains("no such file"), "\(error)")
        }
    }

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}
