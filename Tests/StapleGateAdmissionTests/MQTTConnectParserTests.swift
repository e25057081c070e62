import NIOCore
import StapleGateAdmission
import XCTest

/// CONNECT packets sent by real clients. Captured from mosquitto_pub 2.0.11 (libmosquitto
/// 2.0.11) with a one-shot Python TCP listener on 127.0.0.1 that recorded the first bytes of
/// the connection:
///   mosquitto_pub -h 127.0.0.1 -p PORT -V mqttv31|mqttv311|mqttv5 -t t -m x -i my-client \
///     -u user -P pass -k 30 --will-topic w --will-payload p
enum CapturedConnect {
    static let mqtt31 = [UInt8](hex: "102900064d514973647003c6001e00096d792d636c69656e74000177000170000475736572000470617373")
    static let mqtt311 = [UInt8](hex: "102700044d51545404c6001e00096d792d636c69656e74000177000170000475736572000470617373")
    /// libmosquitto adds Receive Maximum 20 (0x21 00 14) and an empty will property block.
    static let mqtt5 = [UInt8](hex: "102c00044d51545405c6001e0321001400096d792d636c69656e7400000177000170000475736572000470617373")

    static func expected(_ version: MQTTProtocolVersion) -> MQTTConnect {
        MQTTConnect(
            protocolVersion: version, clientID: "my-client", username: "user", password: Array("pass".utf8),
            cleanStart: true, keepAlive: 30, will: .init(topic: "w", payload: Array("p".utf8)),
            properties: version == .v5 ? [0x21, 0x00, 0x14] : [])
    }

    static let all: [(MQTTProtocolVersion, [UInt8])] = [(.v3_1, mqtt31), (.v3_1_1, mqtt311), (.v5, mqtt5)]
}

extension Array where Element == UInt8 {
    init(hex: String) {
        let digits = [Character](hex.filter { !$0.isWhitespace })
        self = stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
    }
}

/// Builds CONNECT packets field by field, following the byte layout of the specifications
/// (3.1.1 §3.1, 5.0 §3.1), so that tests can break exactly one rule at a time.
struct ConnectBuilder {
    var name = "MQTT"
    var level: UInt8 = 4
    var flags: UInt8 = 0x02
    var keepAlive: UInt16 = 60
    var properties: [UInt8]?
    var payload: [UInt8] = string("")

    static func string(_ value: String) -> [UInt8] { binary(Array(value.utf8)) }
    static func binary(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes }

    static func varint(_ value: Int) -> [UInt8] {
        var value = value
        var bytes: [UInt8] = []
        repeat {
            var byte = UInt8(value & 0x7F)
            value >>= 7
            if value > 0 { byte |= 0x80 }
            bytes.append(byte)
        } while value > 0
        return bytes
    }

    var body: [UInt8] {
        var body = Self.string(name) + [level, flags, UInt8(keepAlive >> 8), UInt8(keepAlive & 0xFF)]
        if let properties { body += Self.varint(properties.count) + properties }
        return body + payload
    }

    var bytes: [UInt8] { [0x10] + Self.varint(body.count) + body }
}

final class MQTTConnectParserTests: XCTestCase {
    func parse(_ bytes: [UInt8], cap: Int = 65_536) -> MQTTConnectParser.Outcome {
        MQTTConnectParser.parse(bytes, maximumPacketSize: cap)
    }

    func refusal(_ bytes: [UInt8], cap: Int = 65_536, file: StaticString = #filePath, line: UInt = #line) -> MQTTConnectRefusal? {
        guard case .refused(let refusal) = parse(bytes, cap: cap) else {
            XCTFail("expected a refusal, got \(parse(bytes, cap: cap))", file: file, line: line)
            return nil
        }
        return refusal
    }

    func assertRefused(
        _ bytes: [UInt8], _ reason: String, version: MQTTProtocolVersion? = nil, cap: Int = 65_536,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        guard let refusal = refusal(bytes, cap: cap, file: file, line: line) else { return }
        XCTAssertEqual(refusal.reason, reason, file: file, line: line)
        XCTAssertEqual(refusal.protocolVersion, version, "protocol version", file: file, line: line)
    }

    // MARK: Valid CONNECTs

    func testRealClientsConnectOfEachVersion() {
        for (version, bytes) in CapturedConnect.all {
            XCTAssertEqual(parse(bytes), .connect(CapturedConnect.expected(version), packetLength: bytes.count), "\(version)")
        }
    }

    func testSpecMinimalConnect311() {
        // Clean session, keep alive 60, zero-length client identifier (3.1.1 §3.1.3.1 allows it).
        let bytes: [UInt8] = [0x10, 0x0C, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00]
        XCTAssertEqual(parse(bytes), .connect(MQTTConnect(protocolVersion: .v3_1_1, clientID: "", keepAlive: 60), packetLength: 14))
    }

    func testConnect31WithRetainedQoS2WillAndNoCredentials() {
        var builder = ConnectBuilder(name: "MQIsdp", level: 3, flags: 0x04 | 0x10 | 0x20, keepAlive: 0)
        builder.payload = ConnectBuilder.string("sensor-1") + ConnectBuilder.string("status/sensor-1") + ConnectBuilder.binary([0, 1, 2])
        let will = MQTTConnect.Will(topic: "status/sensor-1", payload: [0, 1, 2], qos: .exactlyOnce, retain: true)
        let expected = MQTTConnect(protocolVersion: .v3_1, clientID: "sensor-1", cleanStart: false, keepAlive: 0, will: will)
        XCTAssertEqual(parse(builder.bytes), .connect(expected, packetLength: builder.bytes.count))
        XCTAssertEqual(expected.will?.payloadSize, 3)
    }

    func testConnect5WithPropertiesWillPropertiesAndPasswordWithoutUsername() {
        // Session Expiry 3600, User Property ("site", "north"), Maximum Packet Size 1024.
        let properties: [UInt8] = [0x11, 0, 0, 0x0E, 0x10, 0x26] + ConnectBuilder.string("site") + ConnectBuilder.string("north")
            + [0x27, 0, 0, 0x04, 0x00]
        // Will Delay 5, Content Type "text/plain".
        let willProperties: [UInt8] = [0x18, 0, 0, 0, 5, 0x03] + ConnectBuilder.string("text/plain")
        var builder = ConnectBuilder(level: 5, flags: 0x40 | 0x04 | 0x08 | 0x02, keepAlive: 10, properties: properties)
        builder.payload = ConnectBuilder.string("dev-ü") + ConnectBuilder.varint(willProperties.count) + willProperties
            + ConnectBuilder.string("gone") + ConnectBuilder.binary([]) + ConnectBuilder.binary([0xFF, 0x00])
        let expected = MQTTConnect(
            protocolVersion: .v5, clientID: "dev-ü", password: [0xFF, 0x00], cleanStart: true, keepAlive: 10,
            will: .init(topic: "gone", payload: [], qos: .atLeastOnce, properties: willProperties), properties: properties)
        XCTAssertEqual(parse(builder.bytes), .connect(expected, packetLength: builder.bytes.count))
    }

    func testBytesAfterTheConnectBelongToTheSession() {
        let pingreq: [UInt8] = [0xC0, 0x00]
        XCTAssertEqual(
            parse(CapturedConnect.mqtt311 + pingreq),
            .connect(CapturedConnect.expected(.v3_1_1), packetLength: CapturedConnect.mqtt311.count))
    }

    func testReadsFromTheReaderIndexWithoutMovingIt() {
        var buffer = ByteBuffer(bytes: [0xAA, 0xBB] + CapturedConnect.mqtt5)
        buffer.moveReaderIndex(forwardBy: 2)
        let before = buffer
        XCTAssertEqual(
            MQTTConnectParser.parse(buffer, maximumPacketSize: 100),
            .connect(CapturedConnect.expected(.v5), packetLength: CapturedConnect.mqtt5.count))
        XCTAssertEqual(buffer, before)
    }

    func testEveryPrefixOfAValidConnectNeedsMoreBytes() {
        var long = ConnectBuilder(level: 5, flags: 0xC2, properties: [0x21, 0, 5])
        long.payload = ConnectBuilder.string(String(repeating: "c", count: 200)) + ConnectBuilder.string("u") + ConnectBuilder.binary([1])
        for bytes in CapturedConnect.all.map(\.1) + [long.bytes] {
            for count in 0..<bytes.count {
                XCTAssertEqual(parse(Array(bytes.prefix(count))), .needMoreBytes, "prefix of \(count) bytes")
            }
        }
    }

    // MARK: Size cap

    func testOversizeIsRefusedFromTheFixedHeaderAlone() {
        // Remaining length 65536 (0x80 0x80 0x04): the body has not arrived and need not.
        assertRefused([0x10, 0x80, 0x80, 0x04], "CONNECT larger than 65536 bytes (its fixed header announces 65540)")
        guard let refusal = refusal([0x10, 0x80, 0x80, 0x04]) else { return }
        XCTAssertEqual(refusal.connackRefusal, .packetTooLarge)
        XCTAssertEqual(refusal.connackBytes, [], "no 3.x code, version unknown: just close")
    }

    func testCapCountsTheWholePacket() {
        let bytes = CapturedConnect.mqtt311
        XCTAssertEqual(parse(bytes, cap: bytes.count), .connect(CapturedConnect.expected(.v3_1_1), packetLength: bytes.count))
        // The whole packet is there, so the refusal can say which version to answer in.
        assertRefused(bytes, "CONNECT larger than 40 bytes (its fixed header announces 41)", version: .v3_1_1, cap: bytes.count - 1)
    }

    func testOversize5WhoseLevelAlreadyArrivedGetsPacketTooLarge() {
        var builder = ConnectBuilder(level: 5, properties: [])
        builder.payload = ConnectBuilder.string(String(repeating: "x", count: 300))
        guard let refusal = refusal(Array(builder.bytes.prefix(20)), cap: 256) else { return }
        XCTAssertEqual(refusal.protocolVersion, .v5)
        XCTAssertEqual(refusal.connackBytes, [0x20, 0x03, 0x00, 0x95, 0x00])
    }

    // MARK: Fixed header

    func testFirstPacketMustBeConnect() {
        assertRefused([0x30, 0x03, 0x00, 0x01, 0x74], "first packet is PUBLISH, not CONNECT")
        assertRefused([0xC0, 0x00], "first packet is PINGREQ, not CONNECT")
        assertRefused([0x00], "first packet is of reserved type 0, not CONNECT")
        assertRefused(Array("GET / HTTP/1.1\r\n".utf8), "first packet is PUBACK, not CONNECT")
        XCTAssertEqual(refusal([0x30])?.connackBytes, [])
    }

    func testFixedHeaderFlagsMustBeZero() {
        var bytes = CapturedConnect.mqtt5
        bytes[0] = 0x12
        assertRefused(bytes, "malformed CONNECT: fixed header flags are 0x2, must be 0", version: .v5)
    }

    func testRemainingLengthOfMoreThanFourBytes() {
        assertRefused([0x10, 0xFF, 0xFF, 0xFF, 0xFF], "malformed CONNECT: remaining length takes more than 4 bytes")
        XCTAssertEqual(parse([0x10, 0xFF, 0xFF, 0xFF]), .needMoreBytes)
    }

    // MARK: Protocol name and level

    func testUnsupportedProtocols() {
        assertRefused(ConnectBuilder(name: "HTTP").bytes, "unsupported protocol \"HTTP\" (expected \"MQTT\" or \"MQIsdp\")")
        assertRefused(ConnectBuilder(level: 6).bytes, "unsupported protocol MQTT level 6")
        assertRefused(ConnectBuilder(level: 3).bytes, "unsupported protocol MQTT level 3")
        assertRefused(ConnectBuilder(name: "MQIsdp", level: 4).bytes, "unsupported protocol MQIsdp level 4")
        assertRefused(ConnectBuilder(level: 0x85).bytes, "unsupported protocol MQTT level 133")
        assertRefused(ConnectBuilder(name: "\u{1}\u{2}").bytes, "unsupported protocol name bytes 01 02 (expected \"MQTT\" or \"MQIsdp\")")
    }

    func testAMosquittoBridgeCONNECTIsAcceptedAndKeepsItsMarkThroughARewrite() {
        // try_private: the level's high bit (0x84 = bridge, 3.1.1), which the broker behind us understands.
        guard case let .connect(connect, _) = parse(ConnectBuilder(level: 0x84).bytes) else { return XCTFail("bridge refused") }
        XCTAssertEqual(connect.protocolVersion, .v3_1_1)
        XCTAssertTrue(connect.isBridge)
        let rewritten = connect.replacingCredentials(username: "device-1").encoded()
        guard case let .connect(again, _) = parse(rewritten) else { return XCTFail("rewritten bridge CONNECT refused") }
        XCTAssertTrue(again.isBridge)
        XCTAssertEqual(again.username, "device-1")
    }

    func testUnsupportedLevelIsAnsweredWithReturnCode1AndUnknownNameIsNot() {
        XCTAssertEqual(refusal(ConnectBuilder(level: 6).bytes)?.connackBytes, [0x20, 0x02, 0x00, 0x01])
        XCTAssertEqual(refusal(ConnectBuilder(name: "MQTX").bytes)?.connackBytes, [])
    }

    // MARK: Connect flags

    func testReservedFlag() {
        assertRefused(ConnectBuilder(flags: 0x03).bytes, "malformed CONNECT: reserved connect flag (bit 0) is set", version: .v3_1_1)
    }

    func testWillFlagsConsistency() {
        var will = ConnectBuilder(flags: 0x04 | 0x18)
        will.payload += ConnectBuilder.string("w") + ConnectBuilder.string("p")
        assertRefused(will.bytes, "malformed CONNECT: will QoS is 3 (only 0, 1 and 2 exist)", version: .v3_1_1)
        assertRefused(ConnectBuilder(flags: 0x08).bytes, "malformed CONNECT: will QoS 1 without the will flag", version: .v3_1_1)
        assertRefused(ConnectBuilder(level: 5, flags: 0x10, properties: []).bytes,
                      "malformed CONNECT: will QoS 2 without the will flag", version: .v5)
        assertRefused(ConnectBuilder(flags: 0x20).bytes, "malformed CONNECT: will retain without the will flag", version: .v3_1_1)
    }

    func testPasswordWithoutUsernameIsMalformedBefore5() {
        for (name, level) in [("MQIsdp", UInt8(3)), ("MQTT", 4)] {
            var builder = ConnectBuilder(name: name, level: level, flags: 0x40)
            builder.payload += ConnectBuilder.string("secret")
            assertRefused(builder.bytes, "malformed CONNECT: password flag without the username flag (allowed only from MQTT 5.0)",
                          version: MQTTProtocolVersion(rawValue: level))
        }
    }

    // MARK: Strings and lengths

    func testClientIdentifierLengthRunsPastTheEnd() {
        var builder = ConnectBuilder()
        builder.payload = [0x00, 0x05, 0x61]
        assertRefused(builder.bytes, "malformed CONNECT: client identifier length runs past the end of the packet", version: .v3_1_1)
        builder.payload = [0x00]
        assertRefused(builder.bytes, "malformed CONNECT: packet ends before the client identifier length", version: .v3_1_1)
    }

    func testVariableHeaderCutShort() {
        assertRefused([0x10, 0x04, 0x00, 0x04, 0x4D, 0x51], "malformed CONNECT: protocol name length runs past the end of the packet")
        assertRefused([0x10, 0x06] + ConnectBuilder.string("MQTT"), "malformed CONNECT: packet ends before the protocol level")
        assertRefused([0x10, 0x07] + ConnectBuilder.string("MQTT") + [4],
                      "malformed CONNECT: packet ends before the connect flags", version: .v3_1_1)
        assertRefused([0x10, 0x09] + ConnectBuilder.string("MQTT") + [4, 2, 0],
                      "malformed CONNECT: packet ends inside the keep alive", version: .v3_1_1)
    }

    func testStringsMustBeUTF8WithoutNull() {
        var builder = ConnectBuilder()
        builder.payload = ConnectBuilder.binary([0xC3, 0x28])
        assertRefused(builder.bytes, "malformed CONNECT: client identifier is not valid UTF-8", version: .v3_1_1)
        builder.payload = ConnectBuilder.binary([0x61, 0x00])
        assertRefused(builder.bytes, "malformed CONNECT: client identifier contains the character U+0000", version: .v3_1_1)
        // An encoded surrogate (U+D800) is not UTF-8 either.
        builder = ConnectBuilder(flags: 0x82)
        builder.payload = ConnectBuilder.string("id") + ConnectBuilder.binary([0xED, 0xA0, 0x80])
        assertRefused(builder.bytes, "malformed CONNECT: username is not valid UTF-8", version: .v3_1_1)
        builder = ConnectBuilder(flags: 0x06)
        builder.payload = ConnectBuilder.string("id") + ConnectBuilder.binary([0xFF]) + ConnectBuilder.string("p")
        assertRefused(builder.bytes, "malformed CONNECT: will topic is not valid UTF-8", version: .v3_1_1)
    }

    func testFieldsMissingFromThePayload() {
        var builder = ConnectBuilder(flags: 0xC6)
        builder.payload = ConnectBuilder.string("id") + ConnectBuilder.string("w")
        assertRefused(builder.bytes, "malformed CONNECT: packet ends before the will payload length", version: .v3_1_1)
        builder.payload += ConnectBuilder.string("p") + ConnectBuilder.string("user")
        assertRefused(builder.bytes, "malformed CONNECT: packet ends before the password length", version: .v3_1_1)
    }

    func testTrailingBytesInsideThePacket() {
        var builder = ConnectBuilder()
        builder.payload = ConnectBuilder.string("id") + [0x00]
        assertRefused(builder.bytes, "malformed CONNECT: 1 byte left over after the payload", version: .v3_1_1)
        // A username without the username flag is just trailing bytes.
        builder.payload = ConnectBuilder.string("id") + ConnectBuilder.string("user")
        assertRefused(builder.bytes, "malformed CONNECT: 6 bytes left over after the payload", version: .v3_1_1)
    }

    // MARK: 5.0 properties

    func testPropertyBlocks() {
        let malformed = "malformed CONNECT: "
        assertRefused(ConnectBuilder(level: 5, properties: [0x23, 0x00, 0x01]).bytes,
                      malformed + "properties contain property 0x23, which does not belong there", version: .v5)
        assertRefused(ConnectBuilder(level: 5, properties: [0x11, 0x00, 0x00]).bytes,
                      malformed + "property 0x11 runs past the end of the properties", version: .v5)
        assertRefused(ConnectBuilder(level: 5, properties: [0x7F]).bytes,
                      malformed + "properties contain property 0x7F, which does not belong there", version: .v5)
        assertRefused(ConnectBuilder(level: 5, properties: [0x15] + ConnectBuilder.binary([0xC0, 0x80])).bytes,
                      malformed + "property 0x15 is not valid UTF-8 or contains U+0000", version: .v5)
        assertRefused(ConnectBuilder(level: 5, properties: [0x26] + ConnectBuilder.string("k") + [0x00]).bytes,
                      malformed + "property 0x26 runs past the end of the properties", version: .v5)

        var builder = ConnectBuilder(level: 5, properties: [])
        builder.payload = [0x05] + ConnectBuilder.string("id")
        builder.properties = nil
        assertRefused(builder.bytes, malformed + "properties length runs past the end of the packet", version: .v5)
        builder.payload = [0x80, 0x80, 0x80, 0x80, 0x01]
        assertRefused(builder.bytes, malformed + "properties length takes more than 4 bytes", version: .v5)
        builder.payload = [0x80]
        assertRefused(builder.bytes, malformed + "packet ends inside the properties length", version: .v5)

        builder = ConnectBuilder(level: 5, flags: 0x06, properties: [])
        builder.payload = ConnectBuilder.string("id") + [0x05, 0x11, 0, 0, 0, 1] + ConnectBuilder.string("w") + ConnectBuilder.string("p")
        assertRefused(builder.bytes, malformed + "will properties contain property 0x11, which does not belong there", version: .v5)
    }

    func testMalformed5IsAnsweredWithReasonCode0x81AndMalformed311IsNot() {
        XCTAssertEqual(refusal(ConnectBuilder(level: 5, flags: 0x03, properties: []).bytes)?.connackBytes, [0x20, 0x03, 0x00, 0x81, 0x00])
        XCTAssertEqual(refusal(ConnectBuilder(flags: 0x03).bytes)?.connackBytes, [])
    }

    // MARK: Encoding

    func testEncodingRealClientsConnectGivesTheSameBytes() {
        for (version, bytes) in CapturedConnect.all {
            XCTAssertEqual(CapturedConnect.expected(version).encoded(), bytes, "\(version)")
        }
    }

    func testEncodedLongConnectUsesTwoByteRemainingLengthAndRoundTrips() {
        let connect = MQTTConnect(
            protocolVersion: .v5, clientID: String(repeating: "é", count: 100), username: "u", cleanStart: false, keepAlive: 65535,
            will: .init(topic: "t/#", payload: Array(repeating: 7, count: 300), qos: .exactlyOnce, retain: true, properties: [0x01, 0x01]),
            properties: [0x17, 0x01])
        let bytes = connect.encoded()
        XCTAssertEqual(Array(bytes.prefix(3)), [0x10] + ConnectBuilder.varint(bytes.count - 3))
        XCTAssertEqual(parse(bytes), .connect(connect, packetLength: bytes.count))
    }

    func testReplacingCredentials() {
        for (version, bytes) in CapturedConnect.all {
            guard case .connect(let connect, _) = parse(bytes) else { return XCTFail("\(version)") }
            let replaced = connect.replacingCredentials(username: "CN=device-42")
            var expected = connect
            expected.username = "CN=device-42"
            expected.password = nil
            XCTAssertEqual(replaced, expected)
            let encoded = replaced.encoded()
            XCTAssertEqual(parse(encoded), .connect(expected, packetLength: encoded.count), "\(version)")
            // Username flag kept, password flag (0x40) cleared, everything else as the device sent it.
            let flagsIndex = version == .v3_1 ? 11 : 9
            XCTAssertEqual(encoded[flagsIndex], 0x86)
        }
        let anonymous = MQTTConnect(protocolVersion: .v3_1_1, clientID: "x")
        XCTAssertEqual(anonymous.replacingCredentials(username: "dev").username, "dev")
    }

    func testVersionDescriptions() {
        XCTAssertEqual(MQTTProtocolVersion.allCases.map(\.description), ["3.1", "3.1.1", "5.0"])
    }
}
