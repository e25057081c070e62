import Foundation
@testable import StapleGateConfig
import StapleGateTLS
import XCTest

/// The `admin` section: defaults, every key applied, mistakes named by key and line.
final class AdminConfigTests: ConfigTestCase {
    func testDefaultsWhenAbsentOrEmpty() throws {
        XCTAssertEqual(try load(yaml()).configuration.admin, AdminConfiguration())
        XCTAssertEqual(try load(yaml() + "admin:\n").configuration.admin, AdminConfiguration())
        let defaults = AdminConfiguration()
        XCTAssertTrue(defaults.enabled)
        XCTAssertEqual(defaults.address, "127.0.0.1")
        XCTAssertEqual(defaults.port, 9883)
    }

    func testEveryKeyIsApplied() throws {
        let admin = try load(yaml() + """
        admin:
          enabled: false
          address: "::1"
          port: 0
        """).configuration.admin
        XCTAssertEqual(admin, AdminConfiguration(enabled: false, address: "::1", port: 0))
    }

    func testBadValuesNameTheirKey() {
        let cases: [(String, String, String)] = [
            ("admin:\n  address: localhost", "admin.address", "is not an IPv4 or IPv6 address"),
            ("admin:\n  port: 70000", "admin.port", "between 0 and 65535"),
            ("admin:\n  enabled: sometimes", "admin.enabled", "expected true or false"),
            ("admin:\n  prot: 9000", "admin.prot", "did you mean \"port\""),
        ]
        for (body, key, reason) in cases {
            // The key's own line (listen and upstream have an address: too).
            let keyLine = String(body.split(separator: "\n").last!).trimmingCharacters(in: .whitespaces)
            assertError(yaml() + body + "\n", key: key, lineContaining: keyLine, reasonContains: [reason])
        }
    }

    // MARK: Authentication (admin.token_file, admin.allow_unauthenticated)

    private func writeToken(_ name: String, _ text: String, mode: mode_t = 0o600) throws {
        try pki.write(name, text)
        XCTAssertEqual(chmod(pki.path(name), mode), 0)
    }

    func testATokenFileIsReadAndItsTokenMatchesOnlyItself() throws {
        let token = String(repeating: "a1", count: 16)
        try writeToken("admin.token", token + "\n")
        let admin = try load(yaml() + "admin:\n  address: 0.0.0.0\n  token_file: admin.token\n").configuration.admin
        XCTAssertEqual(admin.tokenFile, pki.path("admin.token"))
        let loaded = try XCTUnwrap(admin.token)
        XCTAssertTrue(loaded.matches(token))
        XCTAssertFalse(loaded.matches(token + "x"))
        XCTAssertFalse(loaded.matches(String(token.dropLast())))
        XCTAssertFalse(loaded.matches(""))
        XCTAssertEqual("\(loaded)", "(access token)", "a printed configuration never shows the token")
    }

    func testAnyNonLoopbackAddressNeedsATokenOrTheExplicitOptOut() throws {
        for address in ["0.0.0.0", "192.0.2.10", "::", "2001:db8::1"] {
            assertError(yaml() + "admin:\n  address: \"\(address)\"\n", key: "admin.address", lineContaining: "address: \"\(address)\"",
                        reasonContains: ["is not a loopback address", "admin.token_file", "admin.allow_unauthenticated: true"])
            let admin = try load(yaml() + "admin:\n  address: \"\(address)\"\n  allow_unauthenticated: true\n").configuration.admin
            XCTAssertEqual(admin.address, address)
            XCTAssertTrue(admin.allowUnauthenticated)
            XCTAssertNil(admin.token)
        }
        // Loopback in every spelling needs neither; nor does a listener that is off.
        for address in ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"] {
            XCTAssertNil(try load(yaml() + "admin:\n  address: \"\(address)\"\n").configuration.admin.token, address)
        }
        XCTAssertFalse(try load(yaml() + "admin:\n  enabled: false\n  address: 0.0.0.0\n").configuration.admin.enabled)
    }

    func testABadTokenFileNamesItsKeyTheFileAndTheFix() throws {
        try writeToken("open.token", String(repeating: "b", count: 32), mode: 0o644)
        try writeToken("short.token", "tooshort\n")
        try writeToken("spaced.token", "two words in this token line\n")
        try writeToken("empty.token", "\n")
        let cases: [(String, [String])] = [
            ("open.token", ["mode 644 is wider than 640", "chmod 600"]),
            ("short.token", ["holds 8 characters, fewer than 16", "openssl rand -hex 32"]),
            ("spaced.token", ["spaces"]),
            ("empty.token", ["holds 0 characters"]),
            ("missing.token", [pki.path("missing.token"), "no such file"]),
        ]
        for (name, reasons) in cases {
            assertError(yaml() + "admin:\n  token_file: \(name)\n", key: "admin.token_file", lineContaining: "token_file",
                        reasonContains: reasons)
        }
        assertError(yaml() + "admin:\n  allow_unauthenticated: maybe\n", key: "admin.allow_unauthenticated",
                    lineContaining: "allow_unauthenticated", reasonContains: ["expected true or false"])
    }

    func testTheBearerSchemeIsReadAsRFC6750WritesIt() {
        XCTAssertEqual(AccessToken.bearer(fromAuthorization: "Bearer abc"), "abc")
        XCTAssertEqual(AccessToken.bearer(fromAuthorization: "bearer  abc "), "abc", "the scheme's case is free")
        XCTAssertNil(AccessToken.bearer(fromAuthorization: "Basic YWRtaW46YWRtaW4="))
        XCTAssertNil(AccessToken.bearer(fromAuthorization: "Bearer"))
        XCTAssertNil(AccessToken.bearer(fromAuthorization: "Bearerabc"))
        XCTAssertNil(AccessToken.bearer(fromAuthorization: nil))
    }

    /// config/staplegate.yaml shows every admin key with its default value.
    func testExampleConfigShowsTheDefaults() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../config/staplegate.yaml").standardizedFileURL.path
        let text = try String(contentsOfFile: example, encoding: .utf8)
        let start = try XCTUnwrap(text.range(of: "\nadmin:\n"), "config/staplegate.yaml documents admin")
        // The section runs to the next top-level key or the end of the file.
        let rest = text[start.upperBound...]
        let end = rest.range(of: "\n[a-z]", options: .regularExpression)?.lowerBound ?? rest.endIndex
        let section = "admin:\n" + rest[..<end]
        XCTAssertEqual(try load(yaml() + section + "\n").configuration.admin, AdminConfiguration())
    }
}
