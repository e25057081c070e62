import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// Revocations reach devices that are already in: an operator's `staplegate ocsp recheck`, the
/// background recheck when a cached status expires, and a session ticket presented after the
/// revocation. Each test revokes device-to-revoke, so each has a PKI (and responder) of its own;
/// the class's broker is shared. The real `staplegate` binary, a real `openssl ocsp` responder,
/// real mosquitto_sub and `openssl s_client` devices.
final class LiveRevocationTests: GatewayTestCase {
    private static let device = "device-to-revoke"

    private var ownPKI: TestPKI?
    private var responder: OCSPResponder?
    private var gateway: StapleGateProcess?

    override func tearDown() async throws {
        await gateway?.stop()
        gateway = nil
        await responder?.stop()
        responder = nil
        ownPKI?.remove()
        ownPKI = nil
        try await super.tearDown()
    }

    // MARK: Helpers

    /// A fresh PKI, its responder (on the port in its certificates' AIA, which the gateway
    /// asks), and a gateway for it with `deviceOCSP` as its `device_ocsp` keys.
    private func startGatewayWithOwnPKI(deviceOCSP: [String] = []) async throws -> (TestPKI, StapleGateProcess) {
        let pki = try TestPKI.make()
        ownPKI = pki
        responder = try await OCSPResponder.start(pki: pki)
        let sections = deviceOCSP.isEmpty ? [] : [(["device_ocsp:"] + deviceOCSP.map { "  \($0)" }).joined(separator: "\n")]
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: sections)
        self.gateway = gateway
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            print("--- gateway log ---\n\(gateway.process.stderr.text)\n--- broker log ---\n\(self?.broker.log ?? "")")
        }
        return (pki, gateway)
    }

    private func serial(of name: String, in pki: TestPKI) throws -> String {
        try XCTUnwrap(PEMFile.certificateChain(at: pki.certificate(name)).first).serialHex
    }

    /// What the responder itself answers for `name` ("good", "revoked", …), asked directly.
    private func responderStatus(of name: String, in pki: TestPKI) async throws -> String {
        let query = try ManagedProcess("openssl", [
            "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.certificate(name),
            "-url", "http://127.0.0.1:\(pki.ocspPort)", "-CAfile", pki.caChain,
        ])
        let result = try await query.commandResult(timeout: .seconds(10))
        let line = result.stdout.split(separator: "\n").first { $0.hasPrefix("\(pki.certificate(name)):") }
        return line.map { String($0.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespaces) } ?? "no answer: \(result)"
    }

    /// Revokes `name` in the index, then waits until the responder answers "revoked" three
    /// times in a row: each `-multi` worker serves one stale answer after the index changed,
    /// and consecutive connections go to alternating workers, so by then none is stale.
    private func revokeAtTheResponder(_ name: String, in pki: TestPKI) async throws {
        try await pki.revoke(name, reason: "keyCompromise")
        var answers: [String] = []
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(50), "the responder to answer revoked for \(name)",
                            details: { answers.joined(separator: ", ") }) {
            answers.append(try await responderStatus(of: name, in: pki))
            return answers.suffix(3) == ["revoked", "revoked", "revoked"]
        }
    }

    /// A mosquitto_sub as `name`, subscribed through the gateway.
    private func subscribe(as name: String, pki: TestPKI, gateway: StapleGateProcess) async throws -> MosquittoSubscriber {
        try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: name), broker: broker,
                                            topic: uniqueTopic("revocation"))
    }

    /// The subscriber's session is gone: the broker saw the client leave, and mosquitto_sub,
    /// whose reconnect the gateway refuses, gives up reporting the lost connection.
    private func assertSessionClosed(_ subscriber: MosquittoSubscriber, timeout: Duration = .seconds(20),
                                     file: StaticString = #filePath, line: UInt = #line) async throws {
        try await waitUntil(timeout: timeout, "the broker to see \(subscriber.clientID) leave", details: { self.broker.log }) {
            self.broker.log.contains("Client \(subscriber.clientID) closed its connection")
        }
        let status = try await subscriber.process.waitForExit(timeout: timeout)
        XCTAssertNotEqual(status, .exited(0), subscriber.process.output, file: file, line: line)
        XCTAssertTrue(subscriber.process.stderr.contains("The connection was lost"), subscriber.process.output, file: file, line: line)
    }

    /// A new handshake as `name` is refused with the certificate_revoked alert.
    private func assertRefusedAsRevoked(_ name: String, pki: TestPKI, gateway: StapleGateProcess,
                                        file: StaticString = #filePath, line: UInt = #line) async throws {
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: name)
        let refused = try await client.waitUntilRefused(timeout: .seconds(15))
        XCTAssertTrue(refused.output.contains("alert certificate revoked"), "\(refused)", file: file, line: line)
    }

    // MARK: Tests

    func testRecheckCommandClosesTheSessionOfARevokedDeviceAndNewConnectsAreRefused() async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI()
        let subscriber = try await subscribe(as: Self.device, pki: pki, gateway: gateway)
        let serial = try serial(of: Self.device, in: pki)

        try await revokeAtTheResponder(Self.device, in: pki)
        // The cache (24 h by default) still says good: nothing happens until the operator asks.
        XCTAssertTrue(subscriber.process.isRunning, subscriber.process.output)
        let recheck = try await gateway.command(["ocsp", "recheck", "--serial", serial])

        XCTAssertEqual(recheck.status, .exited(3), "\(recheck)")
        XCTAssertTrue(recheck.stdout.contains("\(serial)  \(Self.device)  refused: closed 1 session(s)"), "\(recheck)")
        XCTAssertTrue(recheck.stdout.contains("revoked"), "\(recheck)")
        try await assertSessionClosed(subscriber)
        try await gateway.waitForOutput("why=recheck requested")
        // The device's trace says who ended its session, and why.
        try await waitUntil(timeout: .seconds(10), "the disconnect in the device's trace") {
            let trace = try await gateway.command(["trace", Self.device])
            return trace.stdout.contains("closed by gateway: certificate no longer accepted: device certificate revoked")
        }
        try await assertRefusedAsRevoked(Self.device, pki: pki, gateway: gateway)
        // The in-process device sees the same refusal (after its own TLS 1.3 handshake completed).
        let swarm = try await TLSDeviceSwarm.connect(port: gateway.port, devices: [(pki.certificate(Self.device), pki.key(Self.device))],
                                                     trustBundle: pki.caChain, timeout: .seconds(15))
        XCTAssertEqual(swarm.count, 1)
        XCTAssertTrue(swarm.first?.failureReason?.contains("alert certificate revoked") == true, "\(swarm)")
    }

    func testRecheckByDeviceIdentityKeepsAGoodDeviceAndNamesAnAbsentOne() async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI()
        let subscriber = try await subscribe(as: "device-1", pki: pki, gateway: gateway)
        let serial = try serial(of: "device-1", in: pki)

        let kept = try await gateway.command(["ocsp", "recheck", "--device", "device-1"])
        XCTAssertEqual(kept.status, .exited(0), "\(kept)")
        XCTAssertTrue(kept.stdout.contains("\(serial)  device-1  accepted  (OCSP good (from "), "\(kept)")
        XCTAssertTrue(subscriber.process.isRunning, "a good device's session is left alone\n\(subscriber.process.output)")

        let absent = try await gateway.command(["ocsp", "recheck", "--device", "device-9"])
        XCTAssertEqual(absent.status, .exited(0), "\(absent)")
        XCTAssertTrue(absent.stdout.contains("no connected device with identity device-9"), "\(absent)")
        let invalid = try await gateway.command(["ocsp", "recheck", "--serial", "not-hex"])
        XCTAssertNotEqual(invalid.status, .exited(0), "\(invalid)")
        XCTAssertTrue(invalid.stderr.contains("--serial must be hexadecimal"), "\(invalid)")
    }

    func testTheBackgroundRecheckClosesTheSessionOnceTheCachedStatusExpires() async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI(deviceOCSP: ["cache_lifetime: 2s"])
        let subscriber = try await subscribe(as: Self.device, pki: pki, gateway: gateway)

        try await revokeAtTheResponder(Self.device, in: pki)

        // At most 2 s (lifetime) + 1 s (recheck interval) + a request: well inside the deadline.
        try await assertSessionClosed(subscriber)
        let closing = try XCTUnwrap(gateway.process.stderr.lines.first {
            $0.contains("closing the session of a device whose certificate is no longer accepted")
        }, gateway.output)
        XCTAssertTrue(closing.contains("device=\(Self.device)"), closing)
        XCTAssertTrue(closing.contains("why=cached status expired"), closing)
        XCTAssertTrue(closing.contains("device certificate revoked at"), closing)
        XCTAssertTrue(closing.contains("reason keyCompromise"), closing)
        try await assertRefusedAsRevoked(Self.device, pki: pki, gateway: gateway)
    }

    func testASessionTicketOfADeviceRevokedSinceIsNotResumed() async throws {
        // Long enough for the negative control to resume in time, short enough to wait out.
        let (pki, gateway) = try await startGatewayWithOwnPKI(deviceOCSP: ["cache_lifetime: 4s"])
        let serial = try serial(of: Self.device, in: pki)
        let session = try makeTemporaryDirectory().file("session.pem")

        // A full handshake while good; s_client saves the ticket the gateway sends after it (it
        // reports the ticket only when it exits: its stdout is buffered).
        let first = try OpenSSLClient(port: gateway.port, pki: pki, device: Self.device, extraArgs: ["-sess_out", session])
        try await waitUntil(timeout: .seconds(10), "s_client to save the session ticket", details: { first.output }) {
            ((try? String(contentsOfFile: session, encoding: .utf8)) ?? "").contains("-----END SSL SESSION PARAMETERS-----")
        }
        let full = try await first.finish()
        XCTAssertTrue(full.stdout.contains("New, TLSv1.3"), "\(full)")
        XCTAssertTrue(full.stdout.contains("Post-Handshake New Session Ticket arrived"), "\(full)")

        // Negative control: while its cached status is good, the ticket does resume.
        let resumed = try OpenSSLClient(port: gateway.port, pki: pki, device: Self.device, extraArgs: ["-sess_in", session])
        try await resumed.waitForOutput("Cipher is")
        let control = try await resumed.finish()
        XCTAssertTrue(control.stdout.contains("Reused, TLSv1.3"), "\(control)")

        try await revokeAtTheResponder(Self.device, in: pki)
        // Wait out the cached "good" (nothing refreshes it: no session is open).
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(250), "the cached status of \(serial) to expire") {
            let listing = try await gateway.command(["ocsp", "cache", "--json"])
            let entries = try JSONDecoder.iso8601.decode([CacheEntry].self, from: Data(listing.stdout.utf8))
            guard let entry = entries.first(where: { $0.serial.uppercased() == serial.uppercased() }) else { return true }
            // The listing gives whole seconds, truncated: the entry may live up to 1 s longer.
            return entry.expiresAt.addingTimeInterval(1) <= Date()
        }

        let refused = try OpenSSLClient(port: gateway.port, pki: pki, device: Self.device, extraArgs: ["-sess_in", session])
        let result = try await refused.waitUntilRefused(timeout: .seconds(15))
        XCTAssertFalse(result.stdout.contains("Reused,"), "the revoked device's session was resumed:\n\(result)")
        XCTAssertTrue(result.stdout.contains("New, TLSv1.3"), "\(result)")
        XCTAssertTrue(result.output.contains("alert certificate revoked"), "\(result)")
        try await gateway.waitForOutput("TLS handshake failed: SSL routines: certificate verify failed; device certificate: certificate revoked")
    }

    private struct CacheEntry: Decodable {
        let serial: String
        let status: String
        let expiresAt: Date
    }
}

private extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
