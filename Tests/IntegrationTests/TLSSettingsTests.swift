import Foundation
import StapleGateConfig
import TestSupport
import XCTest

/// `tls.groups`, `tls.tls13_ciphersuites` and `tls.tls12_ciphers` are really applied to the
/// handshakes the gateway makes (their rejection of invalid values is tested in
/// StapleGateConfigTests): real `openssl s_client` devices presenting device-1's certificate are
/// refused when they offer only what the setting left out, served with what it kept, and the
/// default settings serve the devices the narrowed ones refuse.
///
/// Note: s_client prints "Verification: OK" and "Verify return code: 0 (ok)" even when the
/// gateway refused the handshake (nothing was verified, so nothing failed); a completed handshake
/// is recognised by its cipher line, its protocol and the gateway's "TLS handshake completed".
final class TLSSettingsTests: GatewayTestCase {
    private func startTunedGateway(identities: [String] = ["server"],
                                   _ configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> GatewayUnderTest {
        var configuration = GatewayUnderTest.configuration(pki: pki, upstream: broker.endpoint, serverIdentities: identities)
        configure(&configuration)
        return try await startConfiguredGateway(configuration)
    }

    /// Handshakes as device-1 with `options`, checks that the handshake completed with `cipher` and
    /// `version` on both sides, closes cleanly and returns what s_client printed.
    @discardableResult
    private func assertAccepted(by gateway: GatewayUnderTest, _ options: [String], cipher: String, version: String,
                                file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let completedBefore = gateway.log.entries(containing: "TLS handshake completed").count
        let failedBefore = gateway.log.entries(containing: "TLS handshake failed").count
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: "device-1", extraArgs: options)
        try await waitUntil(timeout: .seconds(10), "the gateway to complete or refuse the handshake of \(options)",
                            details: { "\(gateway.log.text)\n--- s_client ---\n\(client.output)" }) {
            gateway.log.entries(containing: "TLS handshake completed").count > completedBefore
                || gateway.log.entries(containing: "TLS handshake failed").count > failedBefore
        }
        // The session summary is the last thing s_client prints after a handshake.
        try await client.waitForOutput("Verify return code: 0 (ok)")
        let result = try await client.finish()
        let output = result.output

        let completed = gateway.log.entries(containing: "TLS handshake completed")
        XCTAssertEqual(completed.count, completedBefore + 1, "\(options): refused:\n\(gateway.log.text)\n\(output)", file: file, line: line)
        guard completed.count > completedBefore else { return output }
        let entry = completed[completedBefore]
        XCTAssertEqual(entry.metadata["device"], "device-1", "\(entry)", file: file, line: line)
        XCTAssertEqual(entry.metadata["tls.cipher"], cipher, "\(options): \(entry)", file: file, line: line)
        XCTAssertEqual(entry.metadata["tls.version"], version, "\(options): \(entry)", file: file, line: line)

        XCTAssertTrue(output.contains("Cipher is \(cipher)"), "\(options): not \(cipher):\n\(output)", file: file, line: line)
        XCTAssertTrue(output.contains("Protocol  : \(version)"), "\(options): not \(version):\n\(output)", file: file, line: line)
        XCTAssertTrue(output.contains("Verification: OK"), "\(options):\n\(output)", file: file, line: line)
        XCTAssertFalse(output.contains("alert"), "\(options): unexpected TLS alert:\n\(output)", file: file, line: line)
        XCTAssertEqual(result.status, .exited(0), "\(options):\n\(output)", file: file, line: line)
        return output
    }

    /// Handshakes as device-1 with `options` and checks that the gateway refused it: s_client got
    /// `alert` (before any ServerHello unless `afterServerHello`), and the gateway logged a failure
    /// naming `reason` and admitted nobody.
    private func assertRefused(by gateway: GatewayUnderTest, _ options: [String], alert: String, reason: String,
                               afterServerHello: Bool = false,
                               file: StaticString = #filePath, line: UInt = #line) async throws {
        let completedBefore = gateway.log.entries(containing: "TLS handshake completed").count
        let failedBefore = gateway.log.entries(containing: "TLS handshake failed").count
        let admittedBefore = gateway.log.entries(containing: "connected to broker").count
        let refused = try await OpenSSLClient(port: gateway.port, pki: pki, device: "device-1", extraArgs: options)
            .waitUntilRefused()
        XCTAssertNotEqual(refused.status, .exited(0), "\(options): \(refused)", file: file, line: line)
        XCTAssertTrue(refused.output.contains("alert \(alert)"), "\(options): not \"alert \(alert)\":\n\(refused)", file: file, line: line)
        if !afterServerHello {
            XCTAssertTrue(refused.output.contains("Cipher is (NONE)"), "\(options): something was negotiated:\n\(refused)", file: file, line: line)
        }

        try await waitUntil(timeout: .seconds(5), "the refusal of \(options) to be logged", details: { gateway.log.text }) {
            gateway.log.entries(containing: "TLS handshake failed").count > failedBefore
        }
        let failure = gateway.log.entries(containing: "TLS handshake failed")[failedBefore]
        XCTAssertTrue(failure.message.contains(reason), "\(options): the reason is not \"\(reason)\": \(failure)", file: file, line: line)
        XCTAssertEqual(gateway.log.entries(containing: "TLS handshake completed").count, completedBefore,
                       "\(options): a handshake completed:\n\(gateway.log.text)", file: file, line: line)
        XCTAssertEqual(gateway.log.entries(containing: "connected to broker").count, admittedBefore,
                       "\(options): admitted:\n\(gateway.log.text)", file: file, line: line)
    }

    private func assertKeyExchange(_ output: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(output.contains("Server Temp Key: \(expected)"), "not \(expected):\n\(output)", file: file, line: line)
    }

    // MARK: groups

    func testGroupsRestrictTheTLS13KeyExchange() async throws {
        let gateway = try await startTunedGateway { $0.tls.groups = "P-384" }

        try await assertRefused(by: gateway, ["-groups", "X25519"], alert: "handshake failure", reason: "no suitable key share")

        let p384 = try await assertAccepted(by: gateway, ["-groups", "P-384"], cipher: "TLS_AES_256_GCM_SHA384", version: "TLSv1.3")
        // OpenSSL 3.0's s_client has no "Negotiated TLS1.3 group" line (3.2+); it prints the key share.
        assertKeyExchange(p384, "ECDH, secp384r1, 384 bits")

        // A device whose first key share is X25519 but which also supports P-384 is asked for a
        // P-384 share (HelloRetryRequest) rather than refused.
        let retried = try await assertAccepted(by: gateway, ["-groups", "X25519:P-384"], cipher: "TLS_AES_256_GCM_SHA384", version: "TLSv1.3")
        assertKeyExchange(retried, "ECDH, secp384r1, 384 bits")
    }

    /// Negative counterpart: the default groups serve the X25519-only device.
    func testDefaultGroupsAcceptX25519() async throws {
        let gateway = try await startTunedGateway()
        XCTAssertNil(gateway.configuration.tls.groups)

        let output = try await assertAccepted(by: gateway, ["-groups", "X25519"], cipher: "TLS_AES_256_GCM_SHA384", version: "TLSv1.3")
        assertKeyExchange(output, "X25519, 253 bits")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
    }

    /// In TLS 1.2 the groups choose the ECDHE curve too (the gateway's preference order wins, as
    /// for ciphers), and, as TLS 1.2 requires (RFC 8422), they also bound the curves of ECDSA
    /// certificates: a list without P-256 refuses TLS 1.2 devices whose certificate key is P-256,
    /// once their certificate arrives (after the ServerHello).
    func testGroupsApplyToTLS12() async throws {
        let preferP384 = try await startTunedGateway { $0.tls.groups = "P-384:P-256" }
        let preferred = try await assertAccepted(by: preferP384, ["-tls1_2"], cipher: "ECDHE-ECDSA-AES128-GCM-SHA256", version: "TLSv1.2")
        assertKeyExchange(preferred, "ECDH, secp384r1, 384 bits")

        let defaults = try await startTunedGateway()
        let x25519 = try await assertAccepted(by: defaults, ["-tls1_2"], cipher: "ECDHE-ECDSA-AES128-GCM-SHA256", version: "TLSv1.2")
        assertKeyExchange(x25519, "X25519, 253 bits")

        let onlyP384 = try await startTunedGateway { $0.tls.groups = "P-384" }
        try await assertRefused(by: onlyP384, ["-tls1_2"], alert: "illegal parameter", reason: "wrong curve", afterServerHello: true)
    }

    // MARK: TLS 1.3 ciphersuites

    func testTLS13CiphersuitesRestrictNegotiation() async throws {
        let gateway = try await startTunedGateway { $0.tls.tls13Ciphersuites = "TLS_CHACHA20_POLY1305_SHA256" }

        try await assertRefused(by: gateway, ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
                                alert: "handshake failure", reason: "no shared cipher")
        // A device that also speaks TLS 1.2 is not moved down to 1.2 either: 1.3 is chosen first.
        try await assertRefused(by: gateway, ["-ciphersuites", "TLS_AES_128_GCM_SHA256"],
                                alert: "handshake failure", reason: "no shared cipher")

        try await assertAccepted(by: gateway, ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
                                 cipher: "TLS_CHACHA20_POLY1305_SHA256", version: "TLSv1.3")
        // Offered every default suite, the gateway picks the only one its setting kept.
        try await assertAccepted(by: gateway, ["-tls1_3"], cipher: "TLS_CHACHA20_POLY1305_SHA256", version: "TLSv1.3")
    }

    /// Negative counterpart: the default ciphersuites serve the AES-128-only device.
    func testDefaultTLS13CiphersuitesAcceptAES128() async throws {
        let gateway = try await startTunedGateway()
        XCTAssertNil(gateway.configuration.tls.tls13Ciphersuites)

        try await assertAccepted(by: gateway, ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
                                 cipher: "TLS_AES_128_GCM_SHA256", version: "TLSv1.3")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
    }

    // MARK: TLS 1.2 ciphers

    func testTLS12CiphersRestrictNegotiation() async throws {
        let gateway = try await startTunedGateway { $0.tls.tls12Ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305" }

        try await assertRefused(by: gateway, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                                alert: "handshake failure", reason: "no shared cipher")

        try await assertAccepted(by: gateway, ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
                                 cipher: "ECDHE-ECDSA-CHACHA20-POLY1305", version: "TLSv1.2")
        // Offered every default cipher, the gateway picks the only one its setting kept.
        try await assertAccepted(by: gateway, ["-tls1_2"], cipher: "ECDHE-ECDSA-CHACHA20-POLY1305", version: "TLSv1.2")
        // TLS 1.3 is untouched by the TLS 1.2 list.
        try await assertAccepted(by: gateway, ["-tls1_3"], cipher: "TLS_AES_256_GCM_SHA384", version: "TLSv1.3")
    }

    /// Negative counterpart: the default TLS 1.2 list serves the AES-128-GCM device.
    func testDefaultTLS12CiphersAcceptForwardSecretAEAD() async throws {
        let gateway = try await startTunedGateway()
        XCTAssertNil(gateway.configuration.tls.tls12Ciphers)

        try await assertAccepted(by: gateway, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                                 cipher: "ECDHE-ECDSA-AES128-GCM-SHA256", version: "TLSv1.2")
    }

    /// The default TLS 1.2 list has neither static-RSA key exchange nor CBC suites. The gateway has
    /// an RSA certificate too, so the refusals are about the cipher list, not a missing key type.
    private static let staticRSA = ["-tls1_2", "-cipher", "AES128-SHA"]
    private static let ecdheCBC = ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"]

    func testDefaultTLS12CiphersRefuseLegacySuites() async throws {
        let gateway = try await startTunedGateway(identities: ["server", "server-rsa"])

        try await assertRefused(by: gateway, Self.staticRSA, alert: "handshake failure", reason: "no shared cipher")
        try await assertRefused(by: gateway, Self.ecdheCBC, alert: "handshake failure", reason: "no shared cipher")
        XCTAssertFalse(gateway.log.contains("connected to broker"), gateway.log.text)
    }

    /// Negative counterpart: the same devices are served by a gateway whose list includes their
    /// suites (OpenSSL 3.0's default security level 1 still allows both), so the refusals above
    /// come from the default list.
    func testTLS12CipherListIncludingLegacySuitesAcceptsThem() async throws {
        let gateway = try await startTunedGateway(identities: ["server", "server-rsa"]) {
            $0.tls.tls12Ciphers = "AES128-SHA:ECDHE-ECDSA-AES128-SHA"
        }

        try await assertAccepted(by: gateway, Self.staticRSA, cipher: "AES128-SHA", version: "TLSv1.2")
        let ecdhe = try await assertAccepted(by: gateway, Self.ecdheCBC, cipher: "ECDHE-ECDSA-AES128-SHA", version: "TLSv1.2")
        assertKeyExchange(ecdhe, "X25519, 253 bits")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
    }
}
