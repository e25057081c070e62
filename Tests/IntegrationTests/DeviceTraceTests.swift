import Foundation
import TestSupport
import XCTest

/// Per-device traces end to end: the real `staplegate run` binary writes `<state>/trace.sqlite`
/// while real devices (mosquitto_pub / mosquitto_sub through the gateway) come and go, and the
/// real `staplegate trace …` commands read it (and switch message trace through control.sock).
final class DeviceTraceTests: GatewayTestCase {
    static let noDeviceOCSP = "device_ocsp: { enabled: false }"

    // MARK: 1. Revoked device

    func testARevokedDeviceTraceShowsTheOCSPRefusalWithReasonAndRevocationTime() async throws {
        try await startResponder()
        let gateway = try await startTracedGateway([])  // device OCSP on, responder from the certificates' AIA
        let row = try indexRow("device-revoked")
        XCTAssertEqual(row.status, "R", "the demo PKI revokes device-revoked")

        let refused = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-revoked",
                                             topic: uniqueTopic("trace/revoked"), message: "refused")
        XCTAssertNotEqual(refused.status, .exited(0), "a revoked device got through:\n\(refused)")

        let events = try await waitForEvents(gateway, ["device-revoked"], "the revoked device's refusal") { events in
            events.contains { $0.kind == "ocsp_check" } && events.contains { $0.kind == "tls_failed" }
        }
        let check = try XCTUnwrap(events.first { $0.kind == "ocsp_check" })
        XCTAssertTrue(check.isFailure, check.summary)
        XCTAssertEqual(check.details["verdict"], "reject")
        // The responder's answer behind the refusal, as the gate had it.
        XCTAssertEqual(check.details["ocsp.status"], "revoked", "\(check.details)")
        XCTAssertEqual(check.details["ocsp.revocation_reason"], "keyCompromise", "\(check.details)")
        XCTAssertEqual(check.details["ocsp.cache"], "miss", "\(check.details)")
        XCTAssertTrue(check.details["ocsp.responder"]?.hasPrefix("http://127.0.0.1:") ?? false, "\(check.details)")
        XCTAssertTrue(check.summary.contains("keyCompromise"), check.summary)
        XCTAssertTrue(check.summary.contains(row.revocationTimeISO), "revocation time \(row.revocationTimeISO) (index.txt \(row.revocation)) not in: \(check.summary)")
        XCTAssertEqual(check.serial?.uppercased(), row.serial)
        XCTAssertEqual(check.device, "device-revoked")
        XCTAssertEqual(Set(events.map(\.kind)).intersection(["connect", "admission", "upstream", "disconnect"]), [],
                       "a refused device never got past the handshake")

        let timeline = try await trace(gateway, ["device-revoked"]).stdout
        XCTAssertTrue(timeline.split(separator: "\n").contains { line in
            line.contains("✗ ocsp_check") && line.contains("keyCompromise") && line.contains(row.revocationTimeISO)
        }, timeline)

        // Negative control: a good device's session is traced without failures…
        try await publish(gateway, as: "device-1", topic: uniqueTopic("trace/good"), "good")
        let good = try await waitForDisconnect(gateway, "device-1")
        XCTAssertFalse(good.contains { $0.isFailure }, good.map(\.summary).joined(separator: "\n"))
        // …and `--failures` lists the refusal, not the good device.
        let failures = try await traceEvents(gateway, ["--failures"])
        XCTAssertTrue(failures.contains { $0.kind == "ocsp_check" && $0.device == "device-revoked" && $0.summary.contains("keyCompromise") },
                      failures.map(\.summary).joined(separator: "\n"))
        XCTAssertFalse(failures.contains { $0.device == "device-1" })
        let failureText = try await trace(gateway, ["--failures"]).stdout
        // Across devices each line names its device.
        XCTAssertTrue(failureText.split(separator: "\n").contains {
            $0.contains("device-revoked  ✗ ocsp_check") && $0.contains("keyCompromise")
        }, failureText)
    }

    // MARK: 2. Good device

    func testAGoodDeviceTimelineRunsFromAcceptToDisconnectWithBytesAndSerial() async throws {
        try await startResponder()
        let gateway = try await startTracedGateway([])
        let topic = uniqueTopic("trace/good")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        try await publish(gateway, as: "device-1", topic: topic, "hello")
        let delivered = try await subscriber.waitForMessages(1)
        XCTAssertEqual(delivered.map(\.payload), ["hello"])

        let events = try await waitForDisconnect(gateway, "device-1")
        let kinds = events.map(\.kind)
        let expected = ["accepted", "tls_handshake", "client_certificate", "ocsp_check", "connect", "admission", "upstream", "disconnect"]
        XCTAssertEqual(kinds.sorted(), expected.sorted(), "one of each, got \(kinds)")
        // The handshake's events (the OCSP check runs inside it) come before the CONNECT; then in order.
        XCTAssertEqual(kinds.first, "accepted")
        XCTAssertEqual(Array(kinds.suffix(4)), ["connect", "admission", "upstream", "disconnect"], "\(kinds)")
        XCTAssertEqual(Set(events.map(\.connectionID)).count, 1, "one connection")
        XCTAssertFalse(events.contains { $0.isFailure })
        let check = try XCTUnwrap(events.first { $0.kind == "ocsp_check" })
        XCTAssertTrue(check.summary.contains("OCSP good"), check.summary)
        XCTAssertEqual(check.details["ocsp.status"], "good", "\(check.details)")
        XCTAssertEqual(check.details["ocsp.cache"], "miss", "the first connection asks the responder: \(check.details)")
        XCTAssertNotNil(check.details["ocsp.latency_ms"], "\(check.details)")

        let disconnect = try XCTUnwrap(events.last)
        let fromDevice = try XCTUnwrap(disconnect.details["bytes_from_device"].flatMap(Int.init), "\(disconnect.details)")
        let toDevice = try XCTUnwrap(disconnect.details["bytes_to_device"].flatMap(Int.init), "\(disconnect.details)")
        XCTAssertGreaterThan(fromDevice, topic.utf8.count + "hello".utf8.count, "CONNECT and PUBLISH, in plaintext")
        XCTAssertGreaterThanOrEqual(toDevice, 8, "CONNACK and PUBACK")

        let serial = try await serialOf("device-1")
        XCTAssertEqual(events.map { $0.serial?.uppercased() }, Array(repeating: serial, count: events.count))

        // The next connection is answered from the cache, and its trace says so, with the same answer.
        try await publish(gateway, as: "device-1", topic: topic, "again")
        let both = try await waitForEvents(gateway, ["device-1"], "the second connection's check") { events in
            events.filter { $0.kind == "ocsp_check" }.count == 2
        }
        let second = try XCTUnwrap(both.last { $0.kind == "ocsp_check" && $0.connectionID != check.connectionID })
        XCTAssertEqual(second.details["ocsp.cache"], "hit", "\(second.details)")
        XCTAssertEqual(second.details["ocsp.status"], "good", "\(second.details)")
        XCTAssertEqual(second.details["ocsp.checked_at"], check.details["ocsp.checked_at"], "the answer the first connection got")
    }

    // MARK: 3. Message trace

    func testMessageTraceRecordsPublishesBothWaysWithoutPayloadsAndEndsInTheSameSession() async throws {
        let gateway = try await startTracedGateway([Self.noDeviceOCSP])
        let directory = try makeTemporaryDirectory()
        let toBroker = uniqueTopic("trace/msg-out"), toDevice = uniqueTopic("trace/msg-in")
        let marker = UUID().uuidString.prefix(8)
        let payloads = ["A": "secret-A-\(marker)", "B": "secret-BB-\(marker)", "C": "secret-CCC-\(marker)",
                        "D": "secret-DDDD-\(marker)", "C2": "secret-C2-\(marker)", "D2": "secret-D2-\(marker)",
                        "E": "secret-EEEEE-\(marker)"]
        let atBroker = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: toBroker)

        let enabled = try await trace(gateway, ["enable", "device-2", "--for", "3s"])
        let expiry = Date().addingTimeInterval(3)  // the gateway's "until" is no later than this
        XCTAssertTrue(enabled.stdout.contains("message trace on for device-2 until"), "\(enabled)")

        // Two sessions of device-2 started while it is on: a subscriber, and a publisher fed line by line.
        let atDevice = try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: "device-2"),
                                                           broker: broker, topic: toDevice)
        let lines = try NamedPipeInput(in: directory, name: "publisher.fifo")
        let publisher = try startMosquittoPub(.gateway(port: gateway.port, pki: pki, device: "device-2"), topic: toBroker,
                                              payload: .linesOf(lines.path))
        try lines.write(Array("\(payloads["A"]!)\n".utf8))
        try await atBroker.waitForMessages(1)
        try await mosquittoPub(.broker(broker), topic: toDevice, payload: .message(payloads["B"]!)).assertSucceeded()
        try await atDevice.waitForMessages(1)
        XCTAssertLessThan(Date(), expiry, "too slow: the 3 s of message trace ran out before both messages passed")

        // After the expiry, the same two sessions carry two more messages each, untraced.
        try await waitUntil(timeout: .seconds(10), "message trace of device-2 to run out") { Date() > expiry + 0.2 }
        for (line, message) in [("C", "D"), ("C2", "D2")] {
            try lines.write(Array("\(payloads[line]!)\n".utf8))
            try await mosquittoPub(.broker(broker), topic: toDevice, payload: .message(payloads[message]!)).assertSucceeded()
        }
        try await waitUntil(timeout: .seconds(15), "C2 at the broker and D2 at device-2 (same sessions)",
                            details: { "\(atBroker.messages.map(\.payload)) \(atDevice.messages.map(\.payload))" }) {
            atBroker.messages.last?.payload == payloads["C2"]! && atDevice.messages.last?.payload == payloads["D2"]!
        }
        XCTAssertTrue(publisher.isRunning && atDevice.process.isRunning, "both sessions still open")
        // The PUBLISH that meets the expiry (C, D) is forwarded like every other: nothing is lost
        // when the trace handler leaves the pipeline.
        XCTAssertEqual(atBroker.messages.map(\.payload), ["A", "C", "C2"].map { payloads[$0]! })
        XCTAssertEqual(atDevice.messages.map(\.payload), ["B", "D", "D2"].map { payloads[$0]! })

        let events = try await waitForEvents(gateway, ["device-2"], "\"message trace ended\" in both sessions") { events in
            events.filter { $0.summary.contains("message trace ended") }.count == 2
        }
        let publishes = events.filter { $0.kind == "publish" && $0.details["direction"] != nil }
        XCTAssertEqual(publishes.count, 2, publishes.map(\.summary).joined(separator: "\n"))
        var sessions: [UInt64] = []
        for (direction, topic, payload) in [("device→broker", toBroker, "A"), ("broker→device", toDevice, "B")] {
            let event = try XCTUnwrap(publishes.first { $0.details["direction"] == direction }, direction)
            XCTAssertEqual(event.details.filter { ["topic", "qos", "payload_bytes"].contains($0.key) },
                           ["topic": topic, "qos": "1", "payload_bytes": "\(payloads[payload]!.utf8.count)"])
            sessions.append(event.connectionID)
        }
        XCTAssertEqual(Set(sessions).count, 2, "the publisher's and the subscriber's sessions")
        for session in sessions {
            let ofSession = events.filter { $0.connectionID == session }
            XCTAssertTrue(ofSession.contains { $0.kind == "admission" && $0.summary.contains("message trace on for this session") })
            let ended = try XCTUnwrap(ofSession.firstIndex { $0.summary.contains("message trace ended") })
            XCTAssertFalse(ofSession[ended...].contains { $0.details["direction"] != nil },
                           "a PUBLISH recorded after the expiry: \(ofSession.map(\.summary))")
        }

        // Never the payload: not in the JSON, not in the store's files.
        let json = try await trace(gateway, ["device-2", "--json"]).stdout
        let store = ["", "-wal"].compactMap { FileManager.default.contents(atPath: "\(gateway.stateDirectory)/trace.sqlite\($0)") }
        for payload in payloads.values {
            XCTAssertFalse(json.contains(payload), "payload \(payload) in the trace JSON")
            XCTAssertFalse(store.contains { $0.range(of: Data(payload.utf8)) != nil }, "payload \(payload) in trace.sqlite")
        }
        lines.close()
        let publisherExit = try await publisher.waitForExit(timeout: .seconds(10))
        XCTAssertEqual(publisherExit, .exited(0), publisher.output)
        await atDevice.stop()

        // Negative control: switched on, then off; a session started now records no PUBLISH.
        _ = try await trace(gateway, ["enable", "device-2", "--for", "1h"])
        _ = try await trace(gateway, ["disable", "device-2"])
        let before = Set(events.map(\.connectionID))
        try await publish(gateway, as: "device-2", topic: toBroker, payloads["E"]!)
        try await waitUntil(timeout: .seconds(15), "E at the broker", details: { "\(atBroker.messages.map(\.payload))" }) {
            atBroker.messages.last?.payload == payloads["E"]!
        }
        let after = try await waitForEvents(gateway, ["device-2"], "the untraced session's disconnect") { events in
            events.contains { $0.kind == "disconnect" && !before.contains($0.connectionID) }
        }
        let untraced = after.filter { !before.contains($0.connectionID) }
        XCTAssertFalse(untraced.contains { $0.kind == "publish" || $0.summary.contains("message trace") },
                       untraced.map(\.summary).joined(separator: "\n"))
    }

    // MARK: 4. Failing store

    func testAnUnwritableTraceStoreDropsAndCountsEventsWithoutStoppingTraffic() async throws {
        let gateway = try await startTracedGateway([Self.noDeviceOCSP])
        let store = "\(gateway.stateDirectory)/trace.sqlite"
        let topic = uniqueTopic("trace/unwritable")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        try await publish(gateway, as: "device-1", topic: topic, "before")
        _ = try await waitForDisconnect(gateway, "device-1")
        XCTAssertTrue(logLines(gateway, containing: "trace store failing").isEmpty, "negative control: a healthy store")

        // A folder where the database was: even root cannot open it as a database.
        try FileManager.default.removeItem(atPath: store)
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: false)
        for (index, device) in ["device-1", "device-2", "device-3"].enumerated() {
            try await publish(gateway, as: device, topic: topic, "during \(index)")
        }
        try await subscriber.waitForMessages(4)
        var failing: [String] = []
        try await waitUntil(timeout: .seconds(10), "\"trace store failing\" in the gateway log", details: { gateway.output }) {
            failing = self.logLines(gateway, containing: "trace store failing: ")
            return !failing.isEmpty
        }
        let firstCount = try XCTUnwrap(number(after: "trace store failing: ", in: failing[0]), failing[0])
        XCTAssertGreaterThan(firstCount, 0)
        XCTAssertTrue(failing[0].contains(store), failing[0])

        // Repaired: the store reopens the file (after its retry delay) and says how many it dropped in all.
        try FileManager.default.removeItem(atPath: store)
        var sent = 4
        var recovered: [String] = []
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(300), "the trace store to write again",
                            details: { gateway.output }) {
            try await self.publish(gateway, as: "device-1", topic: topic, "after \(sent)")
            sent += 1
            recovered = self.logLines(gateway, containing: "writes again after")
            return !recovered.isEmpty
        }
        try await subscriber.waitForMessages(sent)  // every message arrived
        let total = try XCTUnwrap(number(after: "writes again after ", in: recovered[0]), recovered[0])
        XCTAssertGreaterThan(total, firstCount, "the drop count grew while the store was failing")
        try await publish(gateway, as: "device-1", topic: topic, "written again")
        let events = try await waitForDisconnect(gateway, "device-1")
        XCTAssertTrue(events.contains { $0.kind == "accepted" })
    }

    // MARK: 5. Retention

    func testEventsOlderThanTheRetentionDisappearWhileNewOnesRemain() async throws {
        let gateway = try await startTracedGateway([Self.noDeviceOCSP, "trace: { retention: 2s }"])
        let topic = uniqueTopic("trace/retention")
        try await publish(gateway, as: "device-3", topic: topic, "old")
        let oldEvents = try await waitForDisconnect(gateway, "device-3")
        let old = try XCTUnwrap(oldEvents.first?.connectionID)

        // Retention passes follow writes (at most one per few seconds): keep devices coming.
        var events: [Event] = []
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(500), "device-3's first session to be pruned",
                            details: { events.map(\.summary).joined(separator: "\n") }) {
            try await self.publish(gateway, as: "device-3", topic: topic, "new")
            events = try await self.traceEvents(gateway, ["device-3"])
            return !events.contains { $0.connectionID == old } && !events.isEmpty
        }
        XCTAssertTrue(events.allSatisfy { $0.connectionID > old }, "only newer sessions remain")
        // The newest session's events are there in full.
        try await publish(gateway, as: "device-3", topic: topic, "newest")
        let newest = try await waitForDisconnect(gateway, "device-3")
        let last = try XCTUnwrap(newest.last?.connectionID)
        XCTAssertEqual(newest.filter { $0.connectionID == last }.map(\.kind).first, "accepted")
    }

    // MARK: 6. --follow

    func testFollowPrintsNewEventsAsTheyAreWritten() async throws {
        let gateway = try await startTracedGateway([Self.noDeviceOCSP])
        let topic = uniqueTopic("trace/follow")
        try await publish(gateway, as: "device-1", topic: topic, "another device")
        try await publish(gateway, as: "device-3", topic: topic, "first")
        let first = try await waitForDisconnect(gateway, "device-3")
        _ = try await waitForDisconnect(gateway, "device-1")

        // A follower in a pipe (as under `| grep` or a service manager): it must flush each batch.
        let arguments = ["trace", "device-3", "--follow", "--state-dir", gateway.stateDirectory]
        let follow = try ManagedProcess(try CommandLineTests.findExecutable(), arguments)
        addTeardownBlock { await follow.terminate() }
        try await waitUntil(timeout: .seconds(10), "--follow to print the existing session", details: { follow.output }) {
            follow.stdout.lines.contains { $0.contains(" disconnect ") }
        }

        try await publish(gateway, as: "device-3", topic: topic, "second")
        try await waitUntil(timeout: .seconds(10), "--follow to print the new session", details: { follow.output }) {
            follow.stdout.lines.filter { $0.contains(" disconnect ") }.count == 2
        }
        XCTAssertTrue(follow.isRunning, "--follow keeps running")
        let all = try await traceEvents(gateway, ["device-3"])
        let printed = follow.stdout.lines
        XCTAssertEqual(printed.count, all.count, "one line per event of device-3, none of device-1:\n\(printed.joined(separator: "\n"))")
        let second = Set(all.map(\.connectionID)).subtracting(first.map(\.connectionID))
        XCTAssertEqual(second.count, 1)
        XCTAssertTrue(printed.contains { $0.contains("#\(second.first!) ") && $0.contains(" accepted ") }, printed.joined(separator: "\n"))
        await follow.terminate()
        XCTAssertFalse(follow.isRunning)
    }

    // MARK: - Helpers

    /// One event as `staplegate trace --json` prints it.
    struct Event: Decodable {
        let kind: String
        let device: String?
        let serial: String?
        let connectionID: UInt64
        let isFailure: Bool
        let summary: String
        let details: [String: String]
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// The PKI's real `openssl ocsp` responder, on the port its certificates' AIA names, until the test ends.
    private func startResponder() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
    }

    /// The real binary with `sections`, stopped at the end of the test; logs printed on failure.
    func startTracedGateway(_ sections: [String]) async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: sections)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.output)\n--- broker log ---\n\(self?.broker.log ?? "")")
            }
            await gateway.stop()
        }
        return gateway
    }

    /// A QoS 1 publish of `device` through the gateway, which must succeed.
    private func publish(_ gateway: StapleGateProcess, as device: String, topic: String, _ message: String) async throws {
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: topic, message: message, qos: 1)
        guard result.status == .exited(0) else { throw Failure(description: "\(device) could not publish:\n\(result)") }
    }

    /// `staplegate trace ARGUMENTS --state-dir …`, which must succeed.
    @discardableResult
    func trace(_ gateway: StapleGateProcess, _ arguments: [String]) async throws -> CommandResult {
        let result = try await gateway.command(["trace"] + arguments)
        guard result.status == .exited(0) else {
            throw Failure(description: "staplegate trace \(arguments.joined(separator: " ")):\n\(result)")
        }
        return result
    }

    /// The events `staplegate trace ARGUMENTS --json` prints.
    func traceEvents(_ gateway: StapleGateProcess, _ arguments: [String]) async throws -> [Event] {
        try Self.events(in: try await trace(gateway, arguments + ["--json"]).stdout)
    }

    static func events(in output: String) throws -> [Event] {
        let lines = output.split(separator: "\n")
        if lines.count == 1, lines[0].hasPrefix("no events for") || lines[0].hasPrefix("no refusals") { return [] }
        return try lines.map { try JSONDecoder().decode(Event.self, from: Data($0.utf8)) }
    }

    @discardableResult
    func waitForEvents(_ gateway: StapleGateProcess, _ arguments: [String], _ what: String,
                               timeout: Duration = .seconds(15), until condition: ([Event]) -> Bool) async throws -> [Event] {
        var latest: [Event] = []
        // What the last `trace` printed, whole: when nothing matched, that is the clue (a failing
        // store, events attributed elsewhere) the events alone would not give.
        var raw = ""
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(200), what,
                            details: { latest.map { "\($0.kind): \($0.summary)" }.joined(separator: "\n") + "\n--- last output ---\n" + raw }) {
            let result = try await trace(gateway, arguments + ["--json"])
            raw = "\(result)"
            latest = try Self.events(in: result.stdout)
            return condition(latest)
        }
        return latest
    }

    /// `device`'s events once its newest session's disconnect is stored.
    private func waitForDisconnect(_ gateway: StapleGateProcess, _ device: String) async throws -> [Event] {
        try await waitForEvents(gateway, [device], "\(device)'s newest session to end in the trace") { events in
            guard let last = events.last?.connectionID else { return false }
            return events.contains { $0.connectionID == last && $0.kind == "disconnect" }
        }
    }

    private func logLines(_ gateway: StapleGateProcess, containing text: String) -> [String] {
        (gateway.process.stderr.lines + gateway.process.stdout.lines).filter { $0.contains(text) }
    }

    /// `openssl x509 -serial`, in upper-case hex.
    private func serialOf(_ device: String) async throws -> String {
        let result = try await ManagedProcess("openssl", ["x509", "-in", pki.certificate(device), "-noout", "-serial"])
            .commandResult(timeout: .seconds(10))
        guard result.status.succeeded, let line = result.stdout.split(separator: "\n").first, line.hasPrefix("serial=") else {
            throw Failure(description: "openssl x509 -serial: \(result)")
        }
        return line.dropFirst("serial=".count).uppercased()
    }

    /// `name`'s row in the PKI's index.txt: status, revocation ("YYMMDDHHMMSSZ,reason"), serial.
    private func indexRow(_ name: String) throws -> (status: String, revocation: String, serial: String, revocationTimeISO: String) {
        let index = try String(contentsOfFile: pki.path("index.txt"), encoding: .utf8)
        let rows: [[String]] = index.split(separator: "\n").map { row in
            row.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        }
        guard let fields = rows.first(where: { $0.count == 6 && $0[5] == "/CN=\(name)" }) else {
            throw Failure(description: "no /CN=\(name) in index.txt:\n\(index)")
        }
        let time: [Character] = Array(fields[2].prefix(12))  // YYMMDDHHMMSS, UTC
        guard time.count == 12, time.allSatisfy({ $0.isNumber }) else { throw Failure(description: "no revocation time: \(fields)") }
        let pairs: [String] = stride(from: 0, to: 12, by: 2).map { (i: Int) -> String in String(time[i...(i + 1)]) }
        let iso = "20\(pairs[0])-\(pairs[1])-\(pairs[2])T\(pairs[3]):\(pairs[4]):\(pairs[5])Z"
        return (String(fields[0]), String(fields[2]), fields[3].uppercased(), iso)
    }
}

extension CommandResult {
    func assertSucceeded(file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(status, .exited(0), "\(self)", file: file, line: line)
    }
}

/// The first run of digits right after `prefix` in `line`.
private func number(after prefix: String, in line: String) -> Int? {
    guard let start = line.range(of: prefix)?.upperBound else { return nil }
    return Int(line[start...].prefix { $0.isNumber })
}
