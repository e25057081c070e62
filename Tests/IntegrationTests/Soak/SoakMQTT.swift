import NIOCore

/// The few MQTT 3.1.1 packets a soak device sends and reads, byte for byte (a client library
/// would retry and reconnect on its own and hide exactly what the soak counts).
enum SoakMQTT {
    enum Packet: Equatable {
        case connack(returnCode: UInt8)
        case puback(packetID: UInt16)
        case other(type: UInt8)
    }

    /// CONNECT: clean session, keepalive 60 s.
    static func connect(clientID: String) -> [UInt8] {
        let id = Array(clientID.utf8)
        let body: [UInt8] = [0x00, 0x04] + Array("MQTT".utf8) + [0x04, 0x02, 0x00, 0x3C]
            + [UInt8(id.count >> 8), UInt8(id.count & 0xFF)] + id
        return [0x10] + SequencedPublisher.remainingLength(body.count) + body
    }

    /// PUBLISH at QoS 1.
    static func publish(topic: String, packetID: UInt16, payload: String) -> [UInt8] {
        let name = Array(topic.utf8)
        let body: [UInt8] = [UInt8(name.count >> 8), UInt8(name.count & 0xFF)] + name
            + [UInt8(packetID >> 8), UInt8(packetID & 0xFF)] + Array(payload.utf8)
        return [0x32] + SequencedPublisher.remainingLength(body.count) + body
    }

    static let disconnect: [UInt8] = [0xE0, 0x00]

    /// The next whole packet at the start of `buffer` (consumed), or nil until more bytes come.
    static func nextPacket(_ buffer: inout ByteBuffer) -> Packet? {
        let view = buffer.readableBytesView
        guard let first = view.first else { return nil }
        var length = 0, multiplier = 1, index = view.startIndex + 1
        while true {
            guard index < view.endIndex, index - view.startIndex <= 4 else { return nil }
            let byte = view[index]
            length += Int(byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if byte & 0x80 == 0 { break }
        }
        let header = index - view.startIndex
        guard view.count >= header + length else { return nil }
        let body = Array(view[index..<(index + length)])
        buffer.moveReaderIndex(forwardBy: header + length)
        switch first >> 4 {
        case 2 where body.count >= 2: return .connack(returnCode: body[1])
        case 4 where body.count >= 2: return .puback(packetID: UInt16(body[0]) << 8 | UInt16(body[1]))
        default: return .other(type: first >> 4)
        }
    }
}
