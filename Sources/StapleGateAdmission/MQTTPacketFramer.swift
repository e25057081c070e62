import NIOCore

/// Which way bytes flow through the gateway.
public enum MQTTDirection: String, Sendable, CaseIterable, CustomStringConvertible {
    case deviceToBroker = "device→broker"
    case brokerToDevice = "broker→device"

    public var description: String { rawValue }
}

/// What the framer saw of one PUBLISH: never its payload, only the payload's size.
public struct MQTTPublishSummary: Sendable, Equatable {
    public var direction: MQTTDirection
    /// The topic name; "(alias N)" for a 5.0 PUBLISH that names its topic by Topic Alias only.
    public var topic: String
    public var qos: MQTTQoS
    public var retain: Bool
    public var payloadSize: Int
    /// The whole packet, fixed header included.
    public var size: Int

    public init(direction: MQTTDirection, topic: String, qos: MQTTQoS, retain: Bool, payloadSize: Int, size: Int) {
        self.direction = direction
        self.topic = topic
        self.qos = qos
        self.retain = retain
        self.payloadSize = payloadSize
        self.size = size
    }
}

/// One report from the framer.
public enum MQTTPacketSummary: Sendable, Equatable {
    /// A complete packet other than PUBLISH, with its size (fixed header included).
    case packet(MQTTPacketType, size: Int)
    case publish(MQTTPublishSummary)
    /// The stream stopped looking like MQTT; the framer reports nothing more. Reported once.
    case desynchronised(reason: String)
}

/// Splits one direction of a session's byte stream into MQTT packets, for message trace.
///
/// It only looks: the caller forwards every buffer as it is, whatever the framer makes of it. It
/// keeps no payload (payload bytes are skipped by count) and of a PUBLISH's variable header only
/// the topic name, so its memory is bounded by the longest topic (64 KiB) whatever the packet
/// sizes. On input that breaks MQTT's framing rules it reports `.desynchronised` once and goes
/// quiet, rather than guessing where the next packet starts.
public struct MQTTPacketFramer: Sendable {
    /// Where in the current packet the next byte belongs.
    private enum Stage: Sendable {
        case fixedHeader
        case remainingLength(MQTTVariableByteInteger.Accumulator)
        case topicLength(firstByte: UInt8?)
        case topic(bytesLeft: Int)
        case packetIdentifier(bytesLeft: Int)
        case propertyLength(MQTTVariableByteInteger.Accumulator)
        case propertyIdentifier
        /// A one-, two- or four-byte integer property, read for the Topic Alias.
        case propertyInteger(identifier: UInt8, bytesLeft: Int, value: Int)
        case propertyVariableByteInteger
        /// The two-byte length of a string or binary property; `stringsLeft` counts this one.
        case propertyValueLength(firstByte: UInt8?, stringsLeft: Int)
        case propertyValueBytes(bytesLeft: Int, stringsLeft: Int)
        /// The rest of the packet (a PUBLISH's payload, any other packet's body), skipped.
        case rest
        case off

        var isInBody: Bool {
            switch self {
            case .fixedHeader, .remainingLength, .off: false
            default: true
            }
        }

        var isRest: Bool {
            if case .rest = self { true } else { false }
        }

        var isInProperties: Bool {
            switch self {
            case .propertyIdentifier, .propertyInteger, .propertyVariableByteInteger, .propertyValueLength, .propertyValueBytes: true
            default: false
            }
        }
    }

    public let protocolVersion: MQTTProtocolVersion
    public let direction: MQTTDirection
    public private(set) var isDesynchronised = false

    private var stage = Stage.fixedHeader
    /// Bytes of the stream seen so far, to say where a desynchronisation happened.
    private var streamOffset = 0

    // The packet being read.
    private var packetStart = 0
    private var firstByte: UInt8 = 0
    private var packetSize = 0
    private var packetBytesLeft = 0
    private var propertyBytesLeft = 0
    private var topic: [UInt8] = []
    private var topicAlias: Int?
    private var payloadSize = 0

    public init(protocolVersion: MQTTProtocolVersion, direction: MQTTDirection) {
        self.protocolVersion = protocolVersion
        self.direction = direction
    }

    /// Takes the next bytes of the stream (any split) and returns the packets they complete.
    public mutating func feed(_ buffer: ByteBuffer) -> [MQTTPacketSummary] {
        var summaries: [MQTTPacketSummary] = []
        let bytes = buffer.readableBytesView
        var index = bytes.startIndex
        while index < bytes.endIndex, !isDesynchronised {
            let before = stage
            let used: Int
            var problem: String?
            switch before {
            case .rest:
                used = min(bytes.endIndex - index, packetBytesLeft)
            case .topic(let bytesLeft):
                used = min(bytes.endIndex - index, bytesLeft)
                topic.append(contentsOf: bytes[index..<(index + used)])
                if used == bytesLeft { problem = endTopic() } else { stage = .topic(bytesLeft: bytesLeft - used) }
            case .propertyValueBytes(let bytesLeft, let stringsLeft):
                used = min(bytes.endIndex - index, bytesLeft, propertyBytesLeft)
                stage = used == bytesLeft
                    ? Self.afterString(stringsLeft: stringsLeft)
                    : .propertyValueBytes(bytesLeft: bytesLeft - used, stringsLeft: stringsLeft)
            default:
                used = 1
                problem = take(bytes[index])
            }
            index += used
            streamOffset += used
            if let problem {
                summaries.append(desynchronise(problem))
                break
            }
            if before.isInProperties {
                propertyBytesLeft -= used
                // The block's length says where the payload starts, even if its last property
                // claims to run further.
                if propertyBytesLeft == 0 { stage = .rest }
            }
            if before.isInBody { packetBytesLeft -= used }
            if stage.isRest, !before.isRest { payloadSize = packetBytesLeft }
            if stage.isInBody, packetBytesLeft == 0 {
                guard stage.isRest else {
                    summaries.append(desynchronise("PUBLISH ends inside its variable header"))
                    break
                }
                summaries.append(summary())
                startNextPacket()
            }
        }
        return summaries
    }

    /// One byte of the fixed header or of a PUBLISH's variable header; a reason if the stream
    /// stops making sense here.
    private mutating func take(_ byte: UInt8) -> String? {
        switch stage {
        case .fixedHeader:
            packetStart = streamOffset
            firstByte = byte
            stage = .remainingLength(.init())
            return checkFirstByte()
        case .remainingLength(var accumulator):
            switch accumulator.add(byte) {
            case .needMore:
                stage = .remainingLength(accumulator)
            case .tooLong:
                return "remaining length takes more than 4 bytes"
            case .complete(let length, let width):
                packetSize = 1 + width + length
                packetBytesLeft = length
                stage = firstByte >> 4 == MQTTPacketType.publish.rawValue ? .topicLength(firstByte: nil) : .rest
                return checkRemainingLength(length)
            }
        case .topicLength(nil):
            stage = .topicLength(firstByte: byte)
        case .topicLength(let high?):
            let length = Int(high) << 8 | Int(byte)
            // What follows the topic length must hold the topic and, at QoS > 0, the packet identifier.
            guard length + (publishQoS > 0 ? 2 : 0) <= packetBytesLeft - 1 else {
                return "PUBLISH topic length runs past the end of the packet"
            }
            if length > 0 { stage = .topic(bytesLeft: length) } else { return endTopic() }
        case .packetIdentifier(let bytesLeft):
            stage = bytesLeft > 1 ? .packetIdentifier(bytesLeft: bytesLeft - 1) : afterPacketIdentifier
        case .propertyLength(var accumulator):
            switch accumulator.add(byte) {
            case .needMore:
                stage = .propertyLength(accumulator)
            case .tooLong:
                return "PUBLISH property length takes more than 4 bytes"
            case .complete(let length, _):
                guard length <= packetBytesLeft - 1 else { return "PUBLISH properties run past the end of the packet" }
                propertyBytesLeft = length
                stage = length == 0 ? .rest : .propertyIdentifier
            }
        case .propertyIdentifier:
            stage = Self.propertyValueStage(identifier: byte)
        case .propertyInteger(let identifier, let bytesLeft, let value):
            let value = value << 8 | Int(byte)
            if bytesLeft > 1 {
                stage = .propertyInteger(identifier: identifier, bytesLeft: bytesLeft - 1, value: value)
            } else {
                if identifier == MQTTProperty.topicAlias { topicAlias = value }
                stage = .propertyIdentifier
            }
        case .propertyVariableByteInteger:
            if byte & 0x80 == 0 { stage = .propertyIdentifier }
        case .propertyValueLength(nil, let stringsLeft):
            stage = .propertyValueLength(firstByte: byte, stringsLeft: stringsLeft)
        case .propertyValueLength(let high?, let stringsLeft):
            let length = Int(high) << 8 | Int(byte)
            stage = length > 0
                ? .propertyValueBytes(bytesLeft: length, stringsLeft: stringsLeft)
                : Self.afterString(stringsLeft: stringsLeft)
        case .topic, .propertyValueBytes, .rest, .off:
            preconditionFailure("bulk stages are handled by feed")
        }
        return nil
    }

    // MARK: Steps of the variable header

    private var publishQoS: UInt8 { (firstByte >> 1) & 0x03 }

    private mutating func endTopic() -> String? {
        if MQTTString.problem(in: topic) != nil { return "PUBLISH topic is not a valid UTF-8 string" }
        stage = publishQoS > 0 ? .packetIdentifier(bytesLeft: 2) : afterPacketIdentifier
        return nil
    }

    private var afterPacketIdentifier: Stage {
        protocolVersion == .v5 ? .propertyLength(.init()) : .rest
    }

    private static func propertyValueStage(identifier: UInt8) -> Stage {
        switch MQTTProperty.valueType(of: identifier) {
        case .byte: .propertyInteger(identifier: identifier, bytesLeft: 1, value: 0)
        case .twoByteInteger: .propertyInteger(identifier: identifier, bytesLeft: 2, value: 0)
        case .fourByteInteger: .propertyInteger(identifier: identifier, bytesLeft: 4, value: 0)
        case .variableByteInteger: .propertyVariableByteInteger
        case .utf8String, .binaryData: .propertyValueLength(firstByte: nil, stringsLeft: 1)
        case .utf8StringPair: .propertyValueLength(firstByte: nil, stringsLeft: 2)
        // Unknown: its length cannot be known, so the rest of the block is stepped over.
        case nil: .propertyValueBytes(bytesLeft: .max, stringsLeft: 0)
        }
    }

    private static func afterString(stringsLeft: Int) -> Stage {
        stringsLeft > 1 ? .propertyValueLength(firstByte: nil, stringsLeft: stringsLeft - 1) : .propertyIdentifier
    }

    // MARK: Framing rules

    /// Packet type and fixed-header flags (3.1.1 §2.2, 5.0 §2.1.3).
    private func checkFirstByte() -> String? {
        guard let type = MQTTPacketType(rawValue: firstByte >> 4), type != .auth || protocolVersion == .v5 else {
            return "reserved packet type \(firstByte >> 4)"
        }
        let flags = firstByte & 0x0F
        switch type {
        case .publish:
            return publishQoS == 3 ? "PUBLISH with QoS 3" : nil
        case .pubrel, .subscribe, .unsubscribe:
            return flags == 0x02 ? nil : "\(type) with fixed header flags \(flags) (must be 2)"
        default:
            return flags == 0 ? nil : "\(type) with fixed header flags \(flags) (must be 0)"
        }
    }

    /// Remaining lengths each packet type can have (fixed-size packets, minimal bodies).
    private func checkRemainingLength(_ length: Int) -> String? {
        guard let type = MQTTPacketType(rawValue: firstByte >> 4) else { return nil }
        let v5 = protocolVersion == .v5
        let allowed: ClosedRange<Int>
        switch type {
        case .pingreq, .pingresp: allowed = 0...0
        case .disconnect: allowed = v5 ? 0...Int.max : 0...0
        case .connack, .puback, .pubrec, .pubrel, .pubcomp, .unsuback: allowed = v5 ? 2...Int.max : 2...2
        case .publish: allowed = (v5 ? 3 : 2)...Int.max
        case .auth: allowed = 0...Int.max
        case .subscribe, .suback, .unsubscribe: allowed = 3...Int.max
        case .connect: allowed = 10...Int.max
        }
        return allowed.contains(length) ? nil : "\(type) with remaining length \(length)"
    }

    // MARK: Packet boundaries

    private func summary() -> MQTTPacketSummary {
        let type = MQTTPacketType(rawValue: firstByte >> 4) ?? .connect
        guard type == .publish else { return .packet(type, size: packetSize) }
        var name = String(decoding: topic, as: UTF8.self)
        if name.isEmpty, let topicAlias { name = "(alias \(topicAlias))" }
        return .publish(MQTTPublishSummary(
            direction: direction, topic: name, qos: MQTTQoS(rawValue: publishQoS) ?? .atMostOnce,
            retain: firstByte & 0x01 != 0, payloadSize: payloadSize, size: packetSize))
    }

    private mutating func startNextPacket() {
        stage = .fixedHeader
        topic = []
        topicAlias = nil
        propertyBytesLeft = 0
        payloadSize = 0
    }

    private mutating func desynchronise(_ problem: String) -> MQTTPacketSummary {
        stage = .off
        isDesynchronised = true
        topic = []
        let place = "packet starting at byte \(packetStart) of the \(direction) stream"
        return .desynchronised(reason: "\(problem) (\(place)); message trace stops here")
    }
}
