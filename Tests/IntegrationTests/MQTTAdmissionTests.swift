import Foundation
import StapleGateAdmission
import StapleGateTrace
import TestSupport
import XCTest

/// MQTT-aware admission (`admission:`) with the real `staplegate` binary, a real Mosquitto and
/// real devices: mosquitto_pub / mosquitto_sub, and `openssl s_client` fed raw bytes for what no
/// client tool sends. What a device's CONNECT may claim, what the broker gets instead, and how
/// each refusal reads in `staplegate trace`. Device OCSP is off (it has suites of its own).
///
/// The first packet's checks, the connect timeout and the traced lifecycle of a good session
/// are in MQTTAdmissionTests+FirstPacket.swift.
final class MQTTAdmissionTests: GatewayTestCase {
    // MARK: client_id_must_match_identity

    func testClientIDOtherThanTheCertificateIdentityIsRejectedInMQTT311And5() async throws {
        let gateway = try await startAdmissionGateway(["client_id_must_match_identity: true"])
        let topic = uniqueTopic("admission/client-id")
        let observer = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let wrongIDs = [uniqueClientID("wrong-v311"), uniqueClientID("wrong-v5")]

        // mosquitto_pub exits with the CONNACK's return / reason code.
        let refused311 = try await publish(through: gateway, topic: topic, message: "from \(wrongIDs[0])",
                                           clientID: wrongIDs[0], version: "mqttv311")
        XCTAssertEqual(refused311.status, .exited(0x02), "\(refused311)")
        XCTAssertTrue(refused311.stderr.contains("Connection error: Connection Refused: identifier rejected."), "\(refused311)")
        let refused5 = try await publish(through: gateway, topic: topic, message: "from \(wrongIDs[1])",
                                         clientID: wrongIDs[1], version: "mqttv5")
        XCTAssertEqual(refused5.status, .exited(0x85), "\(refused5)")
        XCTAssertTrue(refused5.stderr.contains("Connection error: Client Identifier not valid"), "\(refused5)")

        // Negative control: device-1 calling itself device-1 gets through, under the same rule.
        let admitted = try await publish(through: gateway, topic: topic, message: "from device-1", clientID: "device-1")
        XCTAssertEqual(admitted.status, .exited(0), "\(admitted)")
        let messages = try await observer.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["from device-1"])
        try await broker.waitForLog(" as device-1 (p2,")
        for id in wrongIDs {
            XCTAssertFalse(broker.log.contains(id), "the broker heard from refused client id \(id):\n\(broker.log)")
        }

        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .admission && $0.isFailure }.count == 2 && events.contains { $0.kind == .disconnect }
        }
        let reasons = wrongIDs.map { "client id \"\($0)\" is not the certificate's identity \"device-1\"" }
        let refusals = events.filter { $0.kind == .admission && $0.isFailure }
        XCTAssertEqual(refusals.map { $0.details["reason"] }, reasons)
        XCTAssertEqual(refusals.map(\.summary), reasons.map { "refused: \($0)" })
        let connects = events.filter { $0.kind == .connect }
        XCTAssertEqual(connects.map { $0.details["client_id"] }, wrongIDs + ["device-1"])
        XCTAssertEqual(connects.map { $0.details["protocol"] }, ["3.1.1", "5.0", "3.1.1"])
        for refusal in refusals {
            let session = events.filter { $0.connectionID == refusal.connectionID }
            XCTAssertFalse(session.contains { $0.kind == .upstream }, "a refused session was forwarded: \(session)")
            XCTAssertEqual(session.last, refusal, "the refusal ends its session's trace")
        }

        // The operator's view: both refusals among the failures, marked, and nothing else of device-1's.
        let failures = try await traceText(gateway, ["--failures"], containing: reasons)
        for reason in reasons {
            let lines = failureLines(failures, containing: reason)
            XCTAssertEqual(lines.map { "\($0.device) \($0.kind)" }, ["device-1 admission"], failures)
        }
        XCTAssertFalse(failures.contains("admitted"), failures)
    }

    /// The demo device certificates carry no subject alternative name, so an identity taken
    /// from one is missing: CONNACK "not authorized", and nothing reaches the broker.
    func testIdentityFromASubjectAlternativeNameTheCertificateLacksIsNotAuthorized() async throws {
        let gateway = try await startAdmissionGateway(["identity: san_uri"])
        let clientID = uniqueClientID("no-san")
        let refused311 = try await publish(through: gateway, topic: uniqueTopic("admission/san"), clientID: clientID,
                                           version: "mqttv311")
        XCTAssertEqual(refused311.status, .exited(0x05), "\(refused311)")
        XCTAssertTrue(refused311.stderr.contains("Connection Refused: not authorised."), "\(refused311)")
        let refused5 = try await publish(through: gateway, topic: uniqueTopic("admission/san"), clientID: clientID,
                                         version: "mqttv5")
        XCTAssertEqual(refused5.status, .exited(0x87), "\(refused5)")
        XCTAssertTrue(refused5.stderr.contains("Connection error: Not authorized"), "\(refused5)")

        // Traced under the common name, the only name the certificate has.
        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .admission && $0.isFailure }.count == 2
        }
        let refusals = events.filter { $0.kind == .admission }
        XCTAssertEqual(refusals.map { $0.details["reason"] }, Array(
            repeating: "the device certificate has no san_uri to take the identity from", count: 2))
        XCTAssertFalse(events.contains { $0.kind == .upstream }, "\(events)")
        XCTAssertFalse(broker.log.contains(clientID), broker.log)
    }

    // MARK: Broker down

    func testBrokerDownIsAnsweredServerUnavailableInMQTT311And5() async throws {
        let gateway = try await startAdmissionGateway()
        let topic = uniqueTopic("admission/broker-down")
        await broker.stop()

        let refused311 = try await publish(through: gateway, topic: topic, version: "mqttv311")
        XCTAssertEqual(refused311.status, .exited(0x03), "\(refused311)")
        XCTAssertTrue(refused311.stderr.contains("Connection error: Connection Refused: broker unavailable."), "\(refused311)")
        let refused5 = try await publish(through: gateway, topic: topic, version: "mqttv5")
        XCTAssertEqual(refused5.status, .exited(0x88), "\(refused5)")
        XCTAssertTrue(refused5.stderr.contains("Connection error: Server unavailable"), "\(refused5)")

        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .upstream }.count == 2
        }
        let attempts = sessions(events)
        XCTAssertEqual(attempts.count, 2, "\(events)")
        for session in attempts {
            // The CONNECT was fine; the broker was not there.
            XCTAssertEqual(session.suffix(3).map(\.kind), [.connect, .admission, .upstream], "\(session)")
            let upstream = try XCTUnwrap(session.last)
            XCTAssertTrue(upstream.isFailure, "\(upstream)")
            XCTAssertEqual(upstream.details["endpoint"], "127.0.0.1:\(broker.port!)", "\(upstream)")
            XCTAssertEqual(upstream.details["reason"], "Connection refused", "\(upstream)")
            XCTAssertFalse(session.contains { $0.kind == .disconnect }, "\(session)")
        }
        let unreachable = "broker unreachable at 127.0.0.1:\(broker.port!): Connection refused"
        let failures = try await traceText(gateway, ["--failures"], containing: [unreachable])
        XCTAssertEqual(failureLines(failures, containing: unreachable).count, 2, failures)

        // Negative control: the same gateway, the same device, once the broker is back.
        try await broker.start()
        let observer = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let served = try await publish(through: gateway, topic: topic, message: "broker back")
        XCTAssertEqual(served.status, .exited(0), "\(served)")
        let messages = try await observer.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["broker back"])
        let after = try await traceEvents(gateway, ["device-1"]) { events in
            events.contains { $0.kind == .upstream && !$0.isFailure }
        }
        XCTAssertEqual(after.filter { $0.kind == .upstream && $0.isFailure }.count, 2)
    }

    // MARK: username_from_certificate

    /// Each device gets the topics of its own certificate from a `%u` ACL, whatever it calls
    /// itself: device-1 may publish under devices/device-1/ but not under devices/device-2/,
    /// where device-2 may.
    func testUsernameFromCertificateAppliesTheBrokerACLPerDevice() async throws {
        let aclBroker = try await startACLBroker()
        let gateway = try await startAdmissionGateway(["username_from_certificate: true"], broker: aclBroker)
        let run = UUID().uuidString.prefix(8).lowercased()
        let (ownTopic, otherTopic) = ("devices/device-1/\(run)", "devices/device-2/\(run)")
        let observer = try await MosquittoSubscriber.start(.broker(aclBroker), broker: aclBroker, topic: "devices/#")

        let trespasser = uniqueClientID("device-1-trespassing")
        let trespass = try await publish(through: gateway, topic: otherTopic, message: "device-1 trespassing",
                                         clientID: trespasser)
        XCTAssertEqual(trespass.status, .exited(0), "Mosquitto acknowledges a denied QoS 1 publish in 3.1.1\n\(trespass)")
        try await aclBroker.waitForLog("Denied PUBLISH from \(trespasser) (d0, q1, r0, m1, '\(otherTopic)'")

        let ownID = uniqueClientID("device-1-own")
        let own = try await publish(through: gateway, topic: ownTopic, message: "device-1 at home", clientID: ownID)
        XCTAssertEqual(own.status, .exited(0), "\(own)")
        let device2 = try await publish(through: gateway, as: "device-2", topic: otherTopic, message: "device-2 at home")
        XCTAssertEqual(device2.status, .exited(0), "\(device2)")

        let messages = try await observer.waitForMessages(2)
        XCTAssertEqual(messages.map(\.topic), [ownTopic, otherTopic])
        XCTAssertEqual(messages.map(\.payload), ["device-1 at home", "device-2 at home"])
        for id in [trespasser, ownID] {
            XCTAssertTrue(aclBroker.log.contains(" as \(id) (p2, c1, k60, u'device-1')."), "\(id):\n\(aclBroker.log)")
        }
    }

    /// A device that claims another device's username, with a password, still reaches the broker
    /// as itself, without the password: the CONNECT the broker received is read off the wire
    /// (socat between the gateway and the broker), in MQTT 3.1.1 and in 5.0, where it must keep
    /// the device's CONNECT properties.
    func testUsernameFromCertificateReplacesAClaimedUsernameAndDropsThePassword() async throws {
        let aclBroker = try await startACLBroker()
        // Lends its free port to the gateway's upstream, where socat listens; never started.
        let recorderAddress = try MosquittoBroker()
        addTeardownBlock { recorderAddress.remove() }
        let gateway = try await startAdmissionGateway(["username_from_certificate: true"], broker: recorderAddress)
        let directory = try makeTemporaryDirectory()
        let topic = "devices/device-1/\(UUID().uuidString.prefix(8).lowercased())"
        let observer = try await MosquittoSubscriber.start(.broker(aclBroker), broker: aclBroker, topic: topic)

        for (round, version) in ["mqttv311", "mqttv5"].enumerated() {
            let capture = directory.file("upstream-\(version).bin")
            let recorder = try await recordNextConnection(on: recorderAddress.port!, to: aclBroker.port!, into: capture)
            let clientID = uniqueClientID("claims-device-2")
            let properties = version == "mqttv5" ? ["-D", "connect", "user-property", "fleet", "north-7"] : []
            let published = try await publish(through: gateway, topic: topic, message: "\(version) as device-1",
                                              clientID: clientID, version: version,
                                              extraArgs: ["-u", "device-2", "-P", "secret-of-device-1"] + properties)
            XCTAssertEqual(published.status, .exited(0), "\(published)")
            // Delivered under devices/device-1/: the broker applied the ACL to device-1, not device-2.
            let messages = try await observer.waitForMessages(round + 1)
            XCTAssertEqual(messages.last?.payload, "\(version) as device-1")
            try await recorder.waitForExit(timeout: .seconds(10))

            let upstream = [UInt8](try Data(contentsOf: URL(fileURLWithPath: capture)))
            guard case let .connect(connect, _) = MQTTConnectParser.parse(upstream, maximumPacketSize: 1 << 20) else {
                XCTFail("the broker's first packet is not a CONNECT: \(upstream.prefix(64))")
                continue
            }
            XCTAssertEqual(connect.clientID, clientID)
            XCTAssertEqual(connect.username, "device-1")
            XCTAssertNil(connect.password, "the password reached the broker")
            if version == "mqttv5" {
                XCTAssertEqual(connect.protocolVersion, .v5)
                XCTAssertTrue(connect.properties.contains(subsequence: Array("fleet".utf8) + [0x00, 0x07] + Array("north-7".utf8)),
                              "the device's user property was lost: \(connect.properties)")
            }
            let protocolLevel = version == "mqttv5" ? "p5" : "p2"
            XCTAssertTrue(aclBroker.log.contains(" as \(clientID) (\(protocolLevel), c1, k60, u'device-1')."), aclBroker.log)
            XCTAssertFalse(aclBroker.log.contains("u'device-2'"), aclBroker.log)
        }

        // The trace keeps what the device claimed next to what the gateway made of it.
        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .disconnect }.count == 2
        }
        XCTAssertEqual(events.filter { $0.kind == .connect }.map { $0.details["username"] }, ["device-2", "device-2"])
        XCTAssertEqual(events.filter { $0.kind == .admission }.map(\.summary), Array(
            repeating: "admitted as device-1; username set from the certificate, password dropped", count: 2))
    }

    /// Negative control: without `username_from_certificate` the device's CONNECT reaches the
    /// broker as it was sent. device-1 has no username, so the `%u` pattern grants it nothing;
    /// and a username it merely claims is believed.
    func testWithoutUsernameFromCertificateTheACLPatternDoesNotApplyToADeviceWithoutUsername() async throws {
        let aclBroker = try await startACLBroker()
        let gateway = try await startAdmissionGateway(broker: aclBroker)
        let run = UUID().uuidString.prefix(8).lowercased()
        let (ownTopic, otherTopic) = ("devices/device-1/\(run)", "devices/device-2/\(run)")
        let observer = try await MosquittoSubscriber.start(.broker(aclBroker), broker: aclBroker, topic: "devices/#")

        let anonymousID = uniqueClientID("device-1-anonymous")
        let anonymous = try await publish(through: gateway, topic: ownTopic, message: "no username", clientID: anonymousID)
        XCTAssertEqual(anonymous.status, .exited(0), "\(anonymous)")
        try await aclBroker.waitForLog("Denied PUBLISH from \(anonymousID) (d0, q1, r0, m1, '\(ownTopic)'")
        XCTAssertTrue(aclBroker.log.contains(" as \(anonymousID) (p2, c1, k60)."), aclBroker.log)

        let impostorID = uniqueClientID("device-1-impostor")
        let impostor = try await publish(through: gateway, topic: otherTopic, message: "device-1 claiming device-2",
                                         clientID: impostorID, extraArgs: ["-u", "device-2"])
        XCTAssertEqual(impostor.status, .exited(0), "\(impostor)")
        let messages = try await observer.waitForMessages(1)
        XCTAssertEqual(messages.map(\.topic), [otherTopic], "device-1's own topic was not denied")
        XCTAssertEqual(messages.map(\.payload), ["device-1 claiming device-2"])
        XCTAssertTrue(aclBroker.log.contains(" as \(impostorID) (p2, c1, k60, u'device-2')."), aclBroker.log)
    }
}

// MARK: - Helpers

extension MQTTAdmissionTests {
    /// The real binary with `admission` set to `admission` (lines of the section) and device OCSP
    /// off, forwarding to `broker` (the class's by default); its log and the broker's are printed
    /// if the test fails.
    func startAdmissionGateway(_ admission: [String] = [], broker: MosquittoBroker? = nil,
                               listen: [String] = []) async throws -> StapleGateProcess {
        let upstream = broker ?? self.broker!
        var sections = ["device_ocsp: { enabled: false }"]
        if !admission.isEmpty { sections.append((["admission:"] + admission.map { "  \($0)" }).joined(separator: "\n")) }
        let gateway = try await StapleGateProcess.start(pki: pki, broker: upstream, directory: try makeTemporaryDirectory(),
                                                        sections: sections, listen: listen)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.output)\n--- broker log ---\n\(upstream.log)")
            }
            await gateway.stop()
        }
        return gateway
    }

    /// mosquitto_pub through `gateway` as `device`, QoS 1, speaking MQTT `version`.
    func publish(through gateway: StapleGateProcess, as device: String = "device-1", topic: String,
                 message: String = "hello", clientID: String? = nil, version: String = "mqttv311",
                 extraArgs: [String] = []) async throws -> CommandResult {
        try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: topic, message: message,
                               clientID: clientID, extraArgs: ["-V", version] + extraArgs)
    }

    /// What `staplegate trace ARGUMENTS --json` prints, decoded, once `condition` holds for it
    /// (the gateway writes its events in batches).
    func traceEvents(_ gateway: StapleGateProcess, _ arguments: [String], timeout: Duration = .seconds(15),
                     until condition: ([TraceEvent]) -> Bool) async throws -> [TraceEvent] {
        let decoder = TraceTimeline.jsonDecoder()
        var events: [TraceEvent] = []
        var printed = ""
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(100),
                            "`staplegate trace \(arguments.joined(separator: " ")) --json` to show the expected events",
                            details: { printed }) {
            let result = try await gateway.command(["trace"] + arguments + ["--json"])
            printed = "\(result)"
            guard result.status.succeeded else { return false }
            events = try result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }
                .map { try decoder.decode(TraceEvent.self, from: Data($0.utf8)) }
            return condition(events)
        }
        return events
    }

    /// What `staplegate trace ARGUMENTS` prints for operators, once it contains all of `texts`.
    @discardableResult
    func traceText(_ gateway: StapleGateProcess, _ arguments: [String], containing texts: [String],
                   timeout: Duration = .seconds(15)) async throws -> String {
        var printed = ""
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(100),
                            "`staplegate trace \(arguments.joined(separator: " "))` to print \(texts)",
                            details: { printed }) {
            let result = try await gateway.command(["trace"] + arguments)
            printed = result.stdout + result.stderr
            return result.status.succeeded && texts.allSatisfy(result.stdout.contains)
        }
        return printed
    }

    /// The lines of a `staplegate trace --failures` printout that contain `text` and carry the
    /// failure mark, with the columns around the mark:
    /// "2026-…Z  #7  device-1  ✗ admission           refused: …".
    func failureLines(_ printout: String, containing text: String) -> [(device: String, kind: String)] {
        printout.split(separator: "\n").filter { $0.contains(text) }.compactMap { line in
            let columns = line.split(separator: " ")
            guard let mark = columns.firstIndex(of: Substring(TraceTimeline.failureMark)), mark > 0, mark + 1 < columns.count
            else { return nil }
            return (String(columns[mark - 1]), String(columns[mark + 1]))
        }
    }

    /// `events` split by connection, in the order the connections first appear.
    func sessions(_ events: [TraceEvent]) -> [[TraceEvent]] {
        var order: [UInt64] = []
        var byConnection: [UInt64: [TraceEvent]] = [:]
        for event in events {
            if byConnection[event.connectionID] == nil { order.append(event.connectionID) }
            byConnection[event.connectionID, default: []].append(event)
        }
        return order.map { byConnection[$0]! }
    }

    /// A Mosquitto of this test's own whose ACL gives every username the topics under
    /// devices/<username>/ (`pattern readwrite devices/%u/#`) and anonymous clients read access
    /// to devices/#, for an observer subscribed straight to it. No password file: with
    /// `allow_anonymous true` (MosquittoBroker's default) Mosquitto 2.0 takes any username
    /// without a password. Debug logging, where it reports each denied PUBLISH.
    func startACLBroker() async throws -> MosquittoBroker {
        let directory = try makeTemporaryDirectory()  // 0755, its files 0644: readable by user mosquitto
        let acl = try directory.write("acl", """
            # Anonymous clients: the test's observer (and devices without a username).
            topic read devices/#
            pattern readwrite devices/%u/#

            """)
        let broker = try await MosquittoBroker.start(extraConfiguration: ["acl_file \(acl)", "log_type debug"])
        addTeardownBlock { broker.remove() }
        return broker
    }

    /// socat on `port`, forwarding one connection to `brokerPort` and writing every byte sent
    /// towards the broker into `capture`; it exits when that connection ends.
    func recordNextConnection(on port: Int, to brokerPort: Int, into capture: String) async throws -> ManagedProcess {
        let socat = try ManagedProcess("socat", ["-d", "-d", "-r", capture, "TCP-LISTEN:\(port),bind=127.0.0.1,reuseaddr",
                                                 "TCP:127.0.0.1:\(brokerPort)"])
        addTeardownBlock { await socat.terminate() }
        try await socat.waitForOutput("listening on", timeout: .seconds(10))
        return socat
    }
}

private extension Array where Element: Equatable {
    /// Whether `subsequence` occurs in this array as consecutive elements.
    func contains(subsequence: [Element]) -> Bool {
        guard !subsequence.isEmpty, subsequence.count <= count else { return subsequence.isEmpty }
        return (0...(count - subsequence.count)).contains { self[$0..<($0 + subsequence.count)].elementsEqual(subsequence) }
    }
}
