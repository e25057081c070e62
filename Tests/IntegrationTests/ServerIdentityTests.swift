import Foundation
import StapleGateConfig
import TestSupport
import XCTest

/// The gateway's own certificates: with an ECDSA and an RSA one configured, OpenSSL picks per
/// handshake the one the device can use; with only ECDSA, an RSA-only device is refused. And
/// `min_version` "1.3" refuses TLS 1.2 devices while serving TLS 1.3 ones.
final class ServerIdentityTests: GatewayTestCase {
    /// What s_client reports about the certificate the gateway presented.
    private enum Presented: String {
        case ecdsa = "Server public key is 256 bit"
        case rsa = "Server public key is 2048 bit"

        var signatureType: String { self == .ecdsa ? "Peer signature type: ECDSA" : "Peer signature type: RSA" }
    }

    private static let rsaOnlyTLS12 = ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]
    private static let ecdsaOnlyTLS12 = ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    /// `-sigalgs` is what the device accepts from the gateway; the device still signs with its
    /// own ECDSA key (`-client_sigalgs`), or it could not authenticate at all.
    private static let rsaOnlyTLS13 = ["-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256", "-client_sigalgs", "ecdsa_secp256r1_sha256"]
    private static let ecdsaOnlyTLS13 = ["-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"]

    private func startGateway(identities: [String], minimumVersion: TLSVersionChoice = .tls12) async throws -> GatewayUnderTest {
        var configuration = GatewayUnderTest.configuration(pki: pki, upstream: broker.endpoint, serverIdentities: identities)
        if minimumVersion == .tls13 { configuration.tls.minimumVersion = .tls13 }
        return try await startConfiguredGateway(configuration)
    }

    private enum TLSVersionChoice { case tls12, tls13 }

    /// Handshakes as device-1 with `options`, checks the certificate the gateway presented,
    /// that the device was admitted, then closes cleanly.
    private func assertGateway(_ gateway: GatewayUnderTest, presents expected: Presented, to options: [String],
                               version: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        // Verified by the gateway (its MQTT admission then waits for a CONNECT, not sent here).
        let verifiedBefore = gateway.log.entries(containing: "TLS handshake completed").count
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: "device-1", extraArgs: options)
        try await client.waitForOutput("Verify return code: 0 (ok)")
        try await waitUntil(timeout: .seconds(10), "device-1 to be verified", details: { gateway.log.text }) {
            gateway.log.entries(containing: "TLS handshake completed").count > verifiedBefore
        }
        let result = try await client.finish()

        let output = result.output
        XCTAssertTrue(output.contains(expected.rawValue), "\(options): not the \(expected) certificate:\n\(output)", file: file, line: line)
        XCTAssertTrue(output.contains(expected.signatureType), "\(options):\n\(output)", file: file, line: line)
        XCTAssertTrue(output.contains("New, \(version)"), "\(options): not \(version):\n\(output)", file: file, line: line)
        XCTAssertFalse(output.contains("alert"), "\(options): unexpected TLS alert:\n\(output)", file: file, line: line)
    }

    func testTLS12DevicesGetTheCertificateTheirCipherNeeds() async throws {
        let gateway = try await startGateway(identities: ["server", "server-rsa"])

        try await assertGateway(gateway, presents: .rsa, to: Self.rsaOnlyTLS12, version: "TLSv1.2")
        try await assertGateway(gateway, presents: .ecdsa, to: Self.ecdsaOnlyTLS12, version: "TLSv1.2")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
        let ciphers = gateway.log.entries(containing: "TLS handshake completed").compactMap { $0.metadata["tls.cipher"] }
        XCTAssertEqual(ciphers, ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"])
    }

    func testTLS13DevicesGetTheCertificateTheirSignatureAlgorithmsAllow() async throws {
        let gateway = try await startGateway(identities: ["server", "server-rsa"])

        try await assertGateway(gateway, presents: .rsa, to: Self.rsaOnlyTLS13, version: "TLSv1.3")
        try await assertGateway(gateway, presents: .ecdsa, to: Self.ecdsaOnlyTLS13, version: "TLSv1.3")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
    }

    /// Negative counterpart: without the RSA certificate, RSA-only devices have nothing to use.
    func testGatewayWithOnlyECDSACertificateRefusesRSAOnlyDevices() async throws {
        let gateway = try await startGateway(identities: ["server"])

        let tls12 = try await OpenSSLClient(port: gateway.port, pki: pki, device: "device-1", extraArgs: Self.rsaOnlyTLS12)
            .waitUntilRefused()
        XCTAssertNotEqual(tls12.status, .exited(0), "\(tls12)")
        XCTAssertTrue(tls12.output.contains("alert handshake failure"), "\(tls12)")
        XCTAssertFalse(tls12.output.contains("Server public key is"), "a certificate was presented:\n\(tls12)")
        let noCipher = try await gateway.log.waitFor("TLS handshake failed")
        XCTAssertTrue(noCipher.message.contains("no shared cipher"), "\(noCipher)")

        let tls13 = try await OpenSSLClient(port: gateway.port, pki: pki, device: "device-1", extraArgs: Self.rsaOnlyTLS13)
            .waitUntilRefused()
        XCTAssertTrue(tls13.output.contains("alert handshake failure"), "\(tls13)")
        try await waitUntil(timeout: .seconds(5), "the second refusal to be logged", details: { gateway.log.text }) {
            gateway.log.entries(containing: "TLS handshake failed").count == 2
        }
        let noSignature = gateway.log.entries(containing: "TLS handshake failed")[1]
        XCTAssertTrue(noSignature.message.contains("no suitable signature algorithm"), "\(noSignature)")
        XCTAssertFalse(gateway.log.contains("connected to broker"), gateway.log.text)

        // The same gateway serves an ECDSA-capable device: the refusals were about the certificate.
        try await assertGateway(gateway, presents: .ecdsa, to: Self.ecdsaOnlyTLS12, version: "TLSv1.2")
    }

    func testMinimumVersion13RefusesTLS12AndAcceptsTLS13() async throws {
        let gateway = try await startGateway(identities: ["server"], minimumVersion: .tls13)

        let refused = try await OpenSSLClient(port: gateway.port, pki: pki, device: "device-1", extraArgs: ["-tls1_2"])
            .waitUntilRefused()
        XCTAssertNotEqual(refused.status, .exited(0), "\(refused)")
        XCTAssertTrue(refused.output.contains("alert protocol version"), "\(refused)")
        let failure = try await gateway.log.waitFor("TLS handshake failed")
        XCTAssertTrue(failure.message.contains("unsupported protocol"), "\(failure)")
        XCTAssertFalse(gateway.log.contains("connected to broker"), gateway.log.text)

        try await assertGateway(gateway, presents: .ecdsa, to: ["-tls1_3"], version: "TLSv1.3")
        // Without a version option the device offers both and gets 1.3.
        try await assertGateway(gateway, presents: .ecdsa, to: [], version: "TLSv1.3")
    }

    /// Negative counterpart: the default minimum (1.2) serves the same TLS 1.2 device.
    func testDefaultMinimumVersionAcceptsTLS12() async throws {
        let gateway = try await startGateway(identities: ["server"])
        XCTAssertEqual(gateway.configuration.tls.minimumVersion, .tls12)

        try await assertGateway(gateway, presents: .ecdsa, to: ["-tls1_2"], version: "TLSv1.2")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
    }
}
