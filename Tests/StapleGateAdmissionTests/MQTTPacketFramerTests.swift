import NIOCore
import StapleGateAdmission
import TestSupport
import XCTest

/// PUBLISH packets laid out as in 3.1.1 §3.3 and 5.0 §3.3: fixed header (type 3, DUP, QoS,
/// RETAIN), topic name, packet identifier at QoS > 0, 5.0 properties, payload.
func publishPacket(
    topic: String, qos: UInt8 = 0, retain: Bool = false, properties: [UInt8]? = nil, payload: [UInt8]
) -> [UInt8] {
    var body = ConnectBuilder.string(topic)
    if qos > 0 { body += [0x12, 0x34] }
    if let properties { body += ConnectBuilder.varint(properties.count) + properties }
    body += payload
    return [0x30 | qos << 1 | (retain ? 1 : 0)] + ConnectBuilder.varint(body.count) + body
}

final class MQTTPacketFramerTests: XCTestCase {
    func feedWhole(_ bytes: [UInt8], _ version: MQTTProtocolVersion, _ direction: MQTTDirection = .deviceToBroker) -> [MQTTPacketSummary] {
        var framer = MQTTPacketFramer(protocolVersion: version, direction: direction)
        return framer.feed(ByteBuffer(bytes: bytes))
    }

    func feedOneByteAtATime(_ bytes: [UInt8], _ version: MQTTProtocolVersion) -> [MQTTPacketSummary] {
        var framer = MQTTPacketFramer(protocolVersion: version, direction: .deviceToBroker)
        return bytes.flatMap { framer.feed(ByteBuffer(bytes: [$0])) }
    }

    func publish(_ topic: String, _ qos: MQTTQoS, retain: Bool = false, payload: Int, size: Int,
                 direction: MQTTDirection = .deviceToBroker) -> MQTTPacketSummary {
        .publish(MQTTPublishSummary(direction: direction, topic: topic, qos: qos, retain: retain, payloadSize: payload, size: size))
    }

    /// A 3.1.1 session: QoS 0, QoS 1 (+ PUBACK), QoS 2 (+ PUBREC, PUBREL, PUBCOMP), SUBSCRIBE,
    /// PINGREQ, DISCONNECT.
    var session311: [UInt8] {
        publishPacket(topic: "a/b", payload: Array("hello".utf8))
            + publishPacket(topic: "q1", qos: 1, retain: true, payload: [1, 2, 3])
            + [0x40, 0x02, 0x12, 0x34]
            + publishPacket(topic: "q2", qos: 2, payload: Array(repeating: 9, count: 200))
            + [0x50, 0x02, 0x12, 0x34, 0x62, 0x02, 0x12, 0x34, 0x70, 0x02, 0x12, 0x34]
            + [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x23, 0x00]
            + [0xC0, 0x00, 0xE0, 0x00]
    }

    var expected311: [MQTTPacketSummary] {
        [
            publish("a/b", .atMostOnce, payload: 5, size: 12),
            publish("q1", .atLeastOnce, retain: true, payload: 3, size: 11),
            .packet(.puback, size: 4),
            publish("q2", .exactlyOnce, payload: 200, size: 209),
            .packet(.pubrec, size: 4), .packet(.pubrel, size: 4), .packet(.pubcomp, size: 4),
            .packet(.subscribe, size: 8),
            .packet(.pingreq, size: 2), .packet(.disconnect, size: 2),
        ]
    }

    func testPublishAtEachQoSIn311() {
        XCTAssertEqual(feedWhole(session311, .v3_1_1), expected311)
        XCTAssertEqual(feedWhole(session311, .v3_1), expected311)
    }

    func testOneByteAtATimeGivesTheSameSummaries() {
        XCTAssertEqual(feedOneByteAtATime(session311, .v3_1_1), expected311)
        XCTAssertEqual(feedOneByteAtATime(session5, .v5), expected5)
    }

    func testEverySplitInTwoGivesTheSameSummaries() {
        for (bytes, version, expected) in [(session311, MQTTProtocolVersion.v3_1_1, expected311), (session5, .v5, expected5)] {
            for cut in 0...bytes.count {
                var framer = MQTTPacketFramer(protocolVersion: version, direction: .deviceToBroker)
                let summaries = framer.feed(ByteBuffer(bytes: bytes[..<cut])) + framer.feed(ByteBuffer(bytes: bytes[cut...]))
                XCTAssertEqual(summaries, expected, "cut at \(cut)")
            }
        }
    }

    /// A 5.0 session: PUBLISH with properties (Payload Format, User Property, Message Expiry),
    /// one that names its topic only by Topic Alias, a PUBACK with reason code and properties,
    /// an AUTH, and a DISCONNECT with a reason code.
    var session5: [UInt8] {
        // Correlation Data, then Topic Alias 7.
        let aliasOnly: [UInt8] = [0x09] + ConnectBuilder.binary([1, 2]) + [0x23, 0x00, 0x07]
        let properties: [UInt8] = [0x01, 0x01, 0x26] + ConnectBuilder.string("k") + ConnectBuilder.string("v") + [0x02, 0, 0, 0, 60]
        return publishPacket(topic: "s/1", qos: 1, properties: properties, payload: Array("{}".utf8))
            + publishPacket(topic: "", qos: 2, retain: true, properties: aliasOnly, payload: [0])
            + publishPacket(topic: "plain", properties: [], payload: [])
            + [0x40, 0x07, 0x12, 0x34, 0x10, 0x03, 0x1F, 0x00, 0x00]
            + [0xF0, 0x02, 0x18, 0x00]
            + [0xE0, 0x01, 0x00]
    }

    var expected5: [MQTTPacketSummary] {
        [
            publish("s/1", .atLeastOnce, payload: 2, size: 26),
            publish("(alias 7)", .exactlyOnce, retain: true, payload: 1, size: 16),
            publish("plain", .atMostOnce, payload: 0, size: 10),
            .packet(.puback, size: 9),
            .packet(.auth, size: 4),
            .packet(.disconnect, size: 3),
        ]
    }

    func testPublishWithPropertiesIn5() {
        XCTAssertEqual(feedWhole(session5, .v5), expected5)
    }

    func testTopicAndAliasTogetherReportTheTopic() {
        let bytes = publishPacket(topic: "named", properties: [0x23, 0x00, 0x02], payload: [1])
        XCTAssertEqual(feedWhole(bytes, .v5), [publish("named", .atMostOnce, payload: 1, size: bytes.count)])
    }

    func testUnknownPropertyStopsThePropertyWalkButNotTheFraming() {
        let bytes = publishPacket(topic: "", properties: [0x7E, 0x01, 0x23, 0x00, 0x03], payload: [1, 2]) + [0xC0, 0x00]
        XCTAssertEqual(feedWhole(bytes, .v5), [publish("", .atMostOnce, payload: 2, size: bytes.count - 2), .packet(.pingreq, size: 2)])
    }

    func testDirectionIsReported() {
        let bytes = publishPacket(topic: "down", payload: [0])
        XCTAssertEqual(feedWhole(bytes, .v3_1_1, .brokerToDevice),
                       [publish("down", .atMostOnce, payload: 1, size: 9, direction: .brokerToDevice)])
    }

    func testLargePayloadIsSkippedAcrossManyBuffers() {
        let payload = 3_000_000
        let packet = publishPacket(topic: "big", qos: 1, payload: Array(repeating: 0xAB, count: payload))
        var framer = MQTTPacketFramer(protocolVersion: .v3_1_1, direction: .deviceToBroker)
        var summaries: [MQTTPacketSummary] = []
        var offset = 0
        while offset < packet.count {
            let end = min(packet.count, offset + 16_384)
            summaries += framer.feed(ByteBuffer(bytes: packet[offset..<end]))
            offset = end
        }
        XCTAssertEqual(summaries, [publish("big", .atLeastOnce, payload: payload, size: packet.count)])
    }

    func testFeedDoesNotTouchTheBuffer() {
        var framer = MQTTPacketFramer(protocolVersion: .v3_1_1, direction: .deviceToBroker)
        let buffer = ByteBuffer(bytes: session311)
        let copy = buffer
        _ = framer.feed(buffer)
        XCTAssertEqual(buffer, copy)
        XCTAssertEqual(buffer.readableBytes, session311.count)
    }

    // MARK: Garbage

    func assertDesynchronises(_ bytes: [UInt8], _ version: MQTTProtocolVersion, after expected: [MQTTPacketSummary] = [],
                              reason: String, file: StaticString = #filePath, line: UInt = #line) {
        var framer = MQTTPacketFramer(protocolVersion: version, direction: .deviceToBroker)
        let summaries = framer.feed(ByteBuffer(bytes: bytes))
        XCTAssertEqual(Array(summaries.dropLast()), expected, file: file, line: line)
        guard case .desynchronised(let text)? = summaries.last else {
            return XCTFail("no desynchronisation: \(summaries)", file: file, line: line)
        }
        XCTAssertTrue(text.hasPrefix(reason), "\(text)", file: file, line: line)
        XCTAssertTrue(framer.isDesynchronised, file: file, line: line)
        XCTAssertEqual(framer.feed(ByteBuffer(bytes: session311)), [], "quiet after desynchronising", file: file, line: line)
    }

    func testGarbageDesynchronisesOnce() {
        assertDesynchronises([0xC0, 0x00, 0x00, 0x00], .v3_1_1, after: [.packet(.pingreq, size: 2)],
                             reason: "reserved packet type 0 (packet starting at byte 2 of the device→broker stream)")
        assertDesynchronises([0xF0, 0x00], .v3_1_1, reason: "reserved packet type 15")
        assertDesynchronises([0x36, 0x05], .v3_1_1, reason: "PUBLISH with QoS 3")
        assertDesynchronises([0x80, 0x05], .v3_1_1, reason: "SUBSCRIBE with fixed header flags 0 (must be 2)")
        assertDesynchronises([0xC1, 0x00], .v3_1_1, reason: "PINGREQ with fixed header flags 1 (must be 0)")
        assertDesynchronises([0xC0, 0x01], .v3_1_1, reason: "PINGREQ with remaining length 1")
        assertDesynchronises([0x40, 0x03], .v3_1_1, reason: "PUBACK with remaining length 3")
        assertDesynchronises([0xE0, 0x01], .v3_1_1, reason: "DISCONNECT with remaining length 1")
        assertDesynchronises([0x30, 0xFF, 0xFF, 0xFF, 0xFF], .v5, reason: "remaining length takes more than 4 bytes")
        assertDesynchronises([0x30, 0x04, 0x00, 0x05, 0x61, 0x62], .v3_1_1, reason: "PUBLISH topic length runs past the end of the packet")
        assertDesynchronises([0x32, 0x04, 0x00, 0x01, 0x61, 0x00], .v3_1_1, reason: "PUBLISH topic length runs past the end of the packet")
        assertDesynchronises([0x30, 0x03, 0x00, 0x01, 0xFF], .v3_1_1, reason: "PUBLISH topic is not a valid UTF-8 string")
        assertDesynchronises([0x30, 0x04, 0x00, 0x01, 0x61, 0x05], .v5, reason: "PUBLISH properties run past the end of the packet")
        assertDesynchronises([0x30, 0x03, 0x00, 0x01, 0x61], .v5, reason: "PUBLISH ends inside its variable header")
    }

    func testRandomGarbageNeverCrashesAndDesynchronisesAtMostOnce() {
        var random = SplitMix64(seed: 0x5EED_F00D)
        for _ in 0..<200 {
            let bytes = (0..<random.below(2_000)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            var framer = MQTTPacketFramer(protocolVersion: random.below(2) == 0 ? .v3_1_1 : .v5, direction: .deviceToBroker)
            var summaries: [MQTTPacketSummary] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + 1 + random.below(64))
                summaries += framer.feed(ByteBuffer(bytes: bytes[offset..<end]))
                offset = end
            }
            let desynchronisations = summaries.filter { if case .desynchronised = $0 { true } else { false } }
            XCTAssertLessThanOrEqual(desynchronisations.count, 1)
            if let desynchronisation = desynchronisations.first {
                XCTAssertEqual(summaries.last, desynchronisation, "nothing is reported after desynchronising")
            }
        }
    }
}
