import Foundation
@testable import StapleGateConfig
import StapleGateFleet
import StapleGateTLS
import XCTest

/// `tls.session_ticket_keys: fleet` with `fleet.secret_file` and `fleet.ticket_key_rotation`:
/// the word selects the fleet's rotated keys, which need the fleet's database and a secret;
/// whatever is missing or wrong is named by its key.
final class FleetTicketKeysConfigTests: ConfigTestCase {
    private let postgres = "fleet:\n  store: postgres\n  url: postgres://gw@db.example.net/fleet\n"

    private func writeSecret(_ name: String, _ text: String, mode: mode_t = 0o600) throws {
        try pki.write(name, text)
        XCTAssertEqual(chmod(pki.path(name), mode), 0)
    }

    func testFleetKeysWithTheDatabaseAndASecretAreAccepted() throws {
        try writeSecret("fleet.secret", String(repeating: "k", count: 44) + "\n")
        let loaded = try load(yaml(tls: "session_ticket_keys: fleet") + postgres
            + "  secret_file: fleet.secret\n  ticket_key_rotation: 30s\n")
        XCTAssertEqual(loaded.configuration.tls.sessionTicketKeys, .fleet)
        XCTAssertNil(loaded.configuration.tls.sessionTicketKeysPath)
        XCTAssertNil(loaded.sessionTicketKeys, "no file to read: the gateway starts the fleet's keys")
        XCTAssertEqual(loaded.configuration.fleet.secretFile, pki.path("fleet.secret"))
        XCTAssertEqual(loaded.configuration.fleet.ticketKeyRotation, .seconds(30))
    }

    func testTheRotationDefaultsToTwelveHours() throws {
        try writeSecret("fleet.secret", String(repeating: "k", count: 32))
        let loaded = try load(yaml(tls: "session_ticket_keys: fleet") + postgres + "  secret_file: fleet.secret\n")
        XCTAssertEqual(loaded.configuration.fleet.ticketKeyRotation, .seconds(12 * 3600))
    }

    func testAKeyFileNamedFleetIsReachedThroughAPath() throws {
        try pki.write("fleet", Data((0..<80).map { _ in UInt8.random(in: 0...255) }).base64EncodedString() + "\n")
        XCTAssertEqual(chmod(pki.path("fleet"), 0o600), 0)
        let loaded = try load(yaml(tls: "session_ticket_keys: ./fleet"))
        XCTAssertEqual(loaded.configuration.tls.sessionTicketKeys, .file(pki.path("fleet")))
    }

    func testFleetKeysWithoutTheDatabaseOrTheSecretAreRefusedAtTheTLSKey() throws {
        assertError(yaml(tls: "session_ticket_keys: fleet"), key: "tls.session_ticket_keys",
                    lineContaining: "session_ticket_keys", reasonContains: ["fleet needs fleet.store: postgres"])
        assertError(yaml(tls: "session_ticket_keys: fleet") + postgres, key: "tls.session_ticket_keys",
                    lineContaining: "session_ticket_keys", reasonContains: ["fleet needs fleet.secret_file"])
    }

    func testABadSecretFileOrRotationNamesItsKey() throws {
        try writeSecret("short.secret", "only 20 bytes here!\n")
        try writeSecret("open.secret", String(repeating: "k", count: 40), mode: 0o644)
        let cases: [(String, String, [String])] = [
            ("  secret_file: short.secret", "fleet.secret_file", [pki.path("short.secret"), "holds 19 bytes, fewer than 32"]),
            ("  secret_file: open.secret", "fleet.secret_file", ["mode 644 is wider than 640"]),
            ("  secret_file: missing.secret", "fleet.secret_file", ["no such file"]),
            ("  ticket_key_rotation: 1s", "fleet.ticket_key_rotation", ["must be between 5.0 seconds and"]),
            ("  ticket_key_rotation: 30d", "fleet.ticket_key_rotation", ["must be between"]),
            ("  ticket_key_rotation: soon", "fleet.ticket_key_rotation", ["is not a duration"]),
        ]
        for (line, key, reasons) in cases {
            assertError(yaml(tls: "session_ticket_keys: fleet") + postgres + line + "\n", key: key,
                        lineContaining: String(line.dropFirst(2)), reasonContains: reasons)
        }
        assertError(yaml() + "fleet:\n  secret_file: open.secret\n", key: "fleet.secret_file",
                    lineContaining: "secret_file", reasonContains: ["only applies with fleet.store: postgres"])
    }
}
