import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// Revocations reach devices that are already in: an operator's `staplegate ocsp recheck`, the
/// background recheck when a cached status expires, and a session ticket presented after the
/// revocation. Each test revokes device-to-revoke, so each has a PKI (and responder) of its own;
/// the class's broker is shared. The real `staplegate` binary, a real `openssl ocsp` responder,
/// real mosquitto_sub and `openssl s_client` devices. (`OperatorRecheckTests` covers the
/// operator's recheck of devices that are not connected.)
final class LiveRevocationTests: RevocationTestCase {
    private static let device = "device-to-revoke"

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
        XCTAssertTrue(recheck.stdout.contains("\(serial)  \(Self.device)  revoked at "), "\(recheck)")
        XCTAssertTrue(recheck.stdout.contains(", keyCompromise: cached until "), "\(recheck)")
        XCTAssertTrue(recheck.stdout.contains("; 1 session closed"), "\(recheck)")
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
        XCTAssertTrue(kept.stdout.contains("\(serial)  device-1  good: cached until "), "\(kept)")
        XCTAssertTrue(kept.stdout.contains("; 1 session kept"), "\(kept)")
        XCTAssertTrue(subscriber.process.isRunning, "a good device's session is left alone\n\(subscriber.process.output)")

        let absent = try await gateway.command(["ocsp", "recheck", "--device", "device-9"])
        XCTAssertEqual(absent.status, .exited(4), "\(absent)")
        XCTAssertTrue(absent.stdout.contains("the gateway knows nothing about device device-9"), "\(absent)")
        let invalid = try await gateway.command(["ocsp", "recheck", "--serial", "not-hex"])
        XCTAssertNotEqual(invalid.status, .exited(0), "\(invalid)")
        XCTAssertTrue(invalid.stderr.contains("--serial: a serial number must be hexadecimal"), "\(invalid)")
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
        // The device's trace says the background recheck did it.
        try await waitUntil(timeout: .seconds(10), "the recheck in the device's trace") {
            let trace = try await gateway.command(["trace", Self.device])
            return trace.stdout.contains("recheck (cached status expired): revoked at ") && trace.stdout.contains("1 session closed")
        }
    }

    /// More connected devices than `cache_size`: an entry evicted from memory has not expired,
    /// so the background pass takes its answer from the state directory's store instead of
    /// asking the responder about it (before, it asked about each evicted device every second).
    func testADeviceEvictedFromAFullCacheIsNotAskedAboutAgainByTheBackgroundPass() async throws {
        let (pki, gateway) = try await startGatewayWithOwnPKI(deviceOCSP: ["cache_size: 1"], countingRequests: true)
        let first = try await subscribe(as: "device-1", pki: pki, gateway: gateway)
        let second = try await subscribe(as: "device-2", pki: pki, gateway: gateway)
        XCTAssertEqual(try XCTUnwrap(responderProxy).connectionsAccepted, 2)
        // device-2's answer pushed device-1's out of memory: the pass looks at device-1 again.
        try await waitUntil(timeout: .seconds(15), "the background pass to look at device-1 again") {
            let trace = try await gateway.command(["trace", "device-1"])
            return trace.stdout.contains("recheck (cached status expired): good")
        }
        XCTAssertEqual(try XCTUnwrap(responderProxy).connectionsAccepted, 2, "answered from the store, not by the responder")
        XCTAssertTrue(first.process.isRunning && second.process.isRunning)
    }

    func testASessionTicketOfADeviceRevokedSinceIsNotResumed() async throws {
        // Long enough for the negative control to resume in time, short enough to wait out.
        let (pki, gateway) = try await startGatewayWithOwnPKI(deviceOCSP: ["cache_lifetime: 4s"])
        let serial = try serial(of: Self.device, in: pki)
        let session = try makeTemporaryDirectory().file("session.pem")

        try await saveSessionTicket(as: Self.device, to: session, pki: pki, gateway: gateway)

        // Negative control: while its cached status is good, the ticket does resume.
        let resumed = try OpenSSLClient(port: gateway.port, pki: pki, device: Self.device, extraArgs: ["-sess_in", session])
        try await resumed.waitForOutput("Cipher is")
        let control = try await resumed.finish()
        XCTAssertTrue(control.stdout.contains("Reused, TLSv1.3"), "\(control)")

        try await revokeAtTheResponder(Self.device, in: pki)
        // Wait out the cached "good" (nothing refreshes it: no session is open).
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(250), "the cached status of \(serial) to expire") {
            let entries = try await OCSPCacheListing.read(from: gateway)
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
}
