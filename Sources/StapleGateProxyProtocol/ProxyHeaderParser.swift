import NIOCore

/// Reads the PROXY protocol header (HAProxy's proxy-protocol.txt, v1 and v2) that a balancer
/// puts in front of a client's bytes, as the bytes arrive.
///
/// Call `parse` with the connection's bytes so far each time more arrive (a cumulation buffer,
/// as ByteToMessageDecoder keeps): it returns nil while the header is incomplete, leaving the
/// buffer as it is; then the header, with exactly its bytes consumed and the client's (its TLS
/// ClientHello) left in the buffer. Whatever is not a valid header throws as soon as the bytes
/// show it, so that a client connecting straight to the gateway is refused at its first byte
/// instead of waiting for a header that will never come.
///
/// The listener must be configured for the protocol: the spec (§2) forbids guessing whether a
/// header is present, since a client could then send one and pose as any address.
public struct ProxyHeaderParser: Sendable {
    /// Which header versions this listener takes. A v2 receiver "is recommended" to take v1 too
    /// (§2); a balancer is configured for one, so pinning it catches a misconfigured one early.
    public enum AcceptedVersions: Sendable, Hashable {
        case v1
        case v2
        case any
    }

    /// Ample for what balancers send (addresses, SNI, a unique ID, a CN and a few algorithm
    /// names come to a few hundred bytes), and small enough that a peer announcing the 64 KiB
    /// the length field allows is refused before anything is buffered.
    public static let defaultMaximumHeaderSize = 4096

    public let acceptedVersions: AcceptedVersions
    /// The most a v2 header may take, its 16-byte prefix included (v1 lines have their own
    /// fixed limit of 107 bytes).
    public let maximumHeaderSize: Int
    /// How far a v1 line was already searched for its CRLF without finding one, so that a line
    /// arriving a byte at a time costs one look per byte rather than a rescan per arrival.
    private var v1SearchedBytes = 0

    public init(accepting acceptedVersions: AcceptedVersions = .any, maximumHeaderSize: Int = defaultMaximumHeaderSize) {
        precondition(
            maximumHeaderSize >= ProxyV2Decoder.prefixLength,
            "a PROXY v2 header takes at least \(ProxyV2Decoder.prefixLength) bytes")
        self.acceptedVersions = acceptedVersions
        self.maximumHeaderSize = maximumHeaderSize
    }

    /// The header at the start of `buffer`'s readable bytes, which are then moved past; nil
    /// while more bytes are needed (`buffer` untouched). After a header or an error the parser
    /// starts afresh, for the next connection.
    public mutating func parse(_ buffer: inout ByteBuffer) throws(ProxyHeaderError) -> ProxyHeader? {
        let decoded: DecodedHeader?
        do {
            decoded = try decode(buffer)
        } catch {
            v1SearchedBytes = 0
            throw error
        }
        guard let decoded else { return nil }
        v1SearchedBytes = 0
        buffer.moveReaderIndex(forwardBy: decoded.length)
        return decoded.header
    }

    /// The first byte tells the versions apart ("P" or CR), and one that starts neither
    /// accepted signature is refused at once.
    private mutating func decode(_ buffer: ByteBuffer) throws(ProxyHeaderError) -> DecodedHeader? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        if first == ProxyV1Line.signature[0] && acceptedVersions != .v2 {
            return try ProxyV1Line.decode(buffer, searched: &v1SearchedBytes)
        }
        if first == ProxyV2Decoder.signature[0] && acceptedVersions != .v1 {
            return try ProxyV2Decoder.decode(buffer, maximumHeaderSize: maximumHeaderSize)
        }
        throw Self.refusal(firstByte: first, accepting: acceptedVersions)
    }

    /// Names what the connection starts with instead, for the two mistakes an operator makes:
    /// the balancer not sending the protocol (the client's TLS record or MQTT CONNECT arrives
    /// first), or sending the other version.
    static func refusal(firstByte: UInt8, accepting accepted: AcceptedVersions) -> ProxyHeaderError {
        if firstByte == ProxyV1Line.signature[0] {
            return ProxyHeaderError(
                .versionNotAccepted,
                "the connection starts with \"P\", as a PROXY v1 line does, but this listener accepts only PROXY v2")
        }
        if firstByte == ProxyV2Decoder.signature[0] {
            return ProxyHeaderError(
                .versionNotAccepted,
                "the connection starts with byte 0x0D, as a PROXY v2 header does, but this listener accepts only PROXY v1")
        }
        let expected =
            switch accepted {
            case .any: "PROXY protocol header"
            case .v1: "PROXY v1 line"
            case .v2: "PROXY v2 header"
            }
        let found =
            switch firstByte {
            case 0x16: "a TLS record, byte 0x16"
            case 0x10: "an MQTT CONNECT, byte 0x10"
            case 0x21...0x7E: "\(Printable.quoted([firstByte])), byte 0x\(Printable.hex(firstByte))"
            default: "byte 0x\(Printable.hex(firstByte))"
            }
        return ProxyHeaderError(
            .noHeader, "no \(expected) (the connection starts with \(found): is the balancer sending the PROXY protocol?)")
    }
}

/// A complete header and how many bytes it took.
typealias DecodedHeader = (header: ProxyHeader, length: Int)
