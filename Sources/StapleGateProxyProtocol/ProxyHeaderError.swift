/// Why the bytes a connection starts with are not an acceptable PROXY protocol header, in words
/// for the operator's log. Every one of them means: close the connection (the spec, §2.1: "any
/// sequence which does not exactly match the protocol must be discarded").
public struct ProxyHeaderError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The connection does not start with a PROXY signature at all: the client came
        /// straight in (a TLS ClientHello, a plain MQTT CONNECT) or the balancer is not sending
        /// the protocol.
        case noHeader
        /// A header of the version this listener is not configured for.
        case versionNotAccepted
        /// It starts as a PROXY header and then breaks the specification.
        case malformed
        /// Well formed, but for a transport this gateway does not relay (datagrams).
        case unsupported
        /// Longer than allowed: a v1 line without CRLF in 107 bytes, or a v2 header announcing
        /// more than the configured maximum.
        case tooLarge
        /// A PP2_TYPE_CRC32C TLV whose checksum does not match the header.
        case checksumMismatch
    }

    public var kind: Kind
    public var reason: String

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public var description: String { reason }

    static func malformed(_ reason: String) -> ProxyHeaderError { ProxyHeaderError(.malformed, reason) }
}

/// Why `ProxyHeaderEncoder` cannot write a header: it would not be a valid one, or not one that
/// `ProxyHeaderParser` would read back as the same value.
public struct ProxyHeaderEncodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String

    public init(_ reason: String) {
        self.reason = reason
    }

    public var description: String { reason }
}

/// Bytes from the wire shown in a log line: quoted if printable ASCII, with \xNN escapes for the
/// rest, cut after 40 bytes (a field may be anything, such as a stretch of binary garbage).
enum Printable {
    static func quoted(_ bytes: some Collection<UInt8>) -> String {
        var text = "\""
        for byte in bytes.prefix(40) {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): text += "\\" + String(UnicodeScalar(byte))
            case 0x20...0x7E: text.unicodeScalars.append(UnicodeScalar(byte))
            case UInt8(ascii: "\r"): text += "\\r"
            case UInt8(ascii: "\n"): text += "\\n"
            default: text += "\\x" + hex(byte)
            }
        }
        return text + (bytes.count > 40 ? "\"…" : "\"")
    }

    static func hex(_ byte: UInt8) -> String {
        (byte < 0x10 ? "0" : "") + String(byte, radix: 16, uppercase: true)
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { hex($0) }.joined(separator: " ")
    }
}
