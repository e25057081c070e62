import NIOCore
import StapleGateAdmission

enum MQTTFuzzing {
    static let maximumPacketSize = 64 * 1024

    /// The parser judges a stream that arrives in pieces: once a prefix has a verdict (a CONNECT
    /// or a refusal), more bytes after it must not change that verdict.
    static func connect(_ bytes: UnsafeRawBufferPointer) {
        let all = Array(bytes)
        let whole = MQTTConnectParser.parse(ByteBuffer(bytes: all), maximumPacketSize: maximumPacketSize)
        let half = MQTTConnectParser.parse(Array(all.prefix(all.count / 2)), maximumPacketSize: maximumPacketSize)
        switch (half, whole) {
        case (.needMoreBytes, _):
            break
        case let (.refused(early), .refused(late)):
            // The reason stands; more bytes may only add the protocol version the CONNACK is
            // written in (a refusal on the fixed header alone is told before the version is known).
            invariant(early.reason == late.reason, "a refusal on the first \(all.count / 2) bytes (\(early)) changed with more bytes (\(late))")
            if let version = early.protocolVersion {
                invariant(late.protocolVersion == version, "the refused CONNECT's version changed with more bytes")
            }
        default:
            invariant(half == whole, "a verdict on the first \(all.count / 2) bytes (\(half)) changed with more bytes (\(whole))")
        }
        if case let .connect(_, packetLength) = whole {
            invariant(packetLength <= all.count && packetLength <= maximumPacketSize, "a CONNECT longer than its bytes or the cap")
        }
    }

    /// The first byte picks the protocol version and direction and where the stream is split;
    /// the rest is the stream. Fed whole or in two pieces, the framer and the counter must report
    /// the same packets (both see sessions in whatever pieces TCP delivers).
    static func packets(_ bytes: UnsafeRawBufferPointer) {
        guard let control = bytes.first else { return }
        let stream = Array(bytes.dropFirst())
        let versions = MQTTProtocolVersion.allCases
        let version = versions[Int(control & 0x03) % versions.count]
        let direction: MQTTDirection = control & 0x04 == 0 ? .deviceToBroker : .brokerToDevice
        let split = stream.isEmpty ? 0 : Int(control >> 3) % (stream.count + 1)

        var whole = MQTTPacketFramer(protocolVersion: version, direction: direction)
        let wholeSummaries = whole.feed(ByteBuffer(bytes: stream))
        var pieces = MQTTPacketFramer(protocolVersion: version, direction: direction)
        let pieceSummaries = pieces.feed(ByteBuffer(bytes: stream[..<split])) + pieces.feed(ByteBuffer(bytes: stream[split...]))
        invariant(wholeSummaries == pieceSummaries, "the framer's packets depend on where the stream was split at \(split)")

        var wholeCount = MQTTPacketCounter()
        wholeCount.count(ByteBuffer(bytes: stream))
        var pieceCount = MQTTPacketCounter()
        pieceCount.count(ByteBuffer(bytes: stream[..<split]))
        pieceCount.count(ByteBuffer(bytes: stream[split...]))
        invariant(wholeCount.packets == pieceCount.packets && wholeCount.sawDisconnect == pieceCount.sawDisconnect,
                  "the packet count depends on where the stream was split at \(split)")
    }
}
