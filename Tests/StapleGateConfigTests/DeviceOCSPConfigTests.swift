import Foundation
@testable import StapleGateConfig
import StapleGateOCSP
import StapleGateTLS
import XCTest

/// The `device_ocsp` section: values applied, per-CA overrides built on the final defaults and
/// matched to the CAs of tls.device_ca, and mistakes named by key and line.
final class DeviceOCSPConfigTests: ConfigTestCase {
    /// A valid config with a `device_ocsp` section whose body is `body`.
    private func yaml(deviceOCSP body: String, deviceCA: String = "ca.pem") -> String {
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }
        return yaml(deviceCA: deviceCA) + "device_ocsp:\n" + lines.joined(separator: "\n") + "\n"
    }

    private func fingerprint(_ name: String) throws -> String {
        try PEMFile.caBundle(at: pki.path(name))[0].sha256Fingerprint
    }

    func testDefaultsWhenAbsentOrEmpty() throws {
        XCTAssertEqual(try load(yaml()).configuration.deviceOCSP, DeviceOCSPConfiguration())
        XCTAssertEqual(try load(yaml() + "device_ocsp:\n").configuration.deviceOCSP, DeviceOCSPConfiguration())
        XCTAssertEqual(try load(yaml(deviceOCSP: "per_ca:")).configuration.deviceOCSP, DeviceOCSPConfiguration())
        XCTAssertEqual(try load(yaml(deviceOCSP: "per_ca: []")).configuration.deviceOCSP, DeviceOCSPConfiguration())
    }

    func testEveryKeyIsApplied() throws {
        let text = yaml(deviceOCSP: """
        enabled: false
        responder: https://ocsp.example.com/device
        ca_bundle: ca.pem
        method: get
        timeout: 2s
        max_response_size: 8192
        unknown: allow
        unreachable: allow
        no_responder: allow
        scope: chain
        cache_lifetime: 1h
        failure_cache_lifetime: 0
        cache_size: 500
        max_in_flight: 4
        nonce: true
        clock_skew: 30s
        """)
        let ocsp = try load(text).configuration.deviceOCSP
        let policy = ocsp.defaultPolicy
        XCTAssertFalse(policy.enabled)
        XCTAssertEqual(policy.responderOverride, "https://ocsp.example.com/device")
        XCTAssertEqual(policy.fetch.trust.trustDescription, "CA bundle \(pki.path("ca.pem"))")
        XCTAssertEqual(policy.fetch.method, .get)
        XCTAssertEqual(policy.fetch.timeout, .seconds(2))
        XCTAssertEqual(policy.fetch.maximumResponseBytes, 8192)
        XCTAssertEqual(policy.unknown, .allow)
        XCTAssertEqual(policy.unreachable, .allow)
        XCTAssertEqual(policy.noResponder, .allow)
        XCTAssertEqual(policy.scope, .chain)
        XCTAssertEqual(ocsp.overrides, [])
        XCTAssertEqual(ocsp.cacheLifetime, .seconds(3600))
        XCTAssertEqual(ocsp.failureCacheLifetime, .zero)
        XCTAssertEqual(ocsp.cacheCapacity, 500)
        XCTAssertEqual(ocsp.maximumRequestsInFlight, 4)
        XCTAssertTrue(ocsp.nonce)
        XCTAssertEqual(ocsp.clockSkew, .seconds(30))
    }

    /// per_ca comes first in the file here, yet its entries start from the defaults set below it.
    func testPerCAEntriesStartFromTheFinalDefaultsWhateverTheKeyOrder() throws {
        let text = yaml(deviceOCSP: """
        per_ca:
          - scope: leaf
            ca: other-ca.pem
            enabled: false
          - ca: ca.pem
            responder: http://ocsp.b.example/
            ca_bundle: two-cas.pem
            max_response_size: 2048
        responder: http://ocsp.a.example/ocsp
        ca_bundle: ca.pem
        method: get
        timeout: 2s
        unknown: allow
        unreachable: allow
        no_responder: allow
        scope: chain
        """, deviceCA: "two-cas.pem")
        let ocsp = try load(text).configuration.deviceOCSP
        let defaults = ocsp.defaultPolicy
        XCTAssertEqual(defaults.responderOverride, "http://ocsp.a.example/ocsp")
        XCTAssertEqual(defaults.fetch.trust.trustDescription, "CA bundle \(pki.path("ca.pem"))")
        XCTAssertEqual(defaults.fetch.method, .get)
        XCTAssertEqual(defaults.scope, .chain)
        XCTAssertEqual(ocsp.overrides.count, 2)

        let other = try XCTUnwrap(ocsp.overrides.first)
        XCTAssertEqual(other.caFingerprint, try fingerprint("other-ca.pem"))
        XCTAssertTrue(other.caSubject.contains("Other Device CA"), other.caSubject)
        var expectedOther = defaults
        expectedOther.enabled = false
        expectedOther.scope = .leaf
        XCTAssertEqual(other.policy, expectedOther)

        let device = try XCTUnwrap(ocsp.overrides.last)
        XCTAssertEqual(device.caFingerprint, try fingerprint("ca.pem"))
        XCTAssertTrue(device.caSubject.contains("Test Device CA"), device.caSubject)
        XCTAssertEqual(device.policy.fetch.trust.trustDescription, "CA bundle \(pki.path("two-cas.pem"))")
        var expectedDevice = defaults
        expectedDevice.responderOverride = "http://ocsp.b.example/"
        expectedDevice.fetch.maximumResponseBytes = 2048
        expectedDevice.fetch.trust = device.policy.fetch.trust
        XCTAssertEqual(device.policy, expectedDevice)

        XCTAssertEqual(ocsp.policy(forIssuerFingerprint: try fingerprint("other-ca.pem")), expectedOther)
        XCTAssertEqual(ocsp.policy(forIssuerFingerprint: "00"), defaults)
    }

    func testPerCAForACANotInDeviceCAIsRefused() throws {
        let text = yaml(deviceOCSP: "per_ca:\n  - ca: other-ca.pem\n    enabled: false")
        assertError(text, key: "device_ocsp.per_ca[0].ca", lineContaining: "ca: other-ca.pem",
                    reasonContains: [pki.path("other-ca.pem"), "Other Device CA", "is not in tls.device_ca", pki.path("ca.pem")])
        // Negative control: the same entry loads once the CA is in tls.device_ca.
        XCTAssertNoThrow(try load(yaml(deviceOCSP: "per_ca:\n  - ca: other-ca.pem\n    enabled: false", deviceCA: "two-cas.pem")))
    }

    func testPerCAFileMustHoldExactlyOneCACertificate() {
        let text = yaml(deviceOCSP: "per_ca:\n  - ca: two-cas.pem", deviceCA: "two-cas.pem")
        assertError(text, key: "device_ocsp.per_ca[0].ca", lineContaining: "- ca: two-cas.pem",
                    reasonContains: [pki.path("two-cas.pem"), "holds 2 certificates"])
    }

    /// The same CA twice, even from another file, is refused on the second entry, pointing at the first.
    func testTwoEntriesForTheSameCAAreRefused() throws {
        try pki.concatenate(["ca.pem"], into: "ca-copy.pem")
        let text = yaml(deviceOCSP: """
        per_ca:
          - ca: ca.pem
            unknown: allow
          - ca: other-ca.pem
          - ca: ca-copy.pem
            unknown: reject
        """, deviceCA: "two-cas.pem")
        let first = try XCTUnwrap(line(of: "- ca: ca.pem", in: text))
        assertError(text, key: "device_ocsp.per_ca[2].ca", lineContaining: "ca: ca-copy.pem",
                    reasonContains: [pki.path("ca-copy.pem"), "already has an entry, device_ocsp.per_ca[0].ca on line \(first)"])
    }

    /// A broken tls.device_ca is reported against tls.device_ca, as it is without device_ocsp.
    func testABrokenDeviceCAIsReportedAgainstTLSDeviceCA() throws {
        let withOverride = try XCTUnwrap(loadError(yaml(deviceOCSP: "per_ca:\n  - ca: ca.pem", deviceCA: "missing.pem")))
        let without = try XCTUnwrap(loadError(yaml(deviceCA: "missing.pem")))
        XCTAssertEqual(withOverride, without)
        assertError(withOverride, key: "tls.device_ca", line: line(of: "device_ca:", in: yaml()), reasonContains: ["missing.pem: no such file"])
    }

    func testBadValuesNameTheirKeyAndLine() {
        let cases: [(String, String, String)] = [
            ("enabled: \"yes\"", "enabled", "expected true or false"),
            ("responder: ftp://x", "responder", "not an http:// or https:// URL"),
            ("ca_bundle: missing.pem", "ca_bundle", "missing.pem: no such file"),
            ("ca_bundle: server-leaf.pem", "ca_bundle", "is not a CA certificate"),
            ("ca_bundle: server.key", "ca_bundle", "contains no PEM certificate"),
            ("method: put", "method", "must be post or get, not \"put\""),
            ("timeout: 0s", "timeout", "longer than 0"),
            ("max_response_size: 10", "max_response_size", "between 512 and 1048576"),
            ("unknown: maybe", "unknown", "must be reject or allow, not \"maybe\""),
            ("unreachable: soft", "unreachable", "must be reject or allow"),
            ("no_responder: skip", "no_responder", "must be reject or allow"),
            ("scope: tree", "scope", "must be leaf or chain, not \"tree\""),
            ("cache_lifetime: 0s", "cache_lifetime", "longer than 0"),
            ("failure_cache_lifetime: -1s", "failure_cache_lifetime", "\"-1s\" is not a duration"),
            ("failure_cache_lifetime: soon", "failure_cache_lifetime", "\"soon\" is not a duration"),
            ("cache_size: 0", "cache_size", "between 1 and 10000000"),
            ("cache_size: 1.5", "cache_size", "expected a whole number"),
            ("max_in_flight: 0", "max_in_flight", "between 1 and 1024"),
            ("max_in_flight: many", "max_in_flight", "expected a number"),
            ("nonce: 1", "nonce", "expected true or false"),
            ("clock_skew: 5 minutes", "clock_skew", "is not a duration"),
            ("per_ca: ca.pem", "per_ca", "expected a list"),
            ("per_ca:\n  - ca.pem", "per_ca[0]", "expected a mapping"),
            ("cache_sise: 10", "cache_sise", "did you mean \"cache_size\""),
            ("no_respnder: allow", "no_respnder", "did you mean \"no_responder\""),
        ]
        for (body, key, reason) in cases {
            let fragment = String(body.split(separator: "\n").last!)
            assertError(yaml(deviceOCSP: body), key: "device_ocsp.\(key)", lineContaining: fragment, reasonContains: [reason])
        }
    }

    /// Each mistake in the second of two entries names that entry's key and line.
    func testBadPerCAValuesNameTheirEntryKeyAndLine() {
        let cases: [(String, String, String, String)] = [
            ("- ca: other-ca.pem\n  unknown: maybe", "unknown", "unknown: maybe", "must be reject or allow"),
            ("- ca: other-ca.pem\n  scope: tree", "scope", "scope: tree", "must be leaf or chain"),
            ("- ca: other-ca.pem\n  enabled: no way", "enabled", "enabled: no way", "expected true or false"),
            ("- ca: other-ca.pem\n  responder: ftp://x", "responder", "responder: ftp://x", "not an http:// or https:// URL"),
            ("- ca: other-ca.pem\n  ca_bundle: missing.pem", "ca_bundle", "ca_bundle: missing.pem", "missing.pem: no such file"),
            ("- ca: other-ca.pem\n  ca_bundle: server-leaf.pem", "ca_bundle", "ca_bundle: server-leaf", "is not a CA certificate"),
            ("- ca: other-ca.pem\n  method: put", "method", "method: put", "post or get"),
            ("- ca: other-ca.pem\n  timeout: 0s", "timeout", "timeout: 0s", "longer than 0"),
            ("- ca: other-ca.pem\n  max_response_size: 2000000", "max_response_size", "max_response_size:", "between 512 and 1048576"),
            ("- ca: other-ca.pem\n  max_responce_size: 4096", "max_responce_size", "max_responce_size:", "did you mean \"max_response_size\""),
            ("- ca: other-ca.pem\n  cache_size: 10", "cache_size", "cache_size: 10", "unknown key \"device_ocsp.per_ca[1].cache_size\""),
            ("- enabled: false", "ca", "- enabled: false", "missing required key \"device_ocsp.per_ca[1].ca\""),
            ("- ca: missing.pem", "ca", "ca: missing.pem", "missing.pem: no such file"),
            ("- ca: server-leaf.pem", "ca", "ca: server-leaf.pem", "is not a CA certificate"),
            ("- ca: \"\"", "ca", "ca: \"\"", "must name a file"),
            ("- ca: [ca.pem]", "ca", "ca: [ca.pem]", "expected a string"),
        ]
        for (entry, key, fragment, reason) in cases {
            let body = "per_ca:\n  - ca: ca.pem\n" + entry.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
            assertError(yaml(deviceOCSP: body, deviceCA: "two-cas.pem"), key: "device_ocsp.per_ca[1].\(key)",
                        lineContaining: fragment, reasonContains: [reason])
        }
    }

    /// The documented example shows every key, and the values it shows are the defaults.
    func testTheDocumentedExampleShowsEveryKeyWithItsDefault() throws {
        let example = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/staplegate.yaml")
        let text = try String(contentsOf: example, encoding: .utf8)
        let start = try XCTUnwrap(text.range(of: "\ndevice_ocsp:"))
        let documented = String(text[start.lowerBound...])
        for key in ConfigSchema.deviceOCSPKeys + ConfigSchema.deviceOCSPPerCAKeys {
            XCTAssertTrue(documented.contains("\(key):"), "the example does not show device_ocsp \(key)")
        }
        // Loaded as a whole, next to a stand-in for the demo PKI (as ValidConfigTests does).
        let out = pki.path("certs/out")
        try FileManager.default.createDirectory(atPath: pki.path("config"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for (from, to) in [("server.pem", "server.pem"), ("server.key", "server.key"), ("ca.pem", "ca-chain.pem")] {
            try FileManager.default.copyItem(atPath: pki.path(from), toPath: out + "/" + to)
        }
        try pki.write("config/staplegate.yaml", text)
        let ocsp = try ConfigLoader.load(path: pki.path("config/staplegate.yaml")).configuration.deviceOCSP
        XCTAssertEqual(ocsp, DeviceOCSPConfiguration())
    }
}
