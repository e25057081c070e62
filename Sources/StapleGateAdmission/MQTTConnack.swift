/// The refusals a gateway answers a CONNECT with, named after their meaning rather than their
/// code: the code depends on the device's protocol version.
public enum MQTTConnackRefusal: Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// The protocol name is MQTT's but the level is not one this gateway speaks.
    case unacceptableProtocolVersion
    case identifierRejected
    case serverUnavailable
    /// The gateway holds as many sessions as it may (`listen.max_sessions`). 5.0 says so ("Server
    /// busy"); 3.1 and 3.1.1 have no such code and say "server unavailable".
    case serverBusy
    case notAuthorized
    /// The CONNECT exceeds the configured cap. 5.0 only; earlier versions can only close.
    case packetTooLarge
    /// The CONNECT breaks the packet's rules. 5.0 only; earlier versions can only close.
    case malformedPacket

    public var description: String {
        switch self {
        case .unacceptableProtocolVersion: "unacceptable protocol version"
        case .identifierRejected: "identifier rejected"
        case .serverUnavailable: "server unavailable"
        case .serverBusy: "server busy"
        case .notAuthorized: "not authorized"
        case .packetTooLarge: "packet too large"
        case .malformedPacket: "malformed packet"
        }
    }
}

/// The CONNACK packets a refusal is answered with.
public enum MQTTConnack {
    /// A complete CONNACK refusing the connection, in the layout of `version`; empty when that
    /// version has no code for the refusal, in which case the connection is closed without one
    /// (3.1.1 §4.8: "close the Network Connection").
    public static func bytes(for refusal: MQTTConnackRefusal, version: MQTTProtocolVersion) -> [UInt8] {
        let type = MQTTPacketType.connack.rawValue << 4
        switch version {
        case .v3_1, .v3_1_1:
            // Byte 1 is "Session Present" in 3.1.1 and unused in 3.1: 0 in both.
            guard let code = returnCode(for: refusal) else { return [] }
            return [type, 0x02, 0x00, code]
        case .v5:
            // Connect Acknowledge Flags 0, the Reason Code, and an empty property block.
            return [type, 0x03, 0x00, reasonCode(for: refusal), 0x00]
        }
    }

    /// 3.1 and 3.1.1 Connect Return Codes (3.1.1 §3.2.2.3; 3.1 uses the same values).
    static func returnCode(for refusal: MQTTConnackRefusal) -> UInt8? {
        switch refusal {
        case .unacceptableProtocolVersion: 0x01
        case .identifierRejected: 0x02
        case .serverUnavailable, .serverBusy: 0x03
        case .notAuthorized: 0x05
        case .packetTooLarge, .malformedPacket: nil
        }
    }

    /// 5.0 CONNACK Reason Codes (5.0 §3.2.2.2).
    static func reasonCode(for refusal: MQTTConnackRefusal) -> UInt8 {
        switch refusal {
        case .unacceptableProtocolVersion: 0x84
        case .identifierRejected: 0x85
        case .serverUnavailable: 0x88
        case .serverBusy: 0x89
        case .notAuthorized: 0x87
        case .packetTooLarge: 0x95
        case .malformedPacket: 0x81
        }
    }
}
