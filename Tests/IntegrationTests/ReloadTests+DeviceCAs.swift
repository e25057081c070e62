import Foundation
import TestSupport
import XCTest

/// A reload that removes device CAs says what it does not do: it ends no session. Judged by
/// the devices: the open session carries on, a new connect of the same device is refused.
extension ReloadTests {
    func testAReloadRemovingADeviceCAWarnsThatOpenSessionsStayAndRefusesReconnects() async throws {
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: ["device_ocsp: { enabled: false }"], logging: "{ level: info }")
        printLogsOnFailure(gateway)
        let topic = uniqueTopic("reload/ca")
        let connected = try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: "device-1"),
                                                            broker: broker, topic: topic)
        addTeardownBlock { await connected.stop() }
        let original = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        let onlyRogue = original.replacingOccurrences(of: "device_ca: \"\(pki.caChain)\"", with: "device_ca: \"\(pki.path("rogue-ca.pem"))\"")
        XCTAssertNotEqual(onlyRogue, original)
        try write(onlyRogue, to: gateway.configPath)

        let reload = try await gateway.command(["reload"])

        XCTAssertEqual(reload.status, .exited(0), "\(reload)")
        XCTAssertTrue(reload.stderr.contains(
            "warning: device CA certificate(s) removed from tls.device_ca: CN=StapleGate Demo Issuing CA; CN=StapleGate Demo Root CA; "
                + "sessions of their devices that are open now stay open until they disconnect, and their reconnects are refused"),
            "\(reload)")
        try await mosquittoPub(.broker(broker), topic: topic, payload: .message("still connected")).assertSucceeded()
        let messages = try await connected.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["still connected"])
        let reconnect = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "refused")
        XCTAssertNotEqual(reconnect.status, .exited(0), "\(reconnect)")
    }
}
