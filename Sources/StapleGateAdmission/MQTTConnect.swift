import NIOCore

/// The MQTT protocol versions a device may speak, by the protocol level byte of its CONNECT.
/// 3.1 is IBM's "MQIsdp" protocol; 3.1.1 and 5.0 are the OASIS standards, both named "MQTT".
public enum MQTTProtocolVersion: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case v3_1 = 3
    case v3_1_1 = 4
    case v5 = 5

    /// The protocol name a CONNECT of this version carries before its level byte.
    public var protocolName: String { self == .v3_1 ? "MQIsdp" : "MQTT" }

    public var description: String {
        switch self {
        case .v3_1: "3.1"
        case .v3_1_1: "3.1.1"
        case .v5: "5.0"
        }
    }
}

/// Quality of service of a PUBLISH (or of a will message, which becomes one).
public enum MQTTQoS: UInt8, Sendable, CaseIterable {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2
}

/// MQTT control packet types (the high nibble of the first byte). 0 is reserved in every
/// version; 15 is reserved before 5.0, where it became AUTH.
public enum MQTTPacketType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case connect = 1, connack, publish, puback, pubrec, pubrel, pubcomp
    case subscribe, suback, unsubscribe, unsuback, pingreq, pingresp, disconnect, auth

    /// The name the specifications use.
    public var description: String {
        switch self {
        case .connect: "CONNECT"
        case .connack: "CONNACK"
        case .publish: "PUBLISH"
        case .puback: "PUBACK"
        case .pubrec: "PUBREC"
        case .pubrel: "PUBREL"
        case .pubcomp: "PUBCOMP"
        case .subscribe: "SUBSCRIBE"
        case .suback: "SUBACK"
        case .unsubscribe: "UNSUBSCRIBE"
        case .unsuback: "UNSUBACK"
        case .pingreq: "PINGREQ"
        case .pingresp: "PINGRESP"
        case .disconnect: "DISCONNECT"
        case .auth: "AUTH"
        }
    }
}

/// A device's CONNECT packet, as read by `MQTTConnectParser`.
///
/// Only the values that the gateway looks at or may rewrite are decoded; the 5.0 properties stay
/// raw bytes, so that a re-encoded packet carries them exactly as the device sent them.
public struct MQTTConnect: Sendable, Equatable {
    /// The will message: published by the broker for the device if the connection ends without
    /// a DISCONNECT.
    public struct Will: Sendable, Equatable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: MQTTQoS
        public var retain: Bool
        /// 5.0 will properties, raw (without their length prefix); empty before 5.0.
        public var properties: [UInt8]

        public var payloadSize: Int { payload.count }

        public init(topic: String, payload: [UInt8], qos: MQTTQoS = .atMostOnce, retain: Bool = false, properties: [UInt8] = []) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
            self.properties = properties
        }
    }

    public var protocolVersion: MQTTProtocolVersion
    public var clientID: String
    public var username: String?
    public var password: [UInt8]?
    /// "Clean Session" before 5.0, "Clean Start" in 5.0: the same flag bit.
    public var cleanStart: Bool
    public var keepAlive: UInt16
    public var will: Will?
    /// 5.0 CONNECT properties, raw (without their length prefix); empty before 5.0.
    public var properties: [UInt8]
    /// A Mosquitto bridge's CONNECT (`try_private`: the level's high bit set), kept through a
    /// re-encoding so that the broker still treats the connection as a bridge.
    public var isBridge = false

    public init(
        protocolVersion: MQTTProtocolVersion, clientID: String, username: String? = nil, password: [UInt8]? = nil,
        cleanStart: Bool = true, keepAlive: UInt16 = 60, will: Will? = nil, properties: [UInt8] = []
    ) {
        self.protocolVersion = protocolVersion
        self.clientID = clientID
        self.username = username
        self.password = password
        self.cleanStart = cleanStart
        self.keepAlive = keepAlive
        self.will = will
        self.properties = properties
    }

    /// The same CONNECT with the broker-facing identity put in place of the device's own
    /// credentials: the username becomes `username` and any password is dropped, so the device
    /// cannot claim a different identity than its certificate's.
    public func replacingCredentials(username: String) -> MQTTConnect {
        var connect = self
        connect.username = username
        connect.password = nil
        return connect
    }

    /// The packet on the wire, fixed header included. Parsing it gives back this value.
    ///
    /// Before 5.0 `properties` and the will's properties are not written (those versions have
    /// none). Every string and binary field must be at most 65535 bytes long, as MQTT's two-byte
    /// length prefixes require; values read by the parser always are.
    public func encoded() -> [UInt8] {
        var body = ByteBuffer()
        body.writeMQTTString(protocolVersion.protocolName)
        body.writeInteger(protocolVersion.rawValue | (isBridge ? 0x80 : 0))
        body.writeInteger(connectFlags)
        body.writeInteger(keepAlive)
        let hasProperties = protocolVersion == .v5
        if hasProperties { body.writeLengthPrefixedBytes(properties, strategy: MQTTVariableByteInteger()) }
        body.writeMQTTString(clientID)
        if let will {
            if hasProperties { body.writeLengthPrefixedBytes(will.properties, strategy: MQTTVariableByteInteger()) }
            body.writeMQTTString(will.topic)
            body.writeMQTTBinary(will.payload)
        }
        if let username { body.writeMQTTString(username) }
        if let password { body.writeMQTTBinary(password) }

        var packet = ByteBuffer()
        packet.writeInteger(MQTTPacketType.connect.rawValue << 4)
        packet.writeLengthPrefixedBuffer(body, strategy: MQTTVariableByteInteger())
        return Array(packet.readableBytesView)
    }

    /// Byte 8 of the variable header, built from the fields (3.1.1 §3.1.2.3, 5.0 §3.1.2.3).
    private var connectFlags: UInt8 {
        var flags: UInt8 = 0
        if cleanStart { flags |= ConnectFlags.cleanStart }
        if let will {
            flags |= ConnectFlags.will | (will.qos.rawValue << ConnectFlags.willQoSShift)
            if will.retain { flags |= ConnectFlags.willRetain }
        }
        if password != nil { flags |= ConnectFlags.password }
        if username != nil { flags |= ConnectFlags.username }
        return flags
    }
}

/// Bits of the CONNECT flags byte.
enum ConnectFlags {
    static let reserved: UInt8 = 0x01
    static let cleanStart: UInt8 = 0x02
    static let will: UInt8 = 0x04
    static let willQoS: UInt8 = 0x18
    static let willQoSShift: UInt8 = 3
    static let willRetain: UInt8 = 0x20
    static let password: UInt8 = 0x40
    static let username: UInt8 = 0x80
}

// MARK: - Wire primitives shared by the parser, the encoder and the framer

/// MQTT's Variable Byte Integer (3.1.1 §2.2.3, 5.0 §1.5.5): seven bits per byte, least
/// significant group first, high bit set on every byte but the last, at most four bytes. As a
/// NIO encoding strategy, so ByteBuffer's length-prefix helpers write remaining lengths and
/// property lengths.
struct MQTTVariableByteInteger: NIOBinaryIntegerEncodingStrategy {
    static let maximum = 268_435_455

    /// A Variable Byte Integer read one byte at a time, for input that arrives in pieces.
    struct Accumulator {
        enum Step: Equatable { case needMore, complete(value: Int, width: Int), tooLong }

        private var value = 0
        private var width = 0

        mutating func add(_ byte: UInt8) -> Step {
            value |= Int(byte & 0x7F) << (7 * width)
            width += 1
            if byte & 0x80 == 0 { return .complete(value: value, width: width) }
            return width == 4 ? .tooLong : .needMore
        }
    }

    /// Decodes the integer at `index` without moving the reader index. Non-minimal encodings are
    /// accepted: 3.1.1 does not forbid them, and telling 5.0 apart needs the protocol level,
    /// which comes after the first such integer.
    static func peek(_ buffer: ByteBuffer, at index: Int) -> Accumulator.Step {
        var accumulator = Accumulator()
        var position = index
        while let byte = buffer.getInteger(at: position, as: UInt8.self) {
            position += 1
            let step = accumulator.add(byte)
            if step != .needMore { return step }
        }
        return .needMore
    }

    func readInteger<IntegerType: FixedWidthInteger>(as: IntegerType.Type, from buffer: inout ByteBuffer) -> IntegerType? {
        guard case .complete(let value, let width) = Self.peek(buffer, at: buffer.readerIndex),
            let integer = IntegerType(exactly: value)
        else { return nil }
        buffer.moveReaderIndex(forwardBy: width)
        return integer
    }

    func writeInteger<IntegerType: FixedWidthInteger>(_ integer: IntegerType, to buffer: inout ByteBuffer) -> Int {
        precondition(integer >= 0 && integer <= Self.maximum, "\(integer) does not fit an MQTT Variable Byte Integer")
        var remaining = Int(integer)
        var written = 0
        repeat {
            var byte = UInt8(remaining & 0x7F)
            remaining >>= 7
            if remaining > 0 { byte |= 0x80 }
            written += buffer.writeInteger(byte)
        } while remaining > 0
        return written
    }
}

extension ByteBuffer {
    /// A UTF-8 Encoded String: two-byte big-endian length, then the bytes.
    mutating func writeMQTTString(_ string: String) {
        writeMQTTBinary(string.utf8)
    }

    /// Binary Data: two-byte big-endian length, then the bytes.
    mutating func writeMQTTBinary(_ bytes: some Collection<UInt8>) {
        precondition(bytes.count <= UInt16.max, "MQTT strings and binary fields are at most 65535 bytes")
        writeInteger(UInt16(bytes.count))
        writeBytes(bytes)
    }
}

/// The 5.0 properties (§2.2.2.2): an identifier, then a value of a type fixed by the identifier.
/// The parser needs the types to check a property block's shape, the framer to step over
/// properties to a PUBLISH's Topic Alias.
enum MQTTProperty {
    enum ValueType { case byte, twoByteInteger, fourByteInteger, variableByteInteger, utf8String, binaryData, utf8StringPair }

    static let topicAlias: UInt8 = 0x23

    /// Properties a CONNECT may carry (§3.1.2.11).
    static let allowedInConnect: Set<UInt8> = [0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27]
    /// Properties a will may carry (§3.1.3.2).
    static let allowedInWill: Set<UInt8> = [0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]

    static func valueType(of identifier: UInt8) -> ValueType? {
        switch identifier {
        case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: .byte
        case 0x13, 0x21, 0x22, 0x23: .twoByteInteger
        case 0x02, 0x11, 0x18, 0x27: .fourByteInteger
        case 0x0B: .variableByteInteger
        case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F: .utf8String
        case 0x09, 0x16: .binaryData
        case 0x26: .utf8StringPair
        default: nil
        }
    }
}

/// Whether `bytes` are well-formed UTF-8 and free of U+0000, as MQTT requires of its strings.
/// (ByteBuffer.readUTF8ValidatedString would do the first half but needs macOS 15, and the
/// package still builds for macOS 14.) In valid UTF-8, a zero byte can only be U+0000.
enum MQTTString {
    enum Problem { case invalidUTF8, containsNull }

    static func problem(in bytes: some Collection<UInt8>) -> Problem? {
        let decoded = String(decoding: bytes, as: UTF8.self)
        // Decoding replaces ill-formed sequences, so the bytes survive it only if they were valid.
        guard decoded.utf8.elementsEqual(bytes) else { return .invalidUTF8 }
        return bytes.contains(0) ? .containsNull : nil
    }
}
