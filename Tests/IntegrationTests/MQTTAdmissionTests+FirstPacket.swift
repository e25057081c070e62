import Foundation
import StapleGateTrace
import TestSupport
import XCTest

/// The device's first packet after the handshake: anything but a well-formed CONNECT within
/// `max_connect_size` and `connect_timeout` ends the connection before the broker is dialled,
/// and says why in the trace. Then the whole traced lifecycle of a session that gets through.
extension MQTTAdmissionTests {
    // MARK: Not a CONNECT, malformed

    func testFirstPacketOtherThanAWellFormedCONNECTIsClosedBeforeTheBroker() async throws {
        let gateway = try await startAdmissionGateway()
        let directory = try makeTemporaryDirectory()
        let brokerConnectionsBefore = brokerConnectionCount()
        // A 5.0 CONNECT whose client identifier announces 32 bytes where 8 follow.
        let overrun: [UInt8] = [0x00, 0x04] + Array("MQTT".utf8) + [0x05, 0x02, 0x00, 0x3C, 0x00]
            + [0x00, 0x20] + Array("device-1".utf8)
        let cases: [(packet: [UInt8], reason: String, answer: [UInt8]?)] = [
            ([0xC0, 0x00], "first packet is PINGREQ, not CONNECT", nil),
            (Self.connectPacket(protocolName: "MQTX", clientID: "device-1"),
             "unsupported protocol \"MQTX\" (expected \"MQTT\" or \"MQIsdp\")", nil),
            // 5.0 has a reason code for it (0x81 Malformed Packet); for the others the spec says close.
            ([0x10, UInt8(overrun.count)] + overrun,
             "malformed CONNECT: client identifier length runs past the end of the packet", [0x20, 0x03, 0x00, 0x81, 0x00]),
        ]

        for (packet, reason, answer) in cases {
            let device = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-1",
                                                   clientID: uniqueClientID("raw"), directory: directory)
            try await device.waitForHandshake()
            try device.send(packet)
            // Closed at once, not at the connect timeout (10 s by default).
            try await device.waitForClose(timeout: .seconds(5))
            if let answer {
                XCTAssertEqual(device.received(answer), 1, "\(reason): \(device.process.output)")
            } else {
                XCTAssertEqual(device.received([0x20, 0x02]) + device.received([0x20, 0x03]), 0,
                               "\(reason): answered with a CONNACK\n\(device.process.output)")
            }
        }

        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .admission && $0.isFailure }.count == cases.count
        }
        let refused = sessions(events)
        XCTAssertEqual(refused.count, cases.count, "\(events)")
        for (session, expected) in zip(refused, cases) {
            let ending = Array(session.suffix(2))
            XCTAssertEqual(ending.map(\.kind), [.connect, .admission], "\(session)")
            XCTAssertEqual(ending.map(\.isFailure), [false, true], "one failure per refused device\n\(session)")
            XCTAssertEqual(ending.map { $0.details["reason"] }, [expected.reason, expected.reason], "\(session)")
            XCTAssertEqual(ending.last?.summary, "refused: \(expected.reason)")
        }
        try await traceText(gateway, ["--failures"], containing: cases.map { $0.reason })
        XCTAssertEqual(brokerConnectionCount(), brokerConnectionsBefore, "a refused device reached the broker\n\(broker.log)")
        XCTAssertFalse(gateway.output.contains("connected to broker"), gateway.output)

        // Negative control: a well-formed CONNECT sent the same way is admitted and answered by the broker.
        let good = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-1",
                                             clientID: uniqueClientID("raw-good"), directory: directory)
        try await good.waitForHandshake()
        try await good.connect()
        try await broker.waitForLog(" as \(good.clientID) (p2, c1, k60).")
        XCTAssertEqual(brokerConnectionCount(), brokerConnectionsBefore + 1, broker.log)
        good.input.close()
        try await good.waitForClose()
    }

    // MARK: max_connect_size

    func testCONNECTOverMaxConnectSizeIsRefusedBeforeTheBroker() async throws {
        let gateway = try await startAdmissionGateway(["max_connect_size: 128"])
        let topic = uniqueTopic("admission/size")
        let willTopic = "\(topic)/will"
        let observer = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let brokerConnectionsBefore = brokerConnectionCount()
        let bigWill = ["--will-topic", willTopic, "--will-payload", String(repeating: "w", count: 1000)]
        let ids = [uniqueClientID("big-will-v311"), uniqueClientID("big-will-v5")]

        // 3.1.1 has no return code for it: the gateway closes without a CONNACK.
        let refused311 = try await publish(through: gateway, topic: topic, clientID: ids[0], version: "mqttv311", extraArgs: bigWill)
        XCTAssertEqual(refused311.status, .exited(7), "MOSQ_ERR_CONN_LOST\n\(refused311)")
        XCTAssertTrue(refused311.stderr.contains("Error: The connection was lost."), "\(refused311)")
        let refused5 = try await publish(through: gateway, topic: topic, clientID: ids[1], version: "mqttv5", extraArgs: bigWill)
        XCTAssertEqual(refused5.status, .exited(0x95), "\(refused5)")
        XCTAssertTrue(refused5.stderr.contains("Connection error: Packet too large"), "\(refused5)")

        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .admission && $0.isFailure }.count == 2
        }
        let reasons = events.filter { $0.kind == .admission && $0.isFailure }.compactMap { $0.details["reason"] }
        // Fixed header 3 bytes (a 2-byte remaining length), variable header 10, then client id,
        // will topic and will payload, each after a 2-byte length.
        let size311 = 3 + 10 + 2 + ids[0].utf8.count + 2 + willTopic.utf8.count + 2 + 1000
        XCTAssertEqual(reasons.first, "CONNECT larger than 128 bytes (its fixed header announces \(size311))")
        XCTAssertTrue(reasons.last?.hasPrefix("CONNECT larger than 128 bytes (its fixed header announces 10") ?? false, "\(reasons)")
        XCTAssertFalse(events.contains { $0.kind == .upstream }, "\(events)")
        XCTAssertEqual(brokerConnectionCount(), brokerConnectionsBefore, "an oversized CONNECT reached the broker\n\(broker.log)")
        for id in ids { XCTAssertFalse(broker.log.contains(id), broker.log) }

        // Negative control: the same device with a small will fits the cap.
        let smallWill = ["--will-topic", willTopic, "--will-payload", String(repeating: "w", count: 10)]
        let admitted = try await publish(through: gateway, topic: topic, message: "small will", extraArgs: smallWill)
        XCTAssertEqual(admitted.status, .exited(0), "\(admitted)")
        let messages = try await observer.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["small will"])
        let after = try await traceEvents(gateway, ["device-1"]) { events in events.contains { $0.kind == .upstream } }
        XCTAssertEqual(after.last { $0.kind == .connect }?.details["will_topic"], willTopic)
    }

    // MARK: connect_timeout

    func testDeviceLeavingBeforeItsCONNECTIsForgottenAtOnceNotAtTheTimeout() async throws {
        // The default connect timeout (10 s) must not hold a socket for a client that already left.
        let gateway = try await startAdmissionGateway()
        let device = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-1",
                                               clientID: uniqueClientID("leaver"), directory: try makeTemporaryDirectory())
        try await device.waitForHandshake()
        let left = ContinuousClock.now
        device.input.close()  // s_client sends close_notify and exits
        _ = try await device.waitForClose()
        let events = try await traceEvents(gateway, ["device-1"], timeout: .seconds(5)) { events in
            events.contains { $0.kind == .admission && $0.isFailure }
        }
        XCTAssertLessThan(left.duration(to: .now), .seconds(5), "traced only at the connect timeout")
        let refusal = try XCTUnwrap(events.last { $0.kind == .admission })
        XCTAssertTrue(refusal.summary.contains("closed the connection before sending a complete CONNECT")
                      || refusal.summary.contains("ended before a complete CONNECT"), refusal.summary)
        XCTAssertFalse(events.contains { $0.kind == .upstream }, "\(events)")
    }

    func testDeviceSilentAfterTheHandshakeIsClosedAtTheConnectTimeout() async throws {
        let gateway = try await startAdmissionGateway(["connect_timeout: 1s"])
        let directory = try makeTemporaryDirectory()
        let reason = "no CONNECT within 1 s of the TLS handshake"
        let pacedID = uniqueClientID("paced")
        let connect = Self.connectPacket(clientID: pacedID)
        // A CONNECT cut off after its protocol name's first bytes: the gateway waits for the rest.
        let firstPart = Array(connect.prefix(7))

        // A device that says nothing, and one that stops in the middle of its CONNECT.
        for sent in [[], firstPart] {
            let device = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-1",
                                                   clientID: uniqueClientID("silent"), directory: directory)
            try await device.waitForHandshake()
            let handshakeSeen = ContinuousClock.now
            if !sent.isEmpty { try device.send(sent) }
            try await device.waitForClose(timeout: .seconds(10))
            let lasted = handshakeSeen.duration(to: .now)
            // The gateway's handshake ends a little after the device sees it: hence 0.8 s.
            XCTAssertGreaterThanOrEqual(lasted, .milliseconds(800), "closed before the connect timeout (sent \(sent))")
            XCTAssertLessThan(lasted, .seconds(5), "not closed promptly at the connect timeout (sent \(sent))")
        }
        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .admission && $0.isFailure }.count == 2
        }
        for session in sessions(events) {
            XCTAssertEqual(session.last?.kind, .admission, "\(session)")
            XCTAssertEqual(session.last?.summary, "refused: \(reason)", "\(session)")
            XCTAssertFalse(session.contains { $0.kind == .connect || $0.kind == .upstream }, "\(session)")
        }
        try await traceText(gateway, ["--failures"], containing: [reason])

        // Negative control: a CONNECT in two parts within the limit is admitted, and the session
        // it opens outlives the connect timeout (the timer ends with the CONNECT).
        let paced = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-1", clientID: pacedID,
                                              directory: directory)
        try await paced.waitForHandshake()
        try paced.send(firstPart)
        try await Task.sleep(for: .milliseconds(300))  // the device's own pace
        try paced.send(Array(connect.dropFirst(firstPart.count)))
        try await waitUntil(timeout: .seconds(10), "CONNACK for \(pacedID)", details: { paced.process.output }) {
            paced.received([0x20, 0x02, 0x00, 0x00]) == 1
        }
        // The paced device stays silent past connect_timeout: proven by a silent probe, opened now,
        // being closed by that timeout, rather than by sleeping.
        let probe = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-1",
                                              clientID: uniqueClientID("probe"), directory: directory)
        try await probe.waitForHandshake()
        _ = try await probe.waitForClose(timeout: .seconds(10))
        try paced.ping()
        try await paced.waitForPingResponses(1)
        paced.input.close()
        try await paced.waitForClose()
        let after = try await traceEvents(gateway, ["device-1"]) { events in events.contains { $0.kind == .disconnect } }
        XCTAssertEqual(after.filter { $0.kind == .admission && $0.isFailure }.count, 3, "the two silent devices and the probe\n\(after)")
        XCTAssertEqual(after.last { $0.kind == .connect }?.details["client_id"], pacedID)
    }

    // MARK: Lifecycle

    func testGoodSessionIsTracedFromAcceptToDisconnectInOrder() async throws {
        let gateway = try await startAdmissionGateway()
        let topic = uniqueTopic("admission/lifecycle")
        let clientID = uniqueClientID("lifecycle")
        let payload = "one QoS 1 message"
        let observer = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let published = try await publish(through: gateway, topic: topic, message: payload, clientID: clientID)
        XCTAssertEqual(published.status, .exited(0), "\(published)")
        _ = try await observer.waitForMessages(1)

        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.contains { $0.kind == .disconnect }
        }
        XCTAssertEqual(sessions(events).count, 1, "\(events)")
        let kinds = events.map(\.kind)
        XCTAssertEqual(kinds.count, 7, "\(kinds)")
        XCTAssertEqual(kinds.first, .accepted, "\(kinds)")
        // Both come from the end of the handshake; the product records the certificate first.
        XCTAssertEqual(Set(kinds.dropFirst().prefix(2)), [.tlsHandshake, .clientCertificate], "\(kinds)")
        XCTAssertEqual(Array(kinds.dropFirst(3)), [.connect, .admission, .upstream, .disconnect], "\(kinds)")
        XCTAssertEqual(events.map(\.time), events.map(\.time).sorted(), "times out of order")
        XCTAssertFalse(events.contains(where: \.isFailure), "\(events)")
        let first = try XCTUnwrap(events.first)
        for event in events {
            XCTAssertEqual(event.device, "device-1", "\(event)")
            XCTAssertEqual(event.connectionID, first.connectionID, "\(event)")
            XCTAssertEqual(event.remoteAddress, first.remoteAddress, "\(event)")
            XCTAssertEqual(event.serial, first.serial, "\(event)")
        }
        XCTAssertTrue(first.remoteAddress.hasPrefix("127.0.0.1:"), first.remoteAddress)

        func details(_ kind: TraceEvent.Kind) -> [String: String] { events.first { $0.kind == kind }?.details ?? [:] }
        XCTAssertEqual(details(.clientCertificate)["subject"], "CN=device-1")
        XCTAssertEqual(details(.clientCertificate)["serial"], first.serial)
        XCTAssertEqual(details(.tlsHandshake)["tls.version"]?.hasPrefix("TLSv1."), true, "\(details(.tlsHandshake))")
        XCTAssertEqual(details(.connect)["client_id"], clientID)
        XCTAssertEqual(details(.connect)["protocol"], "3.1.1")
        XCTAssertEqual(details(.connect)["keepalive"], "60")
        XCTAssertEqual(details(.admission)["identity"], "device-1")
        XCTAssertEqual(details(.upstream)["endpoint"], "127.0.0.1:\(broker.port!)")
        let disconnect = details(.disconnect)
        XCTAssertEqual(disconnect["closed_by"], "device", "\(disconnect)")
        // The plaintext of the session, counted exactly: CONNECT, PUBLISH (QoS 1) and DISCONNECT
        // from the device; CONNACK and PUBACK to it.
        let connectSize = 2 + 10 + 2 + clientID.utf8.count
        let publishSize = 2 + 2 + topic.utf8.count + 2 + payload.utf8.count
        XCTAssertEqual(disconnect["bytes_from_device"], "\(connectSize + publishSize + 2)", "\(disconnect)")
        XCTAssertEqual(disconnect["bytes_to_device"], "\(4 + 4)", "\(disconnect)")
        XCTAssertEqual(disconnect["packets_from_device"], "3", "\(disconnect)")
        XCTAssertEqual(disconnect["packets_to_device"], "2", "\(disconnect)")
    }

    // MARK: Helpers

    /// A 3.1.1-style CONNECT (protocol level 4, clean session, keepalive 60) under any protocol name.
    static func connectPacket(protocolName: String = "MQTT", clientID: String) -> [UInt8] {
        let name = Array(protocolName.utf8)
        let id = Array(clientID.utf8)
        let body: [UInt8] = [0x00, UInt8(name.count)] + name + [0x04, 0x02, 0x00, 0x3C] + [0x00, UInt8(id.count)] + id
        precondition(body.count < 128, "too long for a one-byte remaining length")
        return [0x10, UInt8(body.count)] + body
    }

    /// TCP connections the class's broker has accepted so far.
    func brokerConnectionCount() -> Int {
        broker.log.components(separatedBy: "New connection from ").count - 1
    }
}
