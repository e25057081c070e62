import Foundation
import TestSupport
import XCTest

/// The devices' OCSP responder misbehaving, judged by what devices then see: a responder that
/// answers one byte a second, one that sends a mebibyte, one that is killed and restarted while
/// devices connect, and one whose host name does not resolve. Each time a new device gets the
/// `device_ocsp` policy's verdict (refused by default, admitted under `unreachable: allow`)
/// within the check's timeout, with the reason in the gateway's log, and devices whose answer is
/// cached go on being served meanwhile. `DeviceOCSPPolicyTests` covers the tamer cases (a
/// responder down, a silent one, a body just over the cap).
extension FaultInjectionTests {
    func testAResponderTricklingOneBytePerSecondIsGivenUpAtTheTimeoutWhileACachedDeviceIsServedAtOnce() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let timeout = 5
        let hard = try await startStapleGate(sections: ["device_ocsp: { timeout: \(timeout)s }"], deviceChecks: true)
        let soft = try await startStapleGate(sections: ["device_ocsp: { timeout: \(timeout)s, unreachable: allow }"],
                                             deviceChecks: true)
        // device-1 checked while the responder is well: both gateways cache its "good".
        for gateway in [hard, soft] {
            try await assertAdmitted("device-1", through: gateway, notes: ["OCSP good (from \(pki.ocspURL))"])
        }

        // The responder's port now answers one byte a second.
        await responder.stop()
        let trickle = try await MisbehavingResponder.start(.trickle, port: pki.ocspPort)
        addTeardownBlock { await trickle.stop() }

        // Hard-fail: device-2's check hangs on the trickle…
        let clientID = uniqueClientID("trickled")
        let started = ContinuousClock.now
        let pending = try startMosquittoPub(.gateway(port: hard.port, pki: pki, device: "device-2"), topic: uniqueTopic("fault/trickle"),
                                            payload: .message("should not arrive"), clientID: clientID, extraArgs: ["-d"])
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(20), "device-2's check to reach the trickling responder",
                            details: { trickle.log }) { trickle.requests >= 1 }
        // …while device-1, whose answer is cached, is served at once.
        let cached = try await attempt("device-1", through: hard)
        XCTAssertTrue(cached.admitted, "the cached device was not served meanwhile: \(cached.result)")
        XCTAssertTrue(trickle.endings.isEmpty && pending.isRunning,
                      "device-2 was decided before the cached device was served (\(cached.took) for it)")
        XCTAssertLessThan(cached.took, .seconds(timeout), "the cached device waited for the trickle")

        // device-2 refused at the timeout, which ended the gateway's exchange with the responder.
        let status = try await pending.waitForExit(timeout: .seconds(30))
        let refusedAfter = ContinuousClock.now - started
        XCTAssertNotEqual(status, .exited(0), "device-2 admitted without an answer:\n\(pending.output)")
        XCTAssertTrue(pending.output.contains("certificate unknown"), pending.output)
        try await DeviceOCSPLog.waitForLine(of: hard, with: [
            "TLS handshake failed", "device=device-2", "responder timed out after \(timeout) s",
        ])
        XCTAssertFalse(broker.log.contains(clientID), "the broker saw a refused device")
        let hardEnding = try await waitForEnding(1, of: trickle)
        assertGivenUpAtTheTimeout(hardEnding, timeout: timeout)
        // The device's side: process start, handshake and the gateway's wait; never the answer's 80 s.
        XCTAssertLessThan(refusedAfter, .seconds(timeout + 10), "device-2 waited \(refusedAfter)")

        // Soft-fail: the same wait, then admitted.
        let admitted = try await assertAdmitted("device-2", through: soft, notes: [
            "no OCSP answer (responder timed out after \(timeout) s), allowed by policy (soft-fail)",
        ])
        let softEnding = try await waitForEnding(2, of: trickle)
        assertGivenUpAtTheTimeout(softEnding, timeout: timeout)
        print("FaultInjectionTests trickling responder: cached device served in \(cached.took) meanwhile; "
              + "device-2 refused after \(refusedAfter) (responder's side: \(hardEnding)); soft-fail admitted after "
              + "\(admitted.took) (responder's side: \(softEnding))")
    }

    func testAResponderSendingAMebibyteIsCutOffAtTheSizeCapWithoutBeingReadToTheEnd() async throws {
        let mebibyte = 1 << 20
        // Without a Content-Length the cap is met while reading; with one, at the head.
        let streaming = try await MisbehavingResponder.start(.large(bytes: mebibyte, announced: false))
        let announcing = try await MisbehavingResponder.start(.large(bytes: mebibyte, announced: true))
        addTeardownBlock {
            await streaming.stop()
            await announcing.stop()
        }
        let hard = try await startStapleGate(sections: ["device_ocsp: { responder: \"\(streaming.url)\" }"], deviceChecks: true)
        let soft = try await startStapleGate(sections: ["device_ocsp: { responder: \"\(announcing.url)\", unreachable: allow }"],
                                             deviceChecks: true)

        let refused = try await assertRefused("device-1", through: hard, reasons: ["response larger than 4096 bytes"])
        let cutOff = try await waitForEnding(1, of: streaming)
        XCTAssertTrue(cutOff.closedByClient, "the gateway read the whole mebibyte: \(cutOff)")
        XCTAssertLessThan(cutOff.bytesSent, mebibyte, "all of it sent: \(cutOff)")

        let admitted = try await assertAdmitted("device-1", through: soft, notes: [
            "no OCSP answer (response larger than 4096 bytes), allowed by policy (soft-fail)",
        ])
        let refusedAtHead = try await waitForEnding(1, of: announcing)
        XCTAssertTrue(refusedAtHead.closedByClient, "the gateway read the whole mebibyte: \(refusedAtHead)")
        XCTAssertLessThan(refusedAtHead.bytesSent, mebibyte, "all of it sent: \(refusedAtHead)")
        // Neither verdict waited for the mebibyte to arrive.
        XCTAssertLessThan(refused.took, .seconds(10))
        XCTAssertLessThan(admitted.took, .seconds(10))
        print("FaultInjectionTests mebibyte responder: refused in \(refused.took) (responder's side: \(cutOff)); "
              + "announced, soft-failed in \(admitted.took) (responder's side: \(refusedAtHead))")
    }

    func testAFlappingResponderGivesNewDevicesThePolicysVerdictPromptlyAndCachedDevicesAreServedThroughout() async throws {
        // Fresh devices, each checked once: a new one for each phase.
        let devices = (1...7).map { "flap-\($0)" }
        for device in devices { try pki.issueDevice(device, commonName: device) }
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let hard = try await startStapleGate(deviceChecks: true)
        let soft = try await startStapleGate(sections: ["device_ocsp: { unreachable: allow }"], deviceChecks: true)
        let good = "OCSP good (from \(pki.ocspURL))"
        for gateway in [hard, soft] { try await assertAdmitted("flap-1", through: gateway, notes: [good]) }

        var slowest = Duration.zero
        for round in 1...3 {
            // Down (every worker killed, the port closed): new devices get the policy's verdict at once.
            await responder.stop()
            let whileDown = devices[2 * round - 1]
            let refused = try await assertRefused(whileDown, through: hard, reasons: ["cannot connect to the responder", "connection refused"])
            let allowed = try await assertAdmitted(whileDown, through: soft, notes: ["no OCSP answer (cannot connect to the responder",
                                                                                     "allowed by policy (soft-fail)"])
            // The cached device is served by both.
            for gateway in [hard, soft] {
                let cached = try await attempt("flap-1", through: gateway)
                XCTAssertTrue(cached.admitted, "round \(round): the cached device refused while the responder is down\n\(cached.result)")
                slowest = max(slowest, cached.took)
            }

            // Back: the next new device is asked about and admitted by both.
            try await responder.start()
            let whileUp = devices[2 * round]
            let checked = try await assertAdmitted(whileUp, through: hard, notes: [good])
            let checkedSoft = try await assertAdmitted(whileUp, through: soft, notes: [good])
            slowest = max(slowest, refused.took, allowed.took, checked.took, checkedSoft.took)
        }
        // Generous for a busy machine: in practice each takes a fraction of a second.
        XCTAssertLessThan(slowest, .seconds(10), "a device waited \(slowest)")
        XCTAssertTrue(hard.process.isRunning && soft.process.isRunning)
        print("FaultInjectionTests flapping responder: 3 rounds down and up, 7 new devices and the cached one through "
              + "both policies, the slowest verdict in \(slowest)")
    }

    func testAResponderNameThatDoesNotResolveIsNamedInTheVerdictAndFollowsThePolicy() async throws {
        let host = "no-such-responder.invalid"
        try pki.issueDevice("device-nxdomain", commonName: "device-nxdomain", ocspURL: "http://\(host):8080/ocsp")
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let hard = try await startStapleGate(deviceChecks: true)
        let soft = try await startStapleGate(sections: ["device_ocsp: { unreachable: allow }"], deviceChecks: true)

        let refused = try await assertRefused("device-nxdomain", through: hard,
                                              reasons: ["cannot connect to the responder: cannot resolve \(host)"])
        let admitted = try await assertAdmitted("device-nxdomain", through: soft, notes: [
            "no OCSP answer (cannot connect to the responder: cannot resolve \(host)), allowed by policy (soft-fail)",
        ])
        XCTAssertLessThan(refused.took, .seconds(10))
        XCTAssertLessThan(admitted.took, .seconds(10))
        // Devices whose responder does resolve are checked as ever, by the same gateway.
        try await assertAdmitted("device-1", through: hard, notes: ["OCSP good (from \(pki.ocspURL))"])
        print("FaultInjectionTests unresolvable responder: refused in \(refused.took), soft-failed in \(admitted.took); "
              + DeviceOCSPLog.lines(of: hard, containing: "cannot resolve").joined(separator: "\n"))
    }

    // MARK: Helpers

    /// What one device saw: whether it published (QoS 1, acknowledged), and how long it took
    /// from its start to its end, handshake and verdict included.
    struct DeviceAttempt {
        let admitted: Bool
        let took: Duration
        let result: CommandResult
    }

    /// One mosquitto_pub as `device` through `gateway` (`-d`, so it prints the TLS alert it got).
    func attempt(_ device: String, through gateway: StapleGateProcess, clientID: String? = nil) async throws -> DeviceAttempt {
        let started = ContinuousClock.now
        // Bounded: a stuck handshake fails the test here.
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: uniqueTopic("fault/responder"),
                                            message: "from \(device)", clientID: clientID, extraArgs: ["-d"], timeout: .seconds(30))
        return DeviceAttempt(admitted: result.status == .exited(0), took: ContinuousClock.now - started, result: result)
    }

    /// `device` refused with certificate_unknown, never reaching the broker, and the gateway's
    /// "TLS handshake failed" line for it holds each of `reasons`.
    @discardableResult
    func assertRefused(_ device: String, through gateway: StapleGateProcess, reasons: [String],
                       file: StaticString = #filePath, line: UInt = #line) async throws -> DeviceAttempt {
        let clientID = uniqueClientID("refused")
        let result = try await attempt(device, through: gateway, clientID: clientID)
        XCTAssertFalse(result.admitted, "\(device) admitted:\n\(result.result)", file: file, line: line)
        XCTAssertTrue(result.result.output.contains("certificate unknown"), "no certificate_unknown alert:\n\(result.result)",
                      file: file, line: line)
        try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake failed", "device=\(device)"] + reasons)
        XCTAssertFalse(broker.log.contains(clientID), "the broker saw a refused device", file: file, line: line)
        return result
    }

    /// `device` admitted (its message acknowledged), and the gateway's "TLS handshake completed"
    /// line for it notes each of `notes` in its device.check.
    @discardableResult
    func assertAdmitted(_ device: String, through gateway: StapleGateProcess, notes: [String],
                        file: StaticString = #filePath, line: UInt = #line) async throws -> DeviceAttempt {
        let result = try await attempt(device, through: gateway)
        XCTAssertTrue(result.admitted, "\(device) refused:\n\(result.result)", file: file, line: line)
        try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake completed", "device=\(device)", "device.check="] + notes)
        return result
    }

    /// The `count`th connection's end at `responder`, once it has ended.
    func waitForEnding(_ count: Int, of responder: MisbehavingResponder) async throws -> MisbehavingResponder.Ending {
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(20), "connection \(count) at the responder to end",
                            details: { responder.log }) { responder.endings.count >= count }
        return responder.endings[count - 1]
    }

    /// Hung up by the gateway at its timeout: not before (it was waiting for the answer), and
    /// not long after (give or take a busy machine's scheduling).
    func assertGivenUpAtTheTimeout(_ ending: MisbehavingResponder.Ending, timeout: Int,
                                   file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(ending.closedByClient, "the responder's connection: \(ending)", file: file, line: line)
        XCTAssertGreaterThan(ending.seconds, Double(timeout) - 0.5, "given up before the timeout: \(ending)", file: file, line: line)
        XCTAssertLessThan(ending.seconds, Double(timeout) + 3, "held past the timeout: \(ending)", file: file, line: line)
    }
}
