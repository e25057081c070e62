import Foundation
import TestSupport
import XCTest

/// Session tickets that outlive one gateway process (issue 13, "Behind a load balancer"): the
/// real `staplegate` binary, `openssl s_client -sess_out` / `-sess_in` as the device (TLS 1.3),
/// the class's Mosquitto. With one `tls.session_ticket_keys` file, a ticket from one gateway
/// resumes on another, after a reload and after a restart; without it, across reloads only.
/// Device OCSP is off where it is not the point (it has its own test, where a revoked device's
/// ticket is refused by a gateway that shares the keys).
final class SessionTicketKeyTests: RevocationTestCase {
    private static let device = "device-1"
    private static let withoutDeviceOCSP = ["device_ocsp: { enabled: false }"]

    // MARK: Across gateways

    func testATicketFromOneGatewayResumesOnAnotherGivenTheSameKeyFile() async throws {
        let keys = try writeKeyFile([randomKey()])
        let first = try await startGateway(keyFile: keys)
        let second = try await startGateway(keyFile: keys)
        let session = try await ticket(from: first)

        let resumed = try await present(session, to: second)
        XCTAssertTrue(resumed.stdout.contains("Reused, TLSv1.3"), "\(resumed)")
        try await second.waitForOutput("tls.resumed=true")
    }

    /// The negative control of the test above: each gateway with its own random keys.
    func testWithoutASharedKeyFileATicketFromOneGatewayIsAFullHandshakeOnAnother() async throws {
        let first = try await startGateway(keyFile: nil)
        let second = try await startGateway(keyFile: nil)
        let session = try await ticket(from: first)
        let own = try await present(session, to: first)
        XCTAssertTrue(own.stdout.contains("Reused, TLSv1.3"), "negative control: the ticket itself is good\n\(own)")

        let other = try await present(session, to: second)
        XCTAssertTrue(other.stdout.contains("New, TLSv1.3"), "\(other)")
        XCTAssertFalse(other.stdout.contains("Reused"), "\(other)")
    }

    // MARK: Across reloads and restarts

    func testATicketResumesAfterAReloadAndAfterARestartWithTheKeyFile() async throws {
        let directory = try makeTemporaryDirectory()
        let keys = try writeKeyFile([randomKey()])
        let gateway = try await startGateway(keyFile: keys, directory: directory)
        let session = try await ticket(from: gateway)

        let reload = try await gateway.command(["reload"])
        XCTAssertTrue(reload.succeeded, "\(reload)")
        XCTAssertTrue(reload.stdout.contains("session tickets: 1 key(s) from \(keys)"), "\(reload)")
        let afterReload = try await present(session, to: gateway)
        XCTAssertTrue(afterReload.stdout.contains("Reused, TLSv1.3"), "after the reload\n\(afterReload)")

        await gateway.stop()
        let restarted = try await startGateway(keyFile: keys, directory: directory)
        let afterRestart = try await present(session, to: restarted)
        XCTAssertTrue(afterRestart.stdout.contains("Reused, TLSv1.3"), "after the restart\n\(afterRestart)")
    }

    func testWithoutTheSettingATicketResumesAfterAReloadButNotAfterARestart() async throws {
        let directory = try makeTemporaryDirectory()
        let gateway = try await startGateway(keyFile: nil, directory: directory)
        try await gateway.waitForOutput("session tickets: sessions kept in this process")
        let session = try await ticket(from: gateway)

        // SIGHUP, as systemctl reload sends it: a new TLS context, the process's keys kept.
        gateway.process.signal(SIGHUP)
        try await gateway.waitForOutput("configuration reloaded from")
        let afterReload = try await present(session, to: gateway)
        XCTAssertTrue(afterReload.stdout.contains("Reused, TLSv1.3"), "after the reload\n\(afterReload)")

        await gateway.stop()
        let restarted = try await startGateway(keyFile: nil, directory: directory)
        let afterRestart = try await present(session, to: restarted)
        XCTAssertTrue(afterRestart.stdout.contains("New, TLSv1.3"), "a new process, an empty session cache\n\(afterRestart)")
    }

    /// Without a key file the session stays in the gateway and the ticket only names it. A
    /// device whose connection died (killed: no close_notify from it, the case where a device
    /// reconnects) still resumes. The ticket means nothing elsewhere: the same bytes on another
    /// gateway get a full handshake.
    func testWithoutTheSettingADeviceThatDroppedItsConnectionResumes() async throws {
        let gateway = try await startGateway(keyFile: nil)
        let file = try makeTemporaryDirectory().file("dropped.pem")
        let dropped = try OpenSSLClient(port: gateway.port, pki: pki, device: Self.device, extraArgs: ["-sess_out", file])
        try await waitUntil(timeout: .seconds(10), "s_client to save the session ticket", details: { dropped.output }) {
            ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").contains("-----END SSL SESSION PARAMETERS-----")
        }
        dropped.process.signal(SIGKILL)
        _ = try await dropped.process.waitForExit(timeout: .seconds(10))

        let again = try await present(file, to: gateway)
        XCTAssertTrue(again.stdout.contains("Reused, TLSv1.3"), "after the dropped connection\n\(again)")
        let other = try await startGateway(keyFile: nil)
        let elsewhere = try await present(file, to: other)
        XCTAssertTrue(elsewhere.stdout.contains("New, TLSv1.3"), "another gateway\n\(elsewhere)")
    }

    // MARK: Rotation

    /// `ticket-keys generate`, then `rotate` twice with a reload after each: a ticket under a
    /// key still in the file but no longer first resumes (and the device gets one under the
    /// first key); a ticket under a key rotated out gets a full handshake.
    func testRotationKeepsTicketsOfKeysStillInTheFileAndEndsThoseOfDroppedKeys() async throws {
        let keys = try makeTemporaryDirectory().file("fleet.keys")
        let generate = try await staplegate(["ticket-keys", "generate", keys])
        XCTAssertTrue(generate.succeeded, "\(generate)")
        let gateway = try await startGateway(keyFile: keys)
        let original = try keyNames(in: keys)
        let underOriginal = try await ticket(from: gateway, name: "original")
        let originalName = try await ticketKeyName(underOriginal)
        XCTAssertEqual(originalName, original.first, "the only key encrypts")

        let firstRotation = try await staplegate(["ticket-keys", "rotate", keys, "--keep", "2"])
        XCTAssertTrue(firstRotation.succeeded, "\(firstRotation)")
        let rotated = try keyNames(in: keys)
        XCTAssertEqual(rotated.count, 2)
        XCTAssertEqual(rotated.last, original.first)
        // Before the reload the gateway knows nothing of the new key.
        let beforeReload = try await ticketKeyName(try await ticket(from: gateway, name: "before-reload"))
        XCTAssertEqual(beforeReload, original.first)
        let firstReload = try await gateway.command(["reload"])
        XCTAssertTrue(firstReload.stdout.contains("session tickets: 2 key(s) from \(keys), new tickets under key \(rotated[0].prefix(16))"),
                      "\(firstReload)")

        let renewed = directory(of: keys) + "/renewed.pem"
        let resumed = try await present(underOriginal, to: gateway, saving: renewed)
        XCTAssertTrue(resumed.stdout.contains("Reused, TLSv1.3"), "the original key still decrypts\n\(resumed)")
        let renewedName = try await ticketKeyName(renewed)
        XCTAssertEqual(renewedName, rotated.first, "renewed under the new first key")
        let underNew = try await ticket(from: gateway, name: "new")
        let newName = try await ticketKeyName(underNew)
        XCTAssertEqual(newName, rotated.first, "new tickets use the first key")

        let secondRotation = try await staplegate(["ticket-keys", "rotate", keys, "--keep", "2"])
        XCTAssertTrue(secondRotation.stdout.contains("dropped \(original[0].prefix(16))"), "\(secondRotation)")
        XCTAssertEqual(try keyNames(in: keys).last, rotated.first, "the original key is dropped")
        let secondReload = try await gateway.command(["reload"])
        XCTAssertTrue(secondReload.succeeded, "\(secondReload)")

        let dropped = try await present(underOriginal, to: gateway)
        XCTAssertTrue(dropped.stdout.contains("New, TLSv1.3"), "its key is gone\n\(dropped)")
        let older = try await present(underNew, to: gateway)
        XCTAssertTrue(older.stdout.contains("Reused, TLSv1.3"), "its key is second now\n\(older)")
    }

    func testABrokenKeyFileOnReloadIsRefusedAndTheServingKeysStay() async throws {
        let keys = try writeKeyFile([randomKey()])
        let gateway = try await startGateway(keyFile: keys)
        let session = try await ticket(from: gateway)
        let good = try String(contentsOfFile: keys, encoding: .utf8)

        try (good + "this line is no key\n").write(toFile: keys, atomically: false, encoding: .utf8)
        let refused = try await gateway.command(["reload"])
        XCTAssertEqual(refused.status, .exited(78), "\(refused)")
        XCTAssertTrue(refused.stderr.contains("reload refused, nothing changed: \(gateway.configPath):"), "\(refused)")
        XCTAssertTrue(refused.stderr.contains("tls.session_ticket_keys: \(keys):3: not a base64 key"), "\(refused)")
        let afterRefusal = try await present(session, to: gateway)
        XCTAssertTrue(afterRefusal.stdout.contains("Reused, TLSv1.3"), "the keys serving stay\n\(afterRefusal)")

        try good.write(toFile: keys, atomically: false, encoding: .utf8)
        XCTAssertEqual(chmod(keys, 0o644), 0)
        let open = try await gateway.command(["reload"])
        XCTAssertEqual(open.status, .exited(78), "\(open)")
        XCTAssertTrue(open.stderr.contains("\(keys): mode 0644 is wider than 0640"), "\(open)")
        let afterSecondRefusal = try await present(session, to: gateway)
        XCTAssertTrue(afterSecondRefusal.stdout.contains("Reused, TLSv1.3"), "the keys serving stay\n\(afterSecondRefusal)")
        XCTAssertFalse(gateway.output.contains(String(good.split(separator: "\n").last!)), "a key appeared in the log")
    }

    // MARK: Revocation

    /// Shared keys open the ticket anywhere, but whether it may be resumed is still each
    /// gateway's device check: revoked (here found by `ocsp recheck`) means a full handshake,
    /// refused with certificate_revoked.
    func testARevokedDevicesTicketIsRefusedByAnotherGatewaySharingTheKeys() async throws {
        let device = "device-to-revoke"
        let pki = try TestPKI.make()
        ownPKI = pki
        responder = try await OCSPResponder.start(pki: pki)
        let keys = try writeKeyFile([randomKey()])
        let issuing = try await startGateway(keyFile: keys, pki: pki, deviceOCSP: true)
        let other = try await startGateway(keyFile: keys, pki: pki, deviceOCSP: true)
        // The other gateway has seen the device (a fresh "good"), the first one issues the ticket.
        _ = try await ticket(from: other, as: device, pki: pki, name: "other")
        let session = try await ticket(from: issuing, as: device, pki: pki)

        let control = try await present(session, to: other, as: device, pki: pki)
        XCTAssertTrue(control.stdout.contains("Reused, TLSv1.3"), "negative control: while good, it resumes\n\(control)")

        try await revokeAtTheResponder(device, in: pki)
        let recheck = try await other.command(["ocsp", "recheck", "--device", device])
        XCTAssertEqual(recheck.status, .exited(3), "\(recheck)")

        let client = try OpenSSLClient(port: other.port, pki: pki, device: device, extraArgs: ["-sess_in", session])
        let refused = try await client.waitUntilRefused(timeout: .seconds(15))
        XCTAssertFalse(refused.stdout.contains("Reused,"), "the revoked device's session was resumed:\n\(refused)")
        XCTAssertTrue(refused.stdout.contains("New, TLSv1.3"), "\(refused)")
        XCTAssertTrue(refused.output.contains("alert certificate revoked"), "\(refused)")
    }

    // MARK: Helpers

    /// A gateway with `keyFile` as `tls.session_ticket_keys` (none when nil), device OCSP off
    /// unless asked for, stopped after the test.
    private func startGateway(keyFile: String?, directory: TemporaryDirectory? = nil, pki: TestPKI? = nil,
                              deviceOCSP: Bool = false) async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(
            pki: pki ?? self.pki, broker: broker, directory: try directory ?? makeTemporaryDirectory(),
            sections: deviceOCSP ? [] : Self.withoutDeviceOCSP, tls: keyFile.map { ["session_ticket_keys: \"\($0)\""] } ?? [])
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.output.suffix(30_000))")
            }
            await gateway.stop()
        }
        return gateway
    }

    /// 80 random bytes, base64: one line of a key file.
    private func randomKey() -> String {
        Data((0..<80).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    /// A key file of `keys`, mode 0600.
    private func writeKeyFile(_ keys: [String]) throws -> String {
        let path = try makeTemporaryDirectory().write("fleet.keys", "# test keys\n" + keys.map { $0 + "\n" }.joined())
        XCTAssertEqual(chmod(path, 0o600), 0)
        return path
    }

    /// A full handshake that saves the ticket the gateway gives; the session file's path.
    private func ticket(from gateway: StapleGateProcess, as device: String = device, pki: TestPKI? = nil,
                        name: String = "session") async throws -> String {
        let file = try makeTemporaryDirectory().file("\(name).pem")
        try await saveSessionTicket(as: device, to: file, pki: pki ?? self.pki, gateway: gateway)
        return file
    }

    /// A handshake offering the saved session; what s_client printed ("Reused, TLSv1.3" when
    /// resumed, "New, TLSv1.3" for a full handshake). `saving`: where the session (with the
    /// ticket received) goes afterwards.
    private func present(_ session: String, to gateway: StapleGateProcess, as device: String = device,
                         pki: TestPKI? = nil, saving: String? = nil) async throws -> CommandResult {
        let client = try OpenSSLClient(port: gateway.port, pki: pki ?? self.pki, device: device,
                                       extraArgs: ["-sess_in", session] + (saving.map { ["-sess_out", $0] } ?? []))
        try await client.waitForOutput("Cipher is")
        if let saving {
            try await waitUntil(timeout: .seconds(10), "s_client to save the session", details: { client.output }) {
                ((try? String(contentsOfFile: saving, encoding: .utf8)) ?? "").contains("-----END SSL SESSION PARAMETERS-----")
            }
        }
        return try await client.finish()
    }

    /// The name (first 16 bytes, hex) of every key in a key file, in order.
    private func keyNames(in file: String) throws -> [String] {
        try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
            .filter { !$0.hasPrefix("#") && !$0.isEmpty }
            .map { try XCTUnwrap(Data(base64Encoded: String($0))).prefix(16).map { String(format: "%02x", $0) }.joined() }
    }

    /// The name of the key that encrypted the ticket in a saved session (RFC 5077: the ticket's
    /// first 16 bytes), as `openssl sess_id` dumps it: "    0000 - 2c 51 c4 0a … 56   ,Q..".
    private func ticketKeyName(_ session: String) async throws -> String {
        let dump = try await ManagedProcess("openssl", ["sess_id", "-in", session, "-noout", "-text"])
            .commandResult(timeout: .seconds(10)).stdout
        let lines = dump.split(separator: "\n")
        let start = try XCTUnwrap(lines.firstIndex { $0.contains("TLS session ticket:") }, dump)
        let first = try XCTUnwrap(lines[(start + 1)...].first { $0.contains("0000 - ") }, dump)
        let hex = first.components(separatedBy: "0000 - ")[1].prefix(47).replacingOccurrences(of: "-", with: " ")
        return hex.split(separator: " ").joined()
    }

    private func directory(of file: String) -> String { (file as NSString).deletingLastPathComponent }

    private func staplegate(_ arguments: [String]) async throws -> CommandResult {
        try await ManagedProcess(try CommandLineTests.findExecutable(), arguments).commandResult(timeout: .seconds(20))
    }
}

private extension CommandResult {
    var succeeded: Bool { status.succeeded }
}
