import Foundation
import TestSupport
import XCTest

/// Device revocation end to end: the real `staplegate` binary asks a real `openssl ocsp`
/// responder about each device certificate inside the TLS handshake; real `mosquitto_pub`
/// devices; the real broker's log shows which clients got as far as CONNECT.
/// The failure policies (unknown, unreachable, no_responder) are in `DeviceOCSPPolicyTests`.
///
/// Refused devices run `mosquitto_pub -d`: only in debug mode does it print the TLS alert it got
/// ("OpenSSL Error[0]: …sslv3 alert certificate revoked"); otherwise just "The connection was lost".
final class DeviceRevocationTests: GatewayTestCase {
    private var responder: OCSPResponder?
    private var proxy: CountingTCPProxy?

    override func tearDown() async throws {
        await proxy?.stop()
        await responder?.stop()
        try await super.tearDown()
    }

    /// The PKI's real responder, on the port the certificates' AIA names.
    private func startResponder() async throws {
        responder = try await OCSPResponder.start(pki: pki)
    }

    /// The PKI's real responder behind a proxy that counts the gateway's requests to it.
    private func startCountedResponder() async throws -> CountingTCPProxy {
        try await startResponder()
        let proxy = try await CountingTCPProxy.start(forwardingTo: pki.ocspPort)
        self.proxy = proxy
        return proxy
    }

    // MARK: Good devices

    func testAGoodDeviceIsAdmittedAndItsReconnectIsServedFromTheCacheWithoutAskingAgain() async throws {
        let proxy = try await startCountedResponder()
        let gateway = try await startDeviceOCSPGateway(["responder: \(proxy.url)"])
        let topic = uniqueTopic("ocsp/good")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let first = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "first")

        XCTAssertEqual(first.status, .exited(0), "\(first)")
        try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake completed", "device=device-1",
                                                                "device.check=OCSP good (from \(proxy.url))"])
        XCTAssertEqual(proxy.connectionsAccepted, 1, "the first connect asks the responder once")
        let received = try await subscriber.waitForMessages(1)
        XCTAssertEqual(received.map(\.payload), ["first"])

        let second = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "second")

        XCTAssertEqual(second.status, .exited(0), "\(second)")
        try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake completed", "device=device-1",
                                                                "device.check=OCSP good (cached until"])
        let both = try await subscriber.waitForMessages(2)
        XCTAssertEqual(both.map(\.payload), ["first", "second"])
        XCTAssertEqual(proxy.connectionsAccepted, 1, "the reconnect was answered from the cache")
        XCTAssertEqual(DeviceOCSPLog.lines(of: gateway, containing: "OCSP answer for a device certificate").count, 1, gateway.output)
    }

    // MARK: Revoked devices

    func testARevokedDeviceIsRefusedWithCertificateRevokedTwiceAskingOnceAndNeverReachesTheBroker() async throws {
        let proxy = try await startCountedResponder()
        let gateway = try await startDeviceOCSPGateway(["responder: \(proxy.url)"])
        let topic = uniqueTopic("ocsp/revoked")
        let firstID = uniqueClientID("revoked-first")
        let secondID = uniqueClientID("revoked-second")

        let first = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-revoked", topic: topic,
                                           message: "from a revoked device", clientID: firstID, extraArgs: ["-d"])

        XCTAssertNotEqual(first.status, .exited(0), "a revoked device got through:\n\(first)")
        XCTAssertTrue(first.output.contains("certificate revoked"), "no certificate_revoked alert:\n\(first)")
        let firstFailure = try await DeviceOCSPLog.waitForLine(of: gateway, with: [
            "TLS handshake failed", "device certificate revoked at", "reason keyCompromise", "(OCSP, from \(proxy.url))",
        ])
        XCTAssertFalse(firstFailure.contains("cached"), firstFailure)
        XCTAssertEqual(proxy.connectionsAccepted, 1)

        let second = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-revoked", topic: topic,
                                            message: "from a revoked device again", clientID: secondID, extraArgs: ["-d"])

        XCTAssertNotEqual(second.status, .exited(0), "a revoked device got through on its second try:\n\(second)")
        XCTAssertTrue(second.output.contains("certificate revoked"), "no certificate_revoked alert:\n\(second)")
        try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake failed", "device certificate revoked at",
                                                                "(OCSP, cached until"])
        XCTAssertEqual(proxy.connectionsAccepted, 1, "the second refusal came from the cache, not the responder")

        // Negative control: a good device's CONNECT does show in the broker's log...
        let goodID = uniqueClientID("good-control")
        let good = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic,
                                          message: "from a good device", clientID: goodID)
        XCTAssertEqual(good.status, .exited(0), "\(good)")
        try await waitUntil(timeout: .seconds(10), "the broker to log the good device's CONNECT", details: { self.broker.log }) {
            self.broker.log.split(separator: "\n").contains { $0.contains("New client connected") && $0.contains(" as \(goodID) ") }
        }
        // ...while neither connect of the revoked device ever got that far.
        XCTAssertFalse(broker.log.contains(firstID), broker.log)
        XCTAssertFalse(broker.log.contains(secondID), broker.log)
        let brokerSessions = DeviceOCSPLog.lines(of: gateway, containing: "connected to broker")
        XCTAssertEqual(brokerSessions.count, 1, gateway.output)
        XCTAssertTrue(brokerSessions.allSatisfy { $0.contains("device=device-1") }, gateway.output)
    }

    func testSoftFailSettingsDoNotAdmitARevokedDevice() async throws {
        try await startResponder()
        let gateway = try await startDeviceOCSPGateway(["unknown: allow", "unreachable: allow", "no_responder: allow"])

        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-revoked",
                                            topic: uniqueTopic("ocsp/revoked-soft"), message: "revoked", extraArgs: ["-d"])

        XCTAssertNotEqual(result.status, .exited(0), "soft-fail let a revoked device in:\n\(result)")
        XCTAssertTrue(result.output.contains("certificate revoked"), "\(result)")
        try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake failed", "device certificate revoked at"])
    }

    func testWithDeviceOCSPDisabledTheRevokedDeviceIsAdmitted() async throws {
        // No responder at all: nothing is asked. What refused the device above was its revocation.
        let gateway = try await startDeviceOCSPGateway(["enabled: false"])
        try await gateway.waitForOutput("device OCSP checks are off")
        let topic = uniqueTopic("ocsp/disabled")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-revoked", topic: topic,
                                            message: "unchecked")

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let received = try await subscriber.waitForMessages(1)
        XCTAssertEqual(received.map(\.payload), ["unchecked"])
        let completed = try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake completed", "device=device-revoked"])
        XCTAssertFalse(completed.contains("device.check="), "no OCSP verdict when the check is off: \(completed)")
        XCTAssertTrue(DeviceOCSPLog.lines(of: gateway, containing: "OCSP answer for a device certificate").isEmpty, gateway.output)
        XCTAssertTrue(DeviceOCSPLog.lines(of: gateway, containing: "OCSP check of a device certificate failed").isEmpty,
                      gateway.output)
    }
}

// MARK: - Shared by the device OCSP suites

extension GatewayTestCase {
    /// The real binary with a `device_ocsp` section made of `lines` (each "key: value"),
    /// stopped at the end of the test; its log is printed when the test failed.
    func startDeviceOCSPGateway(_ lines: [String], deviceCA: String? = nil) async throws -> StapleGateProcess {
        let directory = try makeTemporaryDirectory()
        let section = (["device_ocsp:"] + lines.map { "  \($0)" }).joined(separator: "\n")
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory,
                                                        sections: [section], deviceCA: deviceCA)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log (\(section.replacingOccurrences(of: "\n", with: " "))) ---\n\(gateway.output)")
            }
            await gateway.stop()
        }
        return gateway
    }
}

/// What a gateway logged, line by line (a type of its own, so as not to collide with helpers
/// other suites add to `StapleGateProcess`).
enum DeviceOCSPLog {
    static func lines(of gateway: StapleGateProcess) -> [String] {
        gateway.process.stderr.lines + gateway.process.stdout.lines
    }

    /// Every line `gateway` logged so far that contains `text`.
    static func lines(of gateway: StapleGateProcess, containing text: String) -> [String] {
        lines(of: gateway).filter { $0.contains(text) }
    }

    /// Waits for a line of `gateway`'s log that contains every one of `parts`, and returns it.
    @discardableResult
    static func waitForLine(of gateway: StapleGateProcess, with parts: [String],
                            timeout: Duration = .seconds(10)) async throws -> String {
        var found: String?
        try await waitUntil(timeout: timeout, "a gateway log line with \(parts)", details: { gateway.output }) {
            found = lines(of: gateway).first { line in parts.allSatisfy { line.contains($0) } }
            return found != nil
        }
        return found ?? ""
    }
}
