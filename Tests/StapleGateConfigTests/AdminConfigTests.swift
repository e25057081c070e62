import Foundation
@testable import StapleGateConfig
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
