import Foundation
import TestSupport
import XCTest

/// `staplegate ocsp recheck` judged by what the gateway then does to the device, not by what the
/// command prints: a device revoked while it was away is asked about again at once, the answer
/// is cached, and its next connect is refused, with a saved TLS 1.3 ticket as well as with a
/// full handshake, before the broker ever sees it. The real binary, a real `openssl ocsp`
/// responder behind a counting proxy (so the test knows the gateway asked), Mosquitto,
/// mosquitto_pub/sub and `openssl s_client`.
final class OperatorRecheckTests: RevocationTestCase {
    private static let device = "device-to-revoke"

    // MARK: Helpers

    /// The device connects once (a full handshake whose session ticket is saved to `ticket`),
    /// and leaves: its "good" is cached for 24 h.
    private func connectOnceAndLeave(_ name: String, ticket: String, pki: TestPKI, gateway: StapleGateProcess) async throws {
        try await saveSessionTicket(as: name, to: ticket, pki: pki, gateway: gateway)
        // While the cached status is good, the ticket resumes: the refusal later is the recheck's doing.
        let resumed = try OpenSSLClient(port: gateway.port, pki: pki, device: name, extraArgs: ["-sess_in", ticket])
        try await resumed.waitForOutput("Cipher is")
        let control = try await resumed.finish()
        XCTAssertTrue(control.stdout.contains("Reused, TLSv1.3"), "\(control)")
    }

    private func cachedStatus(of serial: String, gateway: StapleGateProcess) async throws -> String? {
        try await OCSPCacheListing.read(from: gateway).first { $0.serial == serial }?.status
    }

    /// The device comes back: with its saved ticket, then with a full handshake as mosquitto_pub
    /// (a client id of its own). Both are refused with the certificate_revoked alert, the
    /// broker never sees the client id, and no request goes to the responder (the recheck's
    /// answer is served from the cache).
    private func assertRefusedEverywayAfterTheRecheck(_ name: String, ticket: String, pki: TestPKI,
                                                      gateway: StapleGateProcess) async throws {
        let proxy = try XCTUnwrap(responderProxy)
        let requests = proxy.connectionsAccepted

        let withTicket = try OpenSSLClient(port: gateway.port, pki: pki, device: name, extraArgs: ["-sess_in", ticket])
        let refused = try await withTicket.waitUntilRefused(timeout: .seconds(15))
        XCTAssertFalse(refused.stdout.contains("Reused,"), "the revoked device's ticket was honoured:\n\(refused)")
        XCTAssertTrue(refused.output.contains("alert certificate revoked"), "\(refused)")

        let clientID = uniqueClientID("recheck-revoked")
        let publish = try await mosquittoPub(port: gateway.port, pki: pki, device: name, topic: uniqueTopic("recheck"),
                                             message: "should never arrive", clientID: clientID, extraArgs: ["-d"])
        XCTAssertNotEqual(publish.status, .exited(0), "\(publish)")
        XCTAssertTrue(publish.output.contains("alert certificate revoked"), "\(publish)")
        try await gateway.waitForOutput("device certificate: certificate revoked")
        XCTAssertFalse(broker.log.contains(clientID), "the broker saw the refused device's CONNECT:\n\(broker.log)")
        XCTAssertEqual(proxy.connectionsAccepted, requests, "refusals are served from the cached answer")
    }

    private func recheckCounter(_ gateway: StapleGateProcess, answer: String) async throws -> Double? {
        let port = try XCTUnwrap(gateway.adminPort)
        let scrape = try await adminRequest(port: port, "/metrics")
        let samples = try await PrometheusParser.parse(scrape.body, in: try makeTemporaryDirectory()).get()
        return samples.value("staplegate_ocsp_rechecks_total", ["trigger": "operator", "answer": answer])
    }

    /// The whole story of the issue, for a device named by `selector`'s command-line option.
    private func recheckADisconnectedRevokedDevice(by option: (TestPKI) throws -> [String]) async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI(countingRequests: true)
        let serial = try serial(of: Self.device, in: pki)
        let ticket = try makeTemporaryDirectory().file("ticket.pem")
        try await connectOnceAndLeave(Self.device, ticket: ticket, pki: pki, gateway: gateway)

        try await revokeAtTheResponder(Self.device, in: pki)
        let cachedBefore = try await cachedStatus(of: serial, gateway: gateway)
        XCTAssertEqual(cachedBefore, "good", "nothing told the gateway yet")
        let proxy = try XCTUnwrap(responderProxy)
        let requestsBefore = proxy.connectionsAccepted

        let recheck = try await gateway.command(["ocsp", "recheck"] + (try option(pki)))

        XCTAssertEqual(recheck.status, .exited(3), "\(recheck)")
        XCTAssertEqual(proxy.connectionsAccepted, requestsBefore + 1, "the responder was asked once, now")
        let line = try XCTUnwrap(recheck.stdout.split(separator: "\n").first, "\(recheck)")
        XCTAssertTrue(line.hasPrefix("\(serial)  \(Self.device)  revoked at "), "\(recheck)")
        XCTAssertTrue(line.contains(", keyCompromise: cached until "), "\(recheck)")
        XCTAssertTrue(line.hasSuffix("; 0 sessions closed"), "\(recheck)")
        let cachedAfter = try await cachedStatus(of: serial, gateway: gateway)
        XCTAssertEqual(cachedAfter, "revoked")

        try await assertRefusedEverywayAfterTheRecheck(Self.device, ticket: ticket, pki: pki, gateway: gateway)
        // Traced for the device, and counted.
        let trace = try await gateway.command(["trace", Self.device])
        XCTAssertTrue(trace.stdout.contains("ocsp_recheck"), "\(trace)")
        XCTAssertTrue(trace.stdout.contains("operator's recheck: revoked at "), "\(trace)")
        let counted = try await recheckCounter(gateway, answer: "revoked")
        XCTAssertEqual(counted, 1)
    }

    // MARK: Tests

    func testRecheckByDeviceOfADisconnectedRevokedDeviceRefusesItsNextConnects() async throws {
        try await recheckADisconnectedRevokedDevice { _ in ["--device", Self.device] }
    }

    func testRecheckBySerialOfADisconnectedRevokedDeviceRefusesItsNextConnects() async throws {
        // As `openssl x509 -text` prints serials: lower case with colons.
        try await recheckADisconnectedRevokedDevice { pki in
            let serial = try self.serial(of: Self.device, in: pki).lowercased()
            let pairs = stride(from: 0, to: serial.count, by: 2).map { offset -> String in
                let start = serial.index(serial.startIndex, offsetBy: offset)
                return String(serial[start..<serial.index(start, offsetBy: 2)])
            }
            return ["--serial", pairs.joined(separator: ":")]
        }
    }

    func testRecheckByDeviceClosesTheSessionOfAConnectedRevokedDevice() async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI(countingRequests: true)
        let subscriber = try await subscribe(as: Self.device, pki: pki, gateway: gateway)
        let serial = try serial(of: Self.device, in: pki)
        try await revokeAtTheResponder(Self.device, in: pki)
        XCTAssertTrue(subscriber.process.isRunning, subscriber.process.output)

        let recheck = try await gateway.command(["ocsp", "recheck", "--device", Self.device])

        XCTAssertEqual(recheck.status, .exited(3), "\(recheck)")
        XCTAssertTrue(recheck.stdout.hasPrefix("\(serial)  \(Self.device)  revoked at "), "\(recheck)")
        XCTAssertTrue(recheck.stdout.contains("; 1 session closed (from 127.0.0.1:"), "\(recheck)")
        try await assertSessionClosed(subscriber)
        try await assertRefusedAsRevoked(Self.device, pki: pki, gateway: gateway)
    }

    /// A renewed certificate shares the device's identity: both are asked about, the revoked
    /// old one is refused, and the session of the good new one stays open.
    func testRecheckOfAnIdentityWithTwoCertificatesAsksAboutEachAndActsOnEach() async throws {
        let renewed = "device-to-revoke-renewed"
        let (pki, gateway) = try await startGatewayWithOwnPKI(countingRequests: true) { pki in
            try pki.issueDevice(renewed, commonName: Self.device)
        }
        let oldSerial = try serial(of: Self.device, in: pki), newSerial = try serial(of: renewed, in: pki)
        let ticket = try makeTemporaryDirectory().file("ticket.pem")
        try await connectOnceAndLeave(Self.device, ticket: ticket, pki: pki, gateway: gateway)
        let subscriber = try await subscribe(as: renewed, pki: pki, gateway: gateway)
        try await revokeAtTheResponder(Self.device, in: pki)
        let proxy = try XCTUnwrap(responderProxy)
        let requestsBefore = proxy.connectionsAccepted

        let recheck = try await gateway.command(["ocsp", "recheck", "--device", Self.device])

        XCTAssertEqual(recheck.status, .exited(3), "\(recheck)")
        XCTAssertEqual(proxy.connectionsAccepted, requestsBefore + 2, "one request per certificate")
        let lines = recheck.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2, "\(recheck)")
        let old = try XCTUnwrap(lines.first { $0.hasPrefix("\(oldSerial)  \(Self.device)  ") }, "\(recheck)")
        XCTAssertTrue(old.contains("revoked at ") && old.hasSuffix("; 0 sessions closed"), old)
        let new = try XCTUnwrap(lines.first { $0.hasPrefix("\(newSerial)  \(Self.device)  ") }, "\(recheck)")
        XCTAssertTrue(new.contains("good: cached until ") && new.contains("; 1 session kept (from 127.0.0.1:"), new)

        try await assertRefusedEverywayAfterTheRecheck(Self.device, ticket: ticket, pki: pki, gateway: gateway)
        XCTAssertTrue(subscriber.process.isRunning, "the renewed certificate's session stays:\n\(subscriber.process.output)")
        let published = try await mosquittoPub(port: gateway.port, pki: pki, device: renewed, topic: uniqueTopic("renewed"),
                                               message: "still welcome")
        XCTAssertEqual(published.status, .exited(0), "\(published)")
    }

    func testAnIdentityOrSerialTheGatewayNeverSawIsSaidSoWithItsOwnExitStatus() async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI(countingRequests: true)
        // Known to the CA, never seen by the gateway.
        let unseenSerial = try serial(of: "device-2", in: pki)
        let proxy = try XCTUnwrap(responderProxy)

        let byDevice = try await gateway.command(["ocsp", "recheck", "--device", "device-2"])
        XCTAssertEqual(byDevice.status, .exited(4), "\(byDevice)")
        XCTAssertEqual(byDevice.stdout,
                       "the gateway knows nothing about device device-2: no cached OCSP status and no connected session; nothing was done\n")
        let bySerial = try await gateway.command(["ocsp", "recheck", "--serial", unseenSerial])
        XCTAssertEqual(bySerial.status, .exited(4), "\(bySerial)")
        XCTAssertTrue(bySerial.stdout.hasPrefix("the gateway knows nothing about serial \(unseenSerial): "), "\(bySerial)")
        XCTAssertEqual(proxy.connectionsAccepted, 0, "nothing was asked")
        let counted = try await recheckCounter(gateway, answer: "revoked")
        XCTAssertEqual(counted, 0)
    }

    /// The responder is down when the operator asks: the old "good" is not kept. The device's
    /// next connect is refused (the default `unreachable: reject`) instead of admitted on the
    /// stale answer, and the command says the recheck could not be done (exit 5).
    func testARecheckThatGetsNoAnswerDropsTheOldAnswerAndSaysSo() async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI(countingRequests: true)
        let serial = try serial(of: "device-1", in: pki)
        let first = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("down"),
                                           message: "while good")
        XCTAssertEqual(first.status, .exited(0), "\(first)")
        try XCTUnwrap(responderProxy).refuseAll = true

        let recheck = try await gateway.command(["ocsp", "recheck", "--device", "device-1"])

        XCTAssertEqual(recheck.status, .exited(5), "\(recheck)")
        XCTAssertTrue(recheck.stdout.hasPrefix("\(serial)  device-1  no answer from http://127.0.0.1:\(pki.ocspPort)"), "\(recheck)")
        XCTAssertTrue(recheck.stdout.contains("the cached answer was dropped; new connections are refused until the responder answers"),
                      "\(recheck)")
        let cached = try await cachedStatus(of: serial, gateway: gateway)
        XCTAssertNotEqual(cached, "good")
        let clientID = uniqueClientID("recheck-down")
        let refused = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("down"),
                                             message: "not now", clientID: clientID, extraArgs: ["-d"])
        XCTAssertNotEqual(refused.status, .exited(0), "\(refused)")
        XCTAssertFalse(broker.log.contains(clientID), broker.log)
    }
}
