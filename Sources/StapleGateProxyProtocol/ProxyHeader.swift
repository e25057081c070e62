/// The two versions of HAProxy's PROXY protocol (proxy-protocol.txt): v1 is one line of text,
/// v2 a binary block that may carry TLVs.
public enum ProxyProtocolVersion: Sendable, Hashable, CustomStringConvertible {
    case v1
    case v2

    public var description: String { self == .v1 ? "PROXY v1" : "PROXY v2" }
}

/// What a balancer told us about the connection it relays, read from the header it put in
/// front of the client's bytes.
public struct ProxyHeader: Sendable, Hashable {
    /// The v2 command (§2.2, 13th byte). A v1 line is always `.proxy`.
    public enum Command: Sendable, Hashable {
        /// The balancer opened the connection itself (a health check): the real endpoints are
        /// the connection's own, and the address block is discarded.
        case local
        /// The connection is relayed for the client named in `source`.
        case proxy
    }

    public var version: ProxyProtocolVersion
    public var command: Command
    /// The client as the balancer saw it; nil for v1 UNKNOWN, v2 LOCAL and v2 AF_UNSPEC,
    /// where the connection's own peer address stands.
    public var source: ProxyEndpoint?
    /// The address the client connected to on the balancer; nil when `source` is.
    public var destination: ProxyEndpoint?
    /// v2 TLVs in the order they were sent (v1 has none).
    public var tlvs: [ProxyTLV]

    public init(
        version: ProxyProtocolVersion = .v2, command: Command = .proxy,
        source: ProxyEndpoint? = nil, destination: ProxyEndpoint? = nil, tlvs: [ProxyTLV] = []
    ) {
        self.version = version
        self.command = command
        self.source = source
        self.destination = destination
        self.tlvs = tlvs
    }

    // MARK: Typed TLV accessors (the first TLV of each kind; the parser refuses duplicates)

    /// PP2_TYPE_SSL: how the client reached the balancer over TLS.
    public var ssl: ProxySSLInfo? {
        for case .ssl(let info) in tlvs { return info }
        return nil
    }

    /// PP2_TYPE_AUTHORITY: the host name the client asked for (its TLS SNI).
    public var authority: String? {
        for case .authority(let name) in tlvs { return name }
        return nil
    }

    /// PP2_TYPE_UNIQUE_ID: the balancer's identifier of the connection, for correlating logs.
    public var uniqueID: [UInt8]? {
        for case .uniqueID(let id) in tlvs { return id }
        return nil
    }

    /// PP2_TYPE_ALPN: the application protocol the client negotiated with the balancer.
    public var alpn: [UInt8]? {
        for case .alpn(let protocolName) in tlvs { return protocolName }
        return nil
    }

    /// PP2_TYPE_NETNS: the network namespace the balancer accepted the connection in.
    public var networkNamespace: String? {
        for case .networkNamespace(let name) in tlvs { return name }
        return nil
    }

    /// PP2_TYPE_CRC32C: the checksum the header carried (already verified by the parser).
    public var crc32c: UInt32? {
        for case .crc32c(let checksum) in tlvs { return checksum }
        return nil
    }
}

/// One end of the relayed connection.
public enum ProxyEndpoint: Sendable, Hashable, CustomStringConvertible {
    case ipv4(ProxyIPv4Address, port: UInt16)
    case ipv6(ProxyIPv6Address, port: UInt16)
    /// An AF_UNIX socket: a filesystem path, or an abstract name starting with a NUL byte.
    /// Without the NUL padding of the 108-byte v2 field.
    case unix(path: [UInt8])

    public var description: String {
        switch self {
        case .ipv4(let address, let port): "\(address):\(port)"
        case .ipv6(let address, let port): "[\(address)]:\(port)"
        case .unix(let path):
            path.first == 0
                ? "unix:@" + String(decoding: path.dropFirst(), as: UTF8.self)
                : "unix:" + String(decoding: path, as: UTF8.self)
        }
    }

    /// The port, for the two families that have one.
    public var port: UInt16? {
        switch self {
        case .ipv4(_, let port), .ipv6(_, let port): port
        case .unix: nil
        }
    }
}

/// An IPv4 address, held as its 32-bit value (192.0.2.1 is 0xC000_0201).
public struct ProxyIPv4Address: Sendable, Hashable, CustomStringConvertible {
    public var value: UInt32

    public init(value: UInt32) {
        self.value = value
    }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses the dotted quad of proxy-protocol.txt §2.1: exactly four decimal numbers 0-255,
    /// without heading zeroes ("010" would be 8 to inet_aton and 10 to a human, so it is neither).
    public init?(_ text: some StringProtocol) {
        self.init(utf8: Array(text.utf8))
    }

    init?(utf8 bytes: [UInt8]) {
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard let number = DecimalText.value(of: part, maximum: 255) else { return nil }
            value = value << 8 | UInt32(number)
        }
        self.value = value
    }

    /// The four bytes in network order, as v2 carries them.
    public var bytes: [UInt8] {
        [
            UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value),
        ]
    }

    public var description: String { bytes.map(String.init).joined(separator: ".") }
}

/// An IPv6 address, held as its 128 bits in two halves (network order: `high` first).
public struct ProxyIPv6Address: Sendable, Hashable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Sixteen bytes in network order; nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// Parses text as inet_pton(AF_INET6) does, which is how HAProxy reads a v1 line.
    public init?(_ text: some StringProtocol) {
        guard let bytes = IPv6Text.parse(Array(text.utf8)) else { return nil }
        self.init(bytes: bytes)
    }

    /// The sixteen bytes in network order, as v2 carries them.
    public var bytes: [UInt8] {
        (0..<16).map { index in
            let half = index < 8 ? high : low
            return UInt8(truncatingIfNeeded: half >> UInt64(56 - 8 * (index % 8)))
        }
    }

    /// The RFC 5952 text form ("2001:db8::1", "::ffff:192.0.2.1"), which v1 lines carry.
    public var description: String { IPv6Text.format(bytes) }
}

/// Decimal numbers as proxy-protocol.txt §2.1 writes them: digits only, no sign, no heading
/// zero (a lone "0" is zero), at most `maximum`.
enum DecimalText {
    static func value(of text: some Collection<UInt8>, maximum: Int) -> Int? {
        guard let first = text.first, text.count <= String(maximum).utf8.count else { return nil }
        if first == UInt8(ascii: "0") && text.count > 1 { return nil }
        var value = 0
        for byte in text {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value <= maximum ? value : nil
    }
}
