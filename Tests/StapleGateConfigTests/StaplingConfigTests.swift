import Foundation
@testable import StapleGateConfig
import StapleGateOCSP
import XCTest

/// The `stapling` section and `state_directory`: values applied, mistakes named by key and line,
/// and certificates that could not be stapled refused at load time rather than at the first refresh.
final class StaplingConfigTests: ConfigTestCase {
    func testDefaultsStapleEveryCertificateFromItsAIA() throws {
        let loaded = try load(yaml())
        let stapling = loaded.configuration.stapling
        XCTAssertTrue(stapling.enabled)
        XCTAssertNil(stapling.policy)
        XCTAssertEqual(stapling.policy(forMustStaple: false), .lenient)
        XCTAssertEqual(stapling.policy(forMustStaple: true), .must)
        XCTAssertEqual(stapling.fetch, OCSPFetchConfiguration())
        XCTAssertEqual(loaded.configuration.stateDirectory, "/var/lib/staplegate")
    }

    func testEveryStaplingKeyIsApplied() throws {
        let text = yaml() + """
        state_directory: state
        stapling:
          enabled: true
          policy: strict
          responder: http://127.0.0.1:8080/ocsp
          method: get
          timeout: 2s
          max_response_size: 8192
          max_refresh_interval: 30m
          retry_min: 2s
          retry_max: 1m
          clock_skew: 30s
          ca_bundle: ca.pem
        """
        let configuration = try load(text).configuration
        let stapling = configuration.stapling
        XCTAssertEqual(configuration.stateDirectory, pki.path("state"))
        XCTAssertEqual(stapling.policy, .strict)
        XCTAssertEqual(stapling.responderOverride, "http://127.0.0.1:8080/ocsp")
        XCTAssertEqual(stapling.fetch.method, .get)
        XCTAssertEqual(stapling.fetch.timeout, .seconds(2))
        XCTAssertEqual(stapling.fetch.maximumResponseBytes, 8192)
        XCTAssertEqual(stapling.fetch.trust.trustDescription, "CA bundle \(pki.path("ca.pem"))")
        XCTAssertEqual(stapling.timing.maximumInterval, .seconds(1800))
        XCTAssertEqual(stapling.timing.minimumRetryDelay, .seconds(2))
        XCTAssertEqual(stapling.timing.maximumRetryDelay, .seconds(60))
        XCTAssertEqual(stapling.clockSkew, .seconds(30))
    }

    func testBadStaplingValuesNameTheirKey() {
        let cases: [(String, String, String)] = [
            ("policy: sometimes", "stapling.policy", "lenient, strict or must"),
            ("responder: ftp://x", "stapling.responder", "not an http:// or https:// URL"),
            ("method: put", "stapling.method", "post or get"),
            ("enabled: \"yes\"", "stapling.enabled", "expected true or false"),
            ("timeout: 0s", "stapling.timeout", "longer than 0"),
            ("max_response_size: 10", "stapling.max_response_size", "between 512 and 1048576"),
            ("retry_min: 1m\n  retry_max: 10s", "stapling.retry_max", "not be shorter than retry_min"),
            ("max_refresh_intreval: 1h", "stapling.max_refresh_intreval", "did you mean \"max_refresh_interval\""),
            ("ca_bundle: missing.pem", "stapling.ca_bundle", "missing.pem: no such file"),
            ("ca_bundle: server-leaf.pem", "stapling.ca_bundle", "is not a CA certificate"),
            ("ca_bundle: server.key", "stapling.ca_bundle", "contains no PEM certificate"),
        ]
        for (body, key, reason) in cases {
            let text = yaml() + "stapling:\n  \(body)\n"
            let keyName = String(key.split(separator: ".").last!)
            assertError(text, key: key, lineContaining: "\(keyName):", reasonContains: [reason])
        }
    }

    func testACertificateWithoutItsIssuerCannotBeStapled() throws {
        let text = yaml(certificates: "- certificate: server-leaf.pem\n  key: server.key")
        assertError(text, key: "tls.certificates[0].certificate", lineContaining: "certificate: server-leaf.pem",
                    reasonContains: [pki.path("server-leaf.pem"), "stapling needs the issuing CA certificate"])
        // Negative control: the same certificate loads once stapling is off.
        XCTAssertNoThrow(try load(text + "stapling:\n  enabled: false\n"))
    }

    func testStateDirectoryMustBeAUsableFolder() {
        assertError(yaml() + "state_directory: server.pem\n", key: "state_directory", lineContaining: "state_directory:",
                    reasonContains: ["is a file, not a folder"])
        assertError(yaml() + "state_directory: missing/state\n", key: "state_directory", lineContaining: "state_directory:",
                    reasonContains: ["nor its parent folder"])
    }
}
