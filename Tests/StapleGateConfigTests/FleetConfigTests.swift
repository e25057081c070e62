import Foundation
@testable import StapleGateConfig
import StapleGateFleet
import XCTest

/// The `fleet` section: sqlite by default (today's behaviour), postgres with its URL and
/// connection keys, mistakes named by key and line.
final class FleetConfigTests: ConfigTestCase {
    func testSQLiteByDefaultWhenAbsentOrEmpty() throws {
        XCTAssertEqual(try load(yaml()).configuration.fleet, FleetConfiguration())
        XCTAssertEqual(try load(yaml() + "fleet:\n").configuration.fleet, FleetConfiguration())
        XCTAssertEqual(FleetConfiguration().store, .sqlite)
        XCTAssertNil(FleetConfiguration().postgres)
        XCTAssertEqual(try load(yaml() + "fleet:\n  store: sqlite\n").configuration.fleet, FleetConfiguration())
    }

    func testPostgresWithOnlyAURLTakesTheDefaults() throws {
        let fleet = try load(yaml() + """
        fleet:
          store: postgres
          url: postgres://staplegate@db.example.net/fleet
        """).configuration.fleet
        XCTAssertEqual(fleet.store, .postgres)
        let settings = try XCTUnwrap(fleet.postgres)
        XCTAssertEqual(settings, PostgresSettings(host: "db.example.net", port: 5432, user: "staplegate", database: "fleet"))
        XCTAssertEqual(settings.tls, .verifyFull, "TLS with the server checked unless told otherwise")
        XCTAssertEqual(settings.poolSize, 4)
        XCTAssertEqual(settings.instance, ProcessInfo.processInfo.hostName)
        XCTAssertNil(settings.passwordFile)
        XCTAssertEqual(settings.redactedURL, "postgres://staplegate@db.example.net:5432/fleet")
    }

    func testEveryKeyIsApplied() throws {
        try pki.write("pg-password", "s3cret\n")
        let fleet = try load(yaml() + """
        fleet:
          store: postgres
          url: postgresql://gw@10.0.0.5:6543
          password_file: pg-password
          tls: verify-full
          ca_file: ca.pem
          instance: gw-7
          pool_size: 9
        """).configuration.fleet
        XCTAssertEqual(fleet.postgres, PostgresSettings(
            host: "10.0.0.5", port: 6543, user: "gw", database: "gw", passwordFile: pki.path("pg-password"),
            tls: .verifyFull, caFile: pki.path("ca.pem"), instance: "gw-7", poolSize: 9))
        XCTAssertEqual(try load(yaml() + "fleet: { store: postgres, url: \"postgres://u@h/d\", tls: disable }\n")
            .configuration.fleet.postgres?.tls, .disable)
        XCTAssertEqual(try load(yaml() + "fleet: { store: postgres, url: \"postgres://u@h/d\", tls: require }\n")
            .configuration.fleet.postgres?.tls, .require)
    }

    /// Serving beats refusing the fleet: the database is not needed for readiness unless asked.
    func testRequiredForReadinessIsOffByDefaultAndCanBeTurnedOn() throws {
        let url = "fleet:\n  store: postgres\n  url: postgres://u@db/x\n"
        XCTAssertFalse(try load(yaml() + url).configuration.fleet.requiredForReadiness)
        XCTAssertFalse(try load(yaml() + url + "  required_for_readiness: false\n").configuration.fleet.requiredForReadiness)
        XCTAssertTrue(try load(yaml() + url + "  required_for_readiness: true\n").configuration.fleet.requiredForReadiness)
    }

    func testBadValuesNameTheirKey() {
        let cases: [(String, String, String)] = [
            ("fleet:\n  store: mysql", "fleet.store", "must be sqlite or postgres, not \"mysql\""),
            ("fleet:\n  stor: postgres", "fleet.stor", "did you mean \"store\""),
            ("fleet:\n  store: postgres\n  url: http://db/x", "fleet.url", "is not a postgres:// URL"),
            ("fleet:\n  store: postgres\n  url: postgres://u:pw@db/x", "fleet.url", "put it in fleet.password_file"),
            ("fleet:\n  store: postgres\n  url: postgres://db/x", "fleet.url", "names no user"),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x/y", "fleet.url", "just the database name"),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x\n  tls: prefer", "fleet.tls",
             "must be disable, require or verify-full, not \"prefer\""),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x\n  pool_size: 0", "fleet.pool_size", "between 1 and 100"),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x\n  password_file: nowhere", "fleet.password_file",
             "no such file"),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x\n  tls: require\n  ca_file: ca.pem", "fleet.ca_file",
             "only applies with fleet.tls: verify-full"),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x\n  instance: \"\"", "fleet.instance", "1 to 200 characters"),
            ("fleet:\n  url: postgres://u@db/x", "fleet.url", "only applies with fleet.store: postgres"),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x\n  required_for_readiness: sometimes",
             "fleet.required_for_readiness", "expected true or false, got \"sometimes\""),
            ("fleet:\n  store: sqlite\n  required_for_readiness: true", "fleet.required_for_readiness",
             "only applies with fleet.store: postgres"),
            ("fleet:\n  store: postgres\n  url: postgres://u@db/x\n  required_for_readness: true",
             "fleet.required_for_readness", "did you mean \"required_for_readiness\""),
        ]
        for (body, key, reason) in cases {
            let keyLine = String(body.split(separator: "\n").first { $0.contains(key.split(separator: ".").last!) }!)
            assertError(yaml() + body + "\n", key: key, lineContaining: keyLine, reasonContains: [reason])
        }
    }

    func testPostgresWithoutAURLIsRefusedNamingTheMissingKey() {
        assertError(yaml() + "fleet:\n  store: postgres\n", key: "fleet.url", lineContaining: "fleet:",
                    reasonContains: ["missing required key \"fleet.url\""])
    }

    /// config/staplegate.yaml shows the fleet section with its default (sqlite), and its
    /// commented postgres keys parse as documented once uncommented.
    func testExampleConfigShowsTheDefaultsAndValidPostgresKeys() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../config/staplegate.yaml").standardizedFileURL.path
        let text = try String(contentsOfFile: example, encoding: .utf8)
        let start = try XCTUnwrap(text.range(of: "\nfleet:\n"), "config/staplegate.yaml documents fleet")
        let rest = text[start.upperBound...]
        let end = rest.range(of: "\n[a-z]", options: .regularExpression)?.lowerBound ?? rest.endIndex
        let section = "fleet:\n" + rest[..<end]
        XCTAssertEqual(try load(yaml() + section + "\n").configuration.fleet, FleetConfiguration())

        // Every documented key, uncommented, with store: postgres and the example's files here.
        try pki.write("postgres-password", "x\n")
        try pki.write("fleet.secret", String(repeating: "s", count: 48) + "\n")
        XCTAssertEqual(chmod(pki.path("fleet.secret"), 0o600), 0)
        try pki.write("postgres-ca.pem", try String(contentsOfFile: pki.path("ca.pem"), encoding: .utf8))
        let uncommented = section.split(separator: "\n").map { line -> String in
            var line = String(line)
            if let range = line.range(of: #"^  # [a-z_]+: "#, options: .regularExpression) {
                line.replaceSubrange(range, with: "  " + line[range].dropFirst(4))
            }
            return line.replacingOccurrences(of: "store: sqlite", with: "store: postgres")
                .replacingOccurrences(of: "/etc/staplegate/", with: "")
        }.joined(separator: "\n")
        let fleet = try load(yaml() + uncommented + "\n").configuration.fleet
        XCTAssertFalse(fleet.requiredForReadiness, "the example shows the default")
        XCTAssertEqual(fleet.secretFile, pki.path("fleet.secret"))
        XCTAssertEqual(fleet.ticketKeyRotation, .seconds(12 * 3600))
        let settings = try XCTUnwrap(fleet.postgres)
        XCTAssertEqual(settings, PostgresSettings(
            host: "db.example.net", port: 5432, user: "staplegate", database: "staplegate",
            passwordFile: pki.path("postgres-password"), tls: .verifyFull, caFile: pki.path("postgres-ca.pem"),
            instance: "gw-1", poolSize: 4))
    }

    /// What check-config prints for each store.
    func testSummaryNamesTheStoreAndNoSecret() {
        XCTAssertEqual(FleetConfiguration().summary(sqlitePath: "/var/lib/staplegate/ocsp-cache.sqlite"),
                       "sqlite /var/lib/staplegate/ocsp-cache.sqlite (this gateway only)")
        let postgres = FleetConfiguration(store: .postgres, postgres: PostgresSettings(
            host: "db", user: "gw", database: "fleet", passwordFile: "/etc/staplegate/pw", tls: .require, instance: "gw-1"))
        XCTAssertEqual(postgres.summary(sqlitePath: "unused"),
                       "postgres postgres://gw@db:5432/fleet (shared by the fleet; tls require, instance gw-1, pool 4, password from "
                       + "/etc/staplegate/pw; /readyz stays ready without it)")
        var required = postgres
        required.requiredForReadiness = true
        XCTAssertTrue(required.summary(sqlitePath: "unused").hasSuffix("; /readyz fails while it is unreachable)"))
    }
}
