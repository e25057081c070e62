import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// What the gateway does with a device when the OCSP check cannot say "good": each failure
/// under `reject` (the device gets certificate_unknown and never reaches the broker) and under
/// `allow`, with the reason in the gateway's log. Real binary, real devices (`mosquitto_pub`),
/// real responders (`openssl ocsp`, also under faketime or with -badsig) or socat serving
/// fixed bytes. Each gateway sees one connect, so no failure cache gets in the way.
final class DeviceOCSPPolicyTests: GatewayTestCase {
    private var responder: OCSPResponder?
    private var proxy: CountingTCPProxy?
    private var servers: [SocatListener] = []
    private var processes: [ManagedProcess] = []

    override func tearDown() async throws {
        // Concurrently: an `openssl ocsp -multi` takes seconds to go.
        await withTaskGroup(of: Void.self) { group in
            for server in servers { group.addTask { await server.stop() } }
            for process in processes { group.addTask { await process.terminateProcessGroup() } }
            if let proxy { group.addTask { await proxy.stop() } }
            if let responder { group.addTask { await responder.stop() } }
        }
        try await super.tearDown()
    }

    // MARK: unknown

    func testAnUnknownStatusIsRefusedByDefaultAndAdmittedWithUnknownAllow() async throws {
        // The gateway trusts the Rogue CA too; that CA's own responder (signing with the CA key)
        // has no record of device-rogue, so its verified answer is "unknown".
        let folder = try makeTemporaryDirectory()
        let chain = try String(contentsOfFile: pki.caChain, encoding: .utf8)
        let rogueCA = try String(contentsOfFile: pki.path("rogue-ca.pem"), encoding: .utf8)
        let bundle = try folder.write("device-cas.pem", chain + rogueCA)
        let rogueResponder = try await startRogueCAResponder(in: folder)

        try await assertRefused(["responder: \(rogueResponder)"], device: "device-rogue", deviceCA: bundle, reasons: [
            "the OCSP responder does not know the device certificate (status unknown, from \(rogueResponder))",
        ])
        try await assertAdmitted(["responder: \(rogueResponder)", "unknown: allow"], device: "device-rogue", deviceCA: bundle,
                                 notes: ["OCSP status unknown, allowed by policy"])

        // Negative control: `unknown: allow` is about a *verified* unknown. The issuing CA's
        // responder also says "unknown" about device-rogue, but may not speak for the Rogue CA, so
        // its answer does not verify and counts as no answer (unreachable: reject).
        responder = try await OCSPResponder.start(pki: pki)
        try await assertRefused(["responder: \(pki.ocspURL)", "unknown: allow"], device: "device-rogue", deviceCA: bundle,
                                reasons: ["OCSP check of the device certificate failed: signer is not authorized"])
    }

    // MARK: unreachable

    func testAResponderThatIsDownIsHardFailByDefaultAndSoftFailWithUnreachableAllow() async throws {
        let port = try FreePort.next()
        XCTAssertFalse(MosquittoBroker.acceptsTCP(port: port), "something listens on \(port)")
        let nobody = "http://127.0.0.1:\(port)"

        try await assertRefused(["responder: \(nobody)"], reasons: [
            "OCSP check of the device certificate failed: cannot connect to the responder", "connection refused",
        ])
        try await assertAdmitted(["responder: \(nobody)", "unreachable: allow"], notes: [
            "no OCSP answer (cannot connect to the responder", "connection refused", "allowed by policy (soft-fail)",
        ])
    }

    func testAResponderSlowerThanTheTimeoutIsRefusedOrSoftFailed() async throws {
        responder = try await OCSPResponder.start(pki: pki)
        let slow = try await CountingTCPProxy.start(forwardingTo: pki.ocspPort)
        proxy = slow
        slow.responseDelay = .seconds(3)

        let started = ContinuousClock.now
        try await assertRefused(["responder: \(slow.url)", "timeout: 1s"],
                                reasons: ["OCSP check of the device certificate failed: responder timed out after 1 s"])
        // Gateway start and refusal included: still before the (3 s late) answer would have come.
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3), "gave up at the timeout, not after the answer")
        try await assertAdmitted(["responder: \(slow.url)", "timeout: 1s", "unreachable: allow"],
                                 notes: ["no OCSP answer (responder timed out after 1 s), allowed by policy (soft-fail)"])
        XCTAssertEqual(slow.connectionsAccepted, 2, "each gateway asked once")

        // Negative control: the same path without the delay answers in time.
        slow.responseDelay = .zero
        try await assertAdmitted(["responder: \(slow.url)", "timeout: 1s"], notes: ["OCSP good (from \(slow.url))"])
    }

    // MARK: Answers that do not verify

    func testAnAnswerThatIsNotDERIsRefusedWithItsReason() async throws {
        let garbage = try await serve(body: Data("this is not DER, just text".utf8))

        try await assertRefused(["responder: \(garbage)"],
                                reasons: ["OCSP check of the device certificate failed: not an OCSP response (DER parse failed)"])
    }

    func testAnAnswerOverTheSizeLimitIsRefusedWithItsReason() async throws {
        let huge = try await serve(body: Data(repeating: 0x30, count: 5000))

        try await assertRefused(["responder: \(huge)"],
                                reasons: ["OCSP check of the device certificate failed: response larger than 4096 bytes"])
    }

    func testABadlySignedAnswerIsRefusedAndSoftFailedWithUnreachableAllow() async throws {
        // The responder the certificates' AIA names, signing with a corrupted signature.
        responder = try await OCSPResponder.start(pki: pki, extraArguments: ["-badsig"])

        try await assertRefused([], reasons: ["OCSP check of the device certificate failed: response signature invalid"])
        // The invalid answer also shown under soft-fail: an answer that does not verify counts
        // as no answer, which `unreachable: allow` lets in (forged or not).
        try await assertAdmitted(["unreachable: allow"], notes: ["no OCSP answer (response signature invalid", "(soft-fail)"])
    }

    func testAnAnswerAboutAnotherCertificateIsRefusedWithItsReason() async throws {
        // A genuine, valid, signed answer, but about device-2, served whatever is asked.
        responder = try await OCSPResponder.start(pki: pki)
        let folder = try makeTemporaryDirectory()
        let der = folder.file("device-2.der")
        let fetched = try await ManagedProcess("openssl", [
            "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.certificate("device-2"), "-url", pki.ocspURL,
            "-CAfile", pki.caChain, "-respout", der,
        ]).commandResult(timeout: .seconds(15))
        XCTAssertTrue(fetched.stdout.contains("device-2.pem: good"), "\(fetched)")
        let aboutDevice2 = try await serve(body: try Data(contentsOf: URL(fileURLWithPath: der)))
        let device1Serial = try PEMFile.certificateChain(at: pki.certificate("device-1"))[0].serialHex

        try await assertRefused(["responder: \(aboutDevice2)"],
                                reasons: ["OCSP check of the device certificate failed: response is not for serial \(device1Serial)"])
        // Negative control: the same answer admits the device it is about.
        try await assertAdmitted(["responder: \(aboutDevice2)"], device: "device-2", notes: ["OCSP good (from \(aboutDevice2))"])
    }

    func testAnExpiredAnswerIsRefusedWithItsReason() async throws {
        // A real responder living an hour in the past: its answers' nextUpdate (+5 min) is 55 min ago.
        responder = try await OCSPResponder.start(pki: pki, clockOffset: "-1h")

        try await assertRefused([], reasons: ["OCSP check of the device certificate failed: response expired at"])
    }

    // MARK: no_responder

    func testACertificateWithoutAIAIsRefusedByDefaultAndAdmittedWithNoResponderAllow() async throws {
        try await assertRefused([], device: "device-noaia",
                                reasons: ["the device certificate names no OCSP responder (no AIA OCSP URL) and none is configured"])
        try await assertAdmitted(["no_responder: allow"], device: "device-noaia",
                                 notes: ["no OCSP responder for the device certificate: allowed by policy"])

        // With a configured responder the same certificate is checked like any other.
        responder = try await OCSPResponder.start(pki: pki)
        try await assertAdmitted(["responder: \(pki.ocspURL)"], device: "device-noaia", notes: ["OCSP good (from \(pki.ocspURL))"])
    }

    // MARK: Helpers

    /// Connects `device` once through a new gateway with the `device_ocsp` `lines`; checks it was
    /// refused with `alert`, that the broker never saw its CONNECT, and that the gateway's
    /// "TLS handshake failed" line holds every one of `reasons`. Returns that line.
    @discardableResult
    private func assertRefused(_ lines: [String], device: String = "device-1", deviceCA: String? = nil,
                               alert: String = "certificate unknown", reasons: [String],
                               file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let gateway = try await startDeviceOCSPGateway(lines, deviceCA: deviceCA)
        let clientID = uniqueClientID("refused")
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: uniqueTopic("ocsp/policy"),
                                            message: "should not arrive", clientID: clientID,
                                            extraArgs: ["-d"])  // -d: to print the TLS alert it got
        XCTAssertNotEqual(result.status, .exited(0), "\(device) admitted with \(lines):\n\(result)", file: file, line: line)
        XCTAssertTrue(result.output.contains(alert), "no '\(alert)' alert with \(lines):\n\(result)", file: file, line: line)
        let failure = try await DeviceOCSPLog.waitForLine(of: gateway, with: ["TLS handshake failed"] + reasons)
        XCTAssertFalse(broker.log.contains(clientID), "the broker saw a refused device", file: file, line: line)
        XCTAssertTrue(DeviceOCSPLog.lines(of: gateway, containing: "TLS handshake completed").isEmpty, gateway.output,
                      file: file, line: line)
        return failure
    }

    /// Connects `device` once through a new gateway with the `device_ocsp` `lines`; checks it
    /// published (QoS 1: the broker acknowledged it) and that the "TLS handshake completed" line's
    /// device.check holds every one of `notes`. Returns that line.
    @discardableResult
    private func assertAdmitted(_ lines: [String], device: String = "device-1", deviceCA: String? = nil, notes: [String],
                                file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let gateway = try await startDeviceOCSPGateway(lines, deviceCA: deviceCA)
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: uniqueTopic("ocsp/policy"),
                                            message: "admitted")
        XCTAssertEqual(result.status, .exited(0), "\(device) refused with \(lines):\n\(result)", file: file, line: line)
        let completed = try await DeviceOCSPLog.waitForLine(
            of: gateway, with: ["TLS handshake completed", "device=\(device)", "device.check="] + notes)
        XCTAssertTrue(DeviceOCSPLog.lines(of: gateway, containing: "TLS handshake failed").isEmpty, gateway.output,
                      file: file, line: line)
        return completed
    }

    /// A server answering every request with HTTP 200, application/ocsp-response and `body`; its URL.
    private func serve(body: Data) async throws -> String {
        let folder = try makeTemporaryDirectory()
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: \(body.count)\r\n"
            + "Connection: close\r\n\r\n"
        var response = Data(head.utf8)
        response.append(body)
        let server = try await SocatListener.answering(fileAt: try folder.write("response.bin", response))
        servers.append(server)
        return "http://127.0.0.1:\(server.port)"
    }

    /// `openssl ocsp` for the Rogue CA, signing as the CA itself, from an empty index; its URL.
    private func startRogueCAResponder(in folder: TemporaryDirectory) async throws -> String {
        let index = try folder.write("rogue-index.txt", "")
        let port = try FreePort.next()
        let process = try ManagedProcess("openssl", [
            "ocsp", "-index", index, "-CA", pki.path("rogue-ca.pem"), "-rsigner", pki.path("rogue-ca.pem"),
            "-rkey", pki.key("rogue-ca"), "-port", "\(port)", "-nmin", "5", "-multi", "1",
        ])
        process.killProcessGroupAtExit()
        processes.append(process)
        // Its "ACCEPT" line, not a probe connection: a connection that sends nothing wedges an
        // `openssl ocsp` worker until its timeout.
        try await process.waitForOutput("ACCEPT", timeout: .seconds(10))
        return "http://127.0.0.1:\(port)"
    }
}
