import NIOCore

/// Counts the MQTT packets in a byte stream by their fixed headers alone, skipping every body
/// by its length: the disconnect trace's "packets each way", cheap enough to run on every
/// session (the full `MQTTPacketFramer` only runs under message trace).
public struct MQTTPacketCounter: Sendable {
    private enum Stage: Sendable {
        case packetType
        /// Reading the remaining length, a variable byte integer of at most four bytes.
        case remainingLength(value: Int, multiplier: Int, bytesRead: Int)
        case body(bytesLeft: Int)
        /// The stream is not MQTT (a length longer than four bytes): counting stopped.
        case off
    }

    private var stage = Stage.packetType
    /// Complete packets seen so far.
    public private(set) var packets = 0
    /// Whether a DISCONNECT (packet type 14) began in the stream: its sender ended the session,
    /// whichever socket closes first afterwards.
    public private(set) var sawDisconnect = false

    public init() {}

    /// Whether the stream stopped looking like MQTT (the count is then a lower bound).
    public var stopped: Bool {
        if case .off = stage { return true }
        return false
    }

    public mutating func count(_ buffer: ByteBuffer) {
        // Over the raw bytes: `readableBytesView`'s subscript checks bounds and exclusivity per
        // byte, which made this 3 % of the gateway's CPU per relayed message (it runs twice a
        // direction, for the trace and for the metrics).
        buffer.withUnsafeReadableBytes { count(in: $0) }
    }

    private mutating func count(in bytes: UnsafeRawBufferPointer) {
        var index = 0
        let end = bytes.count
        while index < end {
            switch stage {
            case .off:
                return
            case .packetType:
                if bytes[index] >> 4 == 14 { sawDisconnect = true }
                stage = .remainingLength(value: 0, multiplier: 1, bytesRead: 0)
                index += 1
            case let .remainingLength(value, multiplier, bytesRead):
                let byte = bytes[index]
                index += 1
                let total = value + Int(byte & 0x7F) * multiplier
                if byte & 0x80 == 0 {
                    finishHeader(bodyLength: total)
                } else if bytesRead == 3 {
                    stage = .off
                } else {
                    stage = .remainingLength(value: total, multiplier: multiplier * 128, bytesRead: bytesRead + 1)
                }
            case let .body(bytesLeft):
                let skipped = min(bytesLeft, end - index)
                index += skipped
                if skipped == bytesLeft {
                    packets += 1
                    stage = .packetType
                } else {
                    stage = .body(bytesLeft: bytesLeft - skipped)
                }
            }
        }
    }

    private mutating func finishHeader(bodyLength: Int) {
        if bodyLength == 0 {
            packets += 1
            stage = .packetType
        } else {
            stage = .body(bytesLeft: bodyLength)
        }
    }
}
