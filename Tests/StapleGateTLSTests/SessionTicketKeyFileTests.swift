import Foundation
@testable import StapleGateTLS
import TestSupport
import XCTest

/// The key file `tls.session_ticket_keys` names: what it accepts, every way it is refused (each
/// naming the file, and the line when one is at fault), and the files `ticket-keys` writes.
final class SessionTicketKeyFileTests: XCTestCase {
    private var directory: TemporaryDirectory!

    override func setUpWithError() throws {
        directory = try TemporaryDirectory(prefix: "ticket-keys")
    }

    override func tearDown() {
        directory.remove()
    }

    /// Writes `text` as a key file with `mode` (0600 unless said otherwise).
    private func keyFile(_ text: String, mode: mode_t = 0o600, name: String = "ticket.keys") throws -> String {
        let path = try directory.write(name, text)
        XCTAssertEqual(chmod(path, mode), 0)
        return path
    }

    /// A key line of `count` random bytes (80 for a good key).
    private func line(_ count: Int) -> String {
        Data((0..<count).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    /// The file at `path` is refused with `line` and a reason containing each of `reasons`.
    private func assertRefused(_ path: String, line expectedLine: Int?, _ reasons: String...,
                               file: StaticString = #filePath, line: UInt = #line) {
        do {
            let ring = try SessionTicketKeyFile.load(at: path)
            XCTFail("loaded \(ring.keys.count) key(s), should have been refused", file: file, line: line)
        } catch {
            XCTAssertEqual(error.path, path, file: file, line: line)
            XCTAssertEqual(error.line, expectedLine, "\(error)", file: file, line: line)
            let prefix = expectedLine.map { "\(path):\($0): " } ?? "\(path): "
            XCTAssertTrue(error.description.hasPrefix(prefix), "\(error) should start with \(prefix)", file: file, line: line)
            for reason in reasons {
                XCTAssertTrue(error.reason.contains(reason), "\"\(error.reason)\" should contain \"\(reason)\"", file: file, line: line)
            }
        }
    }

    // MARK: Accepted

    func testKeysInOrderWithCommentsBlankLinesAndSpacesAround() throws {
        let keys = [SessionTicketKey.random(), .random(), .random()]
        let path = try keyFile("""
            # fleet keys, rotated 2026-12-01
            \(keys[0].base64)

              \(keys[1].base64)\t
            # the oldest, dropped at the next rotation
            \(keys[2].base64)\r

            """)
        let ring = try SessionTicketKeyFile.load(at: path)
        XCTAssertEqual(ring.keys, keys)
        XCTAssertEqual(ring.encryptionKey, keys[0])
        XCTAssertEqual(ring.source, .file(path))
        XCTAssertTrue(ring.summary.contains("3 key(s) from \(path), new tickets under key \(keys[0].shortName)"), ring.summary)
    }

    func testGroupReadableFilesAreAccepted() throws {
        for mode: mode_t in [0o600, 0o400, 0o640, 0o440] {
            let path = try keyFile(line(80), mode: mode, name: "mode-\(mode)")
            XCTAssertNoThrow(try SessionTicketKeyFile.load(at: path), "mode \(String(mode, radix: 8))")
        }
    }

    func testThirtyTwoKeysAreAccepted() throws {
        let path = try keyFile((0..<32).map { _ in line(80) + "\n" }.joined())
        XCTAssertEqual(try SessionTicketKeyFile.load(at: path).keys.count, 32)
    }

    // MARK: Refused

    func testFilesOpenToOthersAreRefused() throws {
        for mode: mode_t in [0o644, 0o604, 0o660, 0o650, 0o666, 0o602] {
            let path = try keyFile(line(80), mode: mode, name: "mode-\(mode)")
            assertRefused(path, line: nil, "mode \(SessionTicketKeyFile.octal(mode)) is wider than 0640", "chmod 600")
        }
    }

    func testABadBase64LineIsRefusedWithItsLine() throws {
        assertRefused(try keyFile("# keys\n\(line(80))\nnot base64 at all!\n"), line: 3, "not a base64 key")
        // Base64 split over two lines, as `openssl rand -base64 80` writes it: neither half is a key.
        let wrapped = line(80)
        assertRefused(try keyFile("\(wrapped.prefix(64))\n\(wrapped.dropFirst(64))\n"), line: 1, "is 48 bytes, not 80")
    }

    func testAKeyOfTheWrongLengthIsRefusedWithItsLine() throws {
        assertRefused(try keyFile("\(line(80))\n\(line(48))\n"), line: 2, "the key is 48 bytes, not 80", "staplegate ticket-keys generate")
        assertRefused(try keyFile(line(81)), line: 1, "the key is 81 bytes, not 80")
        assertRefused(try keyFile(line(79)), line: 1, "the key is 79 bytes, not 80")
    }

    func testTwoKeysWithOneNameAreRefused() throws {
        let key = SessionTicketKey.random()
        // Same name, different secrets: a ticket could be tried with the wrong key.
        let sameName = Data(Array(key.name) + [UInt8](repeating: 7, count: 64)).base64EncodedString()
        assertRefused(try keyFile("\(key.base64)\n# older\n\(line(80))\n\(sameName)\n"), line: 4, "the same as line 1's")
    }

    func testAFileWithoutKeysIsRefused() throws {
        assertRefused(try keyFile("# nothing here yet\n\n   \n"), line: nil, "holds no key")
        assertRefused(try keyFile(""), line: nil, "holds no key")
    }

    func testMoreThanThirtyTwoKeysAreRefused() throws {
        assertRefused(try keyFile((0..<33).map { _ in line(80) + "\n" }.joined()), line: 33, "more than 32 keys")
    }

    func testMissingUnreadableAndWrongFilesAreRefused() throws {
        assertRefused(directory.file("missing.keys"), line: nil, "no such file")
        assertRefused(try directory.subdirectory("a-directory"), line: nil, "is a directory")
        assertRefused(try keyFile(String(repeating: "#\n", count: 40_000)), line: nil, "too big for a key file")
        let binary = try directory.write("binary.keys", Data([0xFF, 0xFE, 0x00, 0x80]))
        XCTAssertEqual(chmod(binary, 0o600), 0)
        assertRefused(binary, line: nil, "is not text")
    }

    func testAnUnreadableFileIsRefused() throws {
        try XCTSkipIf(getuid() == 0, "running as root: access() grants root every file, so an unreadable file cannot be made")
        assertRefused(try keyFile(line(80), mode: 0o000), line: nil, "is not readable")
    }

    // MARK: Written by ticket-keys

    func testCreateWritesAFileOfMode0600ThatLoads() throws {
        let key = SessionTicketKey.random()
        let path = directory.file("new.keys")
        try SessionTicketKeyFile.create(at: path, keys: [key], replacing: false)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int, 0o600)
        XCTAssertEqual(try SessionTicketKeyFile.load(at: path).keys, [key])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["new.keys"], "no temporary file left")
    }

    func testCreateRefusesAnExistingFileUnlessReplacing() throws {
        let original = SessionTicketKey.random()
        let path = directory.file("fleet.keys")
        try SessionTicketKeyFile.create(at: path, keys: [original], replacing: false)
        XCTAssertThrowsError(try SessionTicketKeyFile.create(at: path, keys: [.random()], replacing: false)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(path): already exists; --force replaces it"), "\(error)")
        }
        XCTAssertEqual(try SessionTicketKeyFile.load(at: path).keys, [original], "untouched")
        XCTAssertEqual(chmod(path, 0o640), 0)
        let replacement = SessionTicketKey.random()
        try SessionTicketKeyFile.create(at: path, keys: [replacement], replacing: true)
        XCTAssertEqual(try SessionTicketKeyFile.load(at: path).keys, [replacement])
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int, 0o640, "mode kept")
    }

    func testRotatePutsANewKeyFirstAndKeepsAtMostTheNumberAsked() throws {
        let path = directory.file("fleet.keys")
        let original = SessionTicketKey.random()
        try SessionTicketKeyFile.create(at: path, keys: [original], replacing: false)

        let first = try SessionTicketKeyFile.rotate(at: path, keep: 2)
        XCTAssertEqual(first.kept, [original])
        XCTAssertEqual(first.dropped, [])
        XCTAssertEqual(try SessionTicketKeyFile.load(at: path).keys, [first.added, original])

        let second = try SessionTicketKeyFile.rotate(at: path, keep: 2)
        XCTAssertEqual(second.kept, [first.added])
        XCTAssertEqual(second.dropped, [original])
        XCTAssertEqual(try SessionTicketKeyFile.load(at: path).keys, [second.added, first.added])
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int, 0o600)
    }

    func testRotateRefusesAFileTheGatewayWouldRefuse() throws {
        let path = try keyFile(line(80), mode: 0o644)
        XCTAssertThrowsError(try SessionTicketKeyFile.rotate(at: path, keep: 3)) { error in
            XCTAssertTrue("\(error)".contains("is wider than 0640"), "\(error)")
        }
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").count, 1, "untouched")
    }
}
