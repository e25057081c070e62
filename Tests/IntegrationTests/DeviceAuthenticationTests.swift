import Foundation
import TestSupport
import XCTest

/// Mutual TLS: only devices with a valid certificate from the device CA get through, and both
/// the device (TLS alert) and the operator (gateway log) learn why the others did not.
final class DeviceAuthenticationTests: GatewayTestCase {
    /// Negative control for the refusals below: a good device completes the handshake with no alert.
    func testTrustedDeviceCompletesHandshake() async throws {
        let gateway = try await startGateway()
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: "device-1")

        try await client.waitForOutput("Verify return code: 0 (ok)")
        try await gateway.log.waitFor("TLS handshake completed", where: { $0.metadata["device"] == "device-1" })
        // Verified; the broker is dialled once its CONNECT arrives (MQTTAdmissionTests), so the
        // device is held, not dropped, meanwhile.
        XCTAssertTrue(client.process.isRunning, "the gateway dropped a verified device:\n\(client.output)")

        let result = try await client.finish()
        XCTAssertFalse(result.output.contains("alert"), "unexpected TLS alert:\n\(result)")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
    }

    func testDeviceWithoutCertificateIsRefused() async throws {
        let gateway = try await startGateway()
        let topic = uniqueTopic("auth/nocert")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let refused = try await mosquittoPub(port: gateway.port, pki: pki, device: nil, topic: topic, message: "anonymous")

        XCTAssertNotEqual(refused.status, .exited(0), "a device without a certificate got through:\n\(refused)")
        let failure = try await gateway.log.waitFor("TLS handshake failed")
        XCTAssertTrue(failure.message.contains("peer did not return a certificate"), "\(failure)")
        XCTAssertFalse(gateway.log.contains("connected to broker"), "an unauthenticated device reached the broker")

        // Nothing of it reached the broker: a good device's message on the same topic is the first to arrive.
        let good = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "authenticated")
        XCTAssertEqual(good.status, .exited(0), "\(good)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["authenticated"])
    }

    func testDeviceFromUntrustedCAIsRefused() async throws {
        let gateway = try await startGateway()

        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: "device-rogue")
        let handshake = try await client.waitUntilRefused()
        XCTAssertTrue(handshake.output.contains("unknown ca"), "s_client saw no 'unknown ca' alert:\n\(handshake)")

        let failure = try await gateway.log.waitFor("TLS handshake failed")
        XCTAssertTrue(failure.message.contains("certificate verify failed"), "\(failure)")
        XCTAssertTrue(failure.message.contains("unable to get local issuer certificate"), "\(failure)")

        let publish = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-rogue",
                                             topic: uniqueTopic("auth/rogue"), message: "rogue")
        XCTAssertNotEqual(publish.status, .exited(0), "a device of an untrusted CA got through:\n\(publish)")
        XCTAssertFalse(gateway.log.contains("connected to broker"), "a rogue device reached the broker")
    }

    func testDeviceWithExpiredCertificateIsRefused() async throws {
        let gateway = try await startGateway()

        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: "device-expired")
        let handshake = try await client.waitUntilRefused()
        XCTAssertTrue(handshake.output.contains("certificate expired"), "s_client saw no 'certificate expired' alert:\n\(handshake)")

        let failure = try await gateway.log.waitFor("TLS handshake failed")
        XCTAssertTrue(failure.message.contains("certificate has expired"), "\(failure)")

        let publish = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-expired",
                                             topic: uniqueTopic("auth/expired"), message: "expired")
        XCTAssertNotEqual(publish.status, .exited(0), "a device with an expired certificate got through:\n\(publish)")
        XCTAssertFalse(gateway.log.contains("connected to broker"), "an expired device reached the broker")
    }
}
