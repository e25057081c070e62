import Foundation
import TestSupport
import XCTest

/// The recheck against a connection between its TLS handshake and its MQTT admission: judged
/// "good" from the old answer, not a session yet when the recheck closes sessions. Found by the
/// soak run (a busy machine admitted one 9 s after its handshake, after the recheck, and kept it).
extension OperatorRecheckTests {
    func testADeviceJudgedBeforeTheRecheckAndAdmittedAfterItIsRefused() async throws {
        let device = "device-to-revoke"
        let (pki, gateway) = try await startGatewayWithOwnPKI()
        let directory = try makeTemporaryDirectory()
        // Negative control: the same steps without a revocation in between are admitted.
        let control = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: device,
                                                clientID: uniqueClientID("judged-control"), directory: directory)
        try await control.waitForHandshake(timeout: .seconds(30))
        try await control.connect(timeout: .seconds(30))

        // Handshake done (the certificate judged good), CONNECT not sent yet.
        let clientID = uniqueClientID("judged-before")
        let late = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: device, clientID: clientID,
                                             directory: directory)
        try await late.waitForHandshake(timeout: .seconds(30))
        try await revokeAtTheResponder(device, in: pki)
        let recheck = try await gateway.command(["ocsp", "recheck", "--device", device])
        XCTAssertEqual(recheck.status, .exited(3), "\(recheck)")
        try await assertSessionClosed(ofClient: control)

        // Now the CONNECT: refused with "not authorized", and the broker never hears of it.
        do {
            try await late.connect(timeout: .seconds(30))
            XCTFail("a device judged before the recheck was admitted after it\n\(late.process.output)")
        } catch is HandwrittenMQTTClient.ClosedError {}
        XCTAssertEqual(late.received([0x20, 0x02, 0x00, 0x05]), 1, "CONNACK not authorized\n\(late.process.output)")
        XCTAssertFalse(broker.log.contains(clientID), broker.log)
        try await waitUntil(timeout: .seconds(10), "the refusal in the gateway's log", details: { gateway.output.suffix(3_000).description }) {
            gateway.output.contains("refused by a recheck while this connection was being admitted")
        }
    }

    /// The control session, cut by the recheck: its s_client sees the connection end.
    private func assertSessionClosed(ofClient client: HandwrittenMQTTClient) async throws {
        let status = try await client.waitForClose(timeout: .seconds(20))
        XCTAssertNotNil(status)
    }
}
