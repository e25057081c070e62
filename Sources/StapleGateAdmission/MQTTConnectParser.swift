import NIOCore

/// Why a device's first packet was not accepted as a CONNECT, in words for the operator's log.
public struct MQTTConnectRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    /// The device's protocol version, when its CONNECT got far enough to tell; the CONNACK that
    /// answers the refusal must be in that version.
    public var protocolVersion: MQTTProtocolVersion?
    /// The CONNACK the specifications have for this refusal, if any; nil: close without one
    /// (a packet that is not a CONNECT, or not MQTT at all, gets no answer).
    public var connackRefusal: MQTTConnackRefusal?

    public init(reason: String, protocolVersion: MQTTProtocolVersion?, connackRefusal: MQTTConnackRefusal?) {
        self.reason = reason
        self.protocolVersion = protocolVersion
        self.connackRefusal = connackRefusal
    }

    /// What to send the device before closing; empty: just close.
    ///
    /// An unsupported protocol level is answered in the 3.1.1 layout: 3.1.1 requires return code
    /// 0x01 there, and 5.0 (§3.1.2.2) expects clients to understand that answer from a server
    /// that does not speak their version.
    public var connackBytes: [UInt8] {
        guard let connackRefusal else { return [] }
        guard let protocolVersion else {
            return connackRefusal == .unacceptableProtocolVersion ? MQTTConnack.bytes(for: connackRefusal, version: .v3_1_1) : []
        }
        return MQTTConnack.bytes(for: connackRefusal, version: protocolVersion)
    }

    public var description: String { reason }
}

/// Reads a device's first packet, which must be a CONNECT of MQTT 3.1, 3.1.1 or 5.0, and checks
/// it against the rules that make a CONNECT well formed in its version. Semantic checks (client
/// identifier length, session expiry, duplicate properties, ...) are left to the broker, which
/// receives the packet if it passes here.
public enum MQTTConnectParser {
    public enum Outcome: Sendable, Equatable {
        /// The bytes so far are a proper prefix of a CONNECT that fits the cap: read more.
        case needMoreBytes
        /// A CONNECT occupying the first `packetLength` bytes; any bytes after them are the
        /// session's and must reach the broker after it.
        case connect(MQTTConnect, packetLength: Int)
        case refused(MQTTConnectRefusal)
    }

    /// Parses the readable bytes of `buffer` (the reader index does not move).
    /// `maximumPacketSize` bounds the whole CONNECT, fixed header included, and is checked as
    /// soon as the fixed header announces the length, so an oversized packet is never buffered.
    public static func parse(_ buffer: ByteBuffer, maximumPacketSize: Int) -> Outcome {
        guard let firstByte = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return .needMoreBytes }
        let typeNumber = firstByte >> 4
        guard typeNumber == MQTTPacketType.connect.rawValue else {
            let name = MQTTPacketType(rawValue: typeNumber).map { "\($0)" } ?? "of reserved type 0"
            return refuse("first packet is \(name), not CONNECT", version: nil, connack: nil)
        }

        let lengthIndex = buffer.readerIndex + 1
        let remainingLength: Int
        let lengthWidth: Int
        switch MQTTVariableByteInteger.peek(buffer, at: lengthIndex) {
        case .needMore:
            return .needMoreBytes
        case .tooLong:
            return malformed("remaining length takes more than 4 bytes", version: nil)
        case .complete(let value, let width):
            (remainingLength, lengthWidth) = (value, width)
        }
        let bodyIndex = lengthIndex + lengthWidth
        let packetLength = 1 + lengthWidth + remainingLength
        if packetLength > maximumPacketSize {
            // The version is only known if the device's first read already reached it.
            let version = peekVersion(buffer, at: bodyIndex, remainingLength: remainingLength)
            return refuse(
                "CONNECT larger than \(maximumPacketSize) bytes (its fixed header announces \(packetLength))",
                version: version, connack: .packetTooLarge)
        }
        if firstByte & 0x0F != 0 {
            let flags = "0x" + String(firstByte & 0x0F, radix: 16, uppercase: true)
            let version = peekVersion(buffer, at: bodyIndex, remainingLength: remainingLength)
            return malformed("fixed header flags are \(flags), must be 0", version: version)
        }
        guard let body = buffer.getSlice(at: bodyIndex, length: remainingLength) else { return .needMoreBytes }

        var reader = ConnectReader(body: body)
        do {
            let connect = try reader.readConnect()
            return .connect(connect, packetLength: packetLength)
        } catch {
            return .refused(error)
        }
    }

    /// Convenience for bytes that are not in a ByteBuffer yet.
    public static func parse(_ bytes: [UInt8], maximumPacketSize: Int) -> Outcome {
        parse(ByteBuffer(bytes: bytes), maximumPacketSize: maximumPacketSize)
    }

    private static func refuse(_ reason: String, version: MQTTProtocolVersion?, connack: MQTTConnackRefusal?) -> Outcome {
        .refused(MQTTConnectRefusal(reason: reason, protocolVersion: version, connackRefusal: connack))
    }

    private static func malformed(_ problem: String, version: MQTTProtocolVersion?) -> Outcome {
        refuse("malformed CONNECT: \(problem)", version: version, connack: .malformedPacket)
    }

    /// The protocol version from a packet body that may be incomplete, when its name and level
    /// are already there and supported; nil otherwise.
    private static func peekVersion(_ buffer: ByteBuffer, at bodyIndex: Int, remainingLength: Int) -> MQTTProtocolVersion? {
        guard let available = buffer.getSlice(at: bodyIndex, length: min(buffer.writerIndex - bodyIndex, remainingLength))
        else { return nil }
        var reader = ConnectReader(body: available)
        return try? reader.readProtocolVersion().version
    }
}

/// Reads the variable header and payload of a CONNECT (its body after the fixed header),
/// throwing a refusal that names the first rule the body breaks.
private struct ConnectReader {
    var body: ByteBuffer
    var version: MQTTProtocolVersion?

    init(body: ByteBuffer) {
        self.body = body
    }

    mutating func readConnect() throws(MQTTConnectRefusal) -> MQTTConnect {
        let (version, isBridge) = try readProtocolVersion()
        self.version = version
        let flags = try readByte("connect flags")
        let keepAlive = try readUInt16("keep alive")

        // Flag rules: 3.1.1 §3.1.2.3-§3.1.2.9, 5.0 §3.1.2.3-§3.1.2.9.
        if flags & ConnectFlags.reserved != 0 { throw malformed("reserved connect flag (bit 0) is set") }
        let hasWill = flags & ConnectFlags.will != 0
        let willQoSBits = (flags & ConnectFlags.willQoS) >> ConnectFlags.willQoSShift
        guard let willQoS = MQTTQoS(rawValue: willQoSBits) else { throw malformed("will QoS is 3 (only 0, 1 and 2 exist)") }
        let willRetain = flags & ConnectFlags.willRetain != 0
        if !hasWill && willQoS != .atMostOnce { throw malformed("will QoS \(willQoS.rawValue) without the will flag") }
        if !hasWill && willRetain { throw malformed("will retain without the will flag") }
        let hasUsername = flags & ConnectFlags.username != 0
        let hasPassword = flags & ConnectFlags.password != 0
        if hasPassword && !hasUsername && version != .v5 {
            throw malformed("password flag without the username flag (allowed only from MQTT 5.0)")
        }

        let properties = try version == .v5 ? readProperties("properties", allowed: MQTTProperty.allowedInConnect) : []
        let clientID = try readString("client identifier")
        var will: MQTTConnect.Will?
        if hasWill {
            let willProperties = try version == .v5 ? readProperties("will properties", allowed: MQTTProperty.allowedInWill) : []
            let topic = try readString("will topic")
            let payload = try readBinary("will payload")
            will = MQTTConnect.Will(topic: topic, payload: payload, qos: willQoS, retain: willRetain, properties: willProperties)
        }
        let username = try hasUsername ? readString("username") : nil
        let password = try hasPassword ? readBinary("password") : nil
        if body.readableBytes > 0 {
            let count = body.readableBytes
            throw malformed("\(count) \(count == 1 ? "byte" : "bytes") left over after the payload")
        }
        var connect = MQTTConnect(
            protocolVersion: version, clientID: clientID, username: username, password: password,
            cleanStart: flags & ConnectFlags.cleanStart != 0, keepAlive: keepAlive, will: will, properties: properties)
        connect.isBridge = isBridge
        return connect
    }

    /// Protocol name and level, which must be one of the three pairs this gateway speaks; a
    /// 3.1 or 3.1.1 level with the high bit set is a Mosquitto bridge (`try_private`), which the
    /// broker behind us understands.
    mutating func readProtocolVersion() throws(MQTTConnectRefusal) -> (version: MQTTProtocolVersion, isBridge: Bool) {
        let nameBytes = try readLengthPrefixed("protocol name")
        let name = Array(nameBytes.readableBytesView)
        guard name == Array("MQTT".utf8) || name == Array("MQIsdp".utf8) else {
            throw MQTTConnectRefusal(
                reason: "unsupported protocol \(Self.printable(name)) (expected \"MQTT\" or \"MQIsdp\")",
                protocolVersion: nil, connackRefusal: nil)
        }
        let nameString = String(decoding: name, as: UTF8.self)
        let rawLevel = try readByte("protocol level")
        let isBridge = rawLevel & 0x80 != 0 && (rawLevel & 0x7F == 3 || rawLevel & 0x7F == 4)
        let level = isBridge ? rawLevel & 0x7F : rawLevel
        guard let version = MQTTProtocolVersion(rawValue: level), version.protocolName == nameString else {
            throw MQTTConnectRefusal(
                reason: "unsupported protocol \(nameString) level \(level)",
                protocolVersion: nil, connackRefusal: .unacceptableProtocolVersion)
        }
        return (version, isBridge)
    }

    // MARK: Fields

    private mutating func readByte(_ field: String) throws(MQTTConnectRefusal) -> UInt8 {
        guard let byte = body.readInteger(as: UInt8.self) else { throw malformed("packet ends before the \(field)") }
        return byte
    }

    private mutating func readUInt16(_ field: String) throws(MQTTConnectRefusal) -> UInt16 {
        guard let value = body.readInteger(as: UInt16.self) else { throw malformed("packet ends inside the \(field)") }
        return value
    }

    /// A field with a two-byte length prefix (strings and binary data).
    private mutating func readLengthPrefixed(_ field: String) throws(MQTTConnectRefusal) -> ByteBuffer {
        guard body.readableBytes >= 2 else { throw malformed("packet ends before the \(field) length") }
        guard let slice = body.readLengthPrefixedSlice(as: UInt16.self) else {
            throw malformed("\(field) length runs past the end of the packet")
        }
        return slice
    }

    private mutating func readString(_ field: String) throws(MQTTConnectRefusal) -> String {
        let slice = try readLengthPrefixed(field)
        try checkString(slice.readableBytesView, field)
        return String(buffer: slice)
    }

    private mutating func readBinary(_ field: String) throws(MQTTConnectRefusal) -> [UInt8] {
        Array(try readLengthPrefixed(field).readableBytesView)
    }

    private func checkString(_ bytes: ByteBufferView, _ field: String) throws(MQTTConnectRefusal) {
        switch MQTTString.problem(in: bytes) {
        case nil: return
        case .invalidUTF8: throw malformed("\(field) is not valid UTF-8")
        case .containsNull: throw malformed("\(field) contains the character U+0000")
        }
    }

    /// A 5.0 property block: Variable Byte Integer length, then properties. Kept raw, but each
    /// property is stepped over to check that it may appear here and fits the block (an
    /// identifier that does not belong to the packet is a Malformed Packet, 5.0 §2.2.2.2).
    private mutating func readProperties(_ field: String, allowed: Set<UInt8>) throws(MQTTConnectRefusal) -> [UInt8] {
        let lengthIndex = body.readerIndex
        switch MQTTVariableByteInteger.peek(body, at: lengthIndex) {
        case .needMore: throw malformed("packet ends inside the \(field) length")
        case .tooLong: throw malformed("\(field) length takes more than 4 bytes")
        case .complete: break
        }
        guard var block = body.readLengthPrefixedSlice(strategy: MQTTVariableByteInteger()) else {
            throw malformed("\(field) length runs past the end of the packet")
        }
        let raw = Array(block.readableBytesView)
        while let identifier = block.readInteger(as: UInt8.self) {
            let property = "property 0x" + String(identifier, radix: 16, uppercase: true)
            guard let type = MQTTProperty.valueType(of: identifier), allowed.contains(identifier) else {
                throw malformed("\(field) contain \(property), which does not belong there")
            }
            switch Self.skipValue(of: type, in: &block) {
            case .skipped: continue
            case .runsPastEnd: throw malformed("\(property) runs past the end of the \(field)")
            case .badString: throw malformed("\(property) is not valid UTF-8 or contains U+0000")
            }
        }
        return raw
    }

    private enum ValueCheck { case skipped, runsPastEnd, badString }

    /// Steps over one property value, checking that it fits and that its strings are strings.
    private static func skipValue(of type: MQTTProperty.ValueType, in block: inout ByteBuffer) -> ValueCheck {
        func skip(_ count: Int) -> ValueCheck {
            guard block.readableBytes >= count else { return .runsPastEnd }
            block.moveReaderIndex(forwardBy: count)
            return .skipped
        }
        func skipString(utf8: Bool) -> ValueCheck {
            guard let slice = block.readLengthPrefixedSlice(as: UInt16.self) else { return .runsPastEnd }
            return utf8 && MQTTString.problem(in: slice.readableBytesView) != nil ? .badString : .skipped
        }
        switch type {
        case .byte: return skip(1)
        case .twoByteInteger: return skip(2)
        case .fourByteInteger: return skip(4)
        case .variableByteInteger:
            return block.readEncodedInteger(as: Int.self, strategy: MQTTVariableByteInteger()) == nil ? .runsPastEnd : .skipped
        case .utf8String: return skipString(utf8: true)
        case .binaryData: return skipString(utf8: false)
        case .utf8StringPair:
            let name = skipString(utf8: true)
            return name == .skipped ? skipString(utf8: true) : name
        }
    }

    private func malformed(_ problem: String) -> MQTTConnectRefusal {
        MQTTConnectRefusal(reason: "malformed CONNECT: \(problem)", protocolVersion: version, connackRefusal: .malformedPacket)
    }

    /// A protocol name for the log: quoted if it is printable ASCII, hex otherwise (it may be
    /// anything, such as the start of a TLS record or an HTTP request line).
    private static func printable(_ bytes: [UInt8]) -> String {
        let shown = bytes.prefix(16)
        if shown.allSatisfy({ (0x20...0x7E).contains($0) }) {
            return "\"" + String(decoding: shown, as: UTF8.self) + (bytes.count > 16 ? "…" : "") + "\""
        }
        let hex = shown.map { byte in (byte < 0x10 ? "0" : "") + String(byte, radix: 16) }.joined(separator: " ")
        return "name bytes \(hex)\(bytes.count > 16 ? " …" : "")"
    }
}
