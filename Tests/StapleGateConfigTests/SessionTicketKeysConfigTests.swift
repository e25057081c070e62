import Foundation
import XCTest
@testable import StapleGateConfig
import StapleGateTLS

/// `tls.session_ticket_keys`: the file is read with the rest of the configuration, and a problem
/// with it names the config file, the key and its line, then the key file and its own line.
final class SessionTicketKeysConfigTests: ConfigTestCase {
    /// A key file in the fixture folder with `lines` (base64 keys, comments) and `mode`.
    private func writeKeyFile(_ name: String, _ lines: [String], mode: mode_t = 0o600) throws -> String {
        try pki.write(name, lines.joined(separator: "\n") + "\n")
        XCTAssertEqual(chmod(pki.path(name), mode), 0)
        return pki.path(name)
    }

    private func keyLine() -> String { Data((0..<80).map { _ in UInt8.random(in: 0...255) }).base64EncodedString() }

    func testAKeyFileIsResolvedFromTheConfigFolderAndLoaded() throws {
        let path = try writeKeyFile("fleet.keys", ["# fleet", keyLine(), keyLine()])
        let loaded = try load(yaml(tls: "session_ticket_keys: fleet.keys"))
        XCTAssertEqual(loaded.configuration.tls.sessionTicketKeysPath, path)
        let keys = try XCTUnwrap(loaded.sessionTicketKeys)
        XCTAssertEqual(keys.keys.count, 2)
        XCTAssertEqual(keys.source, .file(path))
        XCTAssertTrue(loaded.serverContext.ticketKeys === keys, "the checked context uses the file's keys")
    }

    func testWithoutTheKeyNoFileIsRead() throws {
        let loaded = try load(yaml())
        XCTAssertNil(loaded.configuration.tls.sessionTicketKeysPath)
        XCTAssertNil(loaded.sessionTicketKeys)
    }

    func testABadLineNamesTheConfigKeyThenTheKeyFileAndItsLine() throws {
        let path = try writeKeyFile("bad-line.keys", [keyLine(), "# an old key, pasted wrongly", String(keyLine().dropLast(8))])
        assertError(yaml(tls: "session_ticket_keys: bad-line.keys"), key: "tls.session_ticket_keys",
                    lineContaining: "session_ticket_keys", reasonContains: ["\(path):3: the key is 75 bytes, not 80"])
    }

    func testAFileOthersCanReadIsRefused() throws {
        let path = try writeKeyFile("open.keys", [keyLine()], mode: 0o644)
        assertError(yaml(tls: "session_ticket_keys: open.keys"), key: "tls.session_ticket_keys",
                    lineContaining: "session_ticket_keys", reasonContains: ["\(path): mode 0644 is wider than 0640"])
    }

    func testAMissingFileOrAnEmptyValueIsRefused() {
        assertError(yaml(tls: "session_ticket_keys: missing.keys"), key: "tls.session_ticket_keys",
                    lineContaining: "session_ticket_keys", reasonContains: [pki.path("missing.keys"), "no such file"])
        assertError(yaml(tls: "session_ticket_keys: \"\""), key: "tls.session_ticket_keys",
                    lineContaining: "session_ticket_keys", reasonContains: ["must name a file"])
    }
}
