import NIOCore

/// One block of addresses in CIDR notation ("10.0.0.0/8", "2001:db8::/32"); a bare address is
/// a block of one (/32 or /128).
public struct CIDRBlock: Sendable, Hashable, CustomStringConvertible {
    enum Network: Sendable, Hashable {
        case v4(UInt32)
        case v6(high: UInt64, low: UInt64)
    }

    let network: Network
    public let prefixLength: Int

    /// Nil (and `problem(_:)` says why) for anything but an IPv4 or IPv6 address, optionally
    /// with a prefix length in range.
    public init?(_ text: String) {
        guard Self.problem(text) == nil, let parsed = Self.parse(text) else { return nil }
        self = parsed
    }

    /// Why `text` is not a CIDR block, or nil when it is one.
    public static func problem(_ text: String) -> String? {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let address = parts[0]
        let isV4 = ProxyIPv4Address(address) != nil
        guard isV4 || ProxyIPv6Address(address) != nil else {
            return "\"\(text)\" is not an IPv4 or IPv6 address with an optional /prefix (such as 10.0.0.0/8 or fd00::/8)"
        }
        guard parts.count == 2 else { return nil }
        let maximum = isV4 ? 32 : 128
        guard let prefix = Int(parts[1]), (0...maximum).contains(prefix), parts[1].allSatisfy(\.isNumber) else {
            return "\"\(text)\": the prefix length must be a number from 0 to \(maximum)"
        }
        return nil
    }

    private static func parse(_ text: String) -> CIDRBlock? {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        if let v4 = ProxyIPv4Address(parts[0]) {
            let prefix = parts.count == 2 ? Int(parts[1]) ?? 32 : 32
            return CIDRBlock(network: .v4(v4.value & Self.mask32(prefix)), prefixLength: prefix)
        }
        guard let v6 = ProxyIPv6Address(parts[0]) else { return nil }
        let prefix = parts.count == 2 ? Int(parts[1]) ?? 128 : 128
        let (highMask, lowMask) = Self.mask128(prefix)
        return CIDRBlock(network: .v6(high: v6.high & highMask, low: v6.low & lowMask), prefixLength: prefix)
    }

    private init(network: Network, prefixLength: Int) {
        self.network = network
        self.prefixLength = prefixLength
    }

    /// Whether `address` (a v4 address, or a v6 one; an IPv4-mapped v6 address, as a listener
    /// on "::" sees IPv4 peers, counts as its IPv4 address) is in this block.
    public func contains(_ address: SocketAddress) -> Bool {
        switch (network, Self.bits(of: address)) {
        case let (.v4(network), .v4(value)?):
            return value & Self.mask32(prefixLength) == network
        case let (.v6(high, low), .v6(valueHigh, valueLow)?):
            let (highMask, lowMask) = Self.mask128(prefixLength)
            return valueHigh & highMask == high && valueLow & lowMask == low
        default:
            return false
        }
    }

    public var description: String {
        switch network {
        case let .v4(value): "\(ProxyIPv4Address(value: value))/\(prefixLength)"
        case let .v6(high, low): "\(ProxyIPv6Address(high: high, low: low))/\(prefixLength)"
        }
    }

    private static func mask32(_ prefix: Int) -> UInt32 {
        prefix == 0 ? 0 : UInt32.max << UInt32(32 - prefix)
    }

    private static func mask128(_ prefix: Int) -> (UInt64, UInt64) {
        switch prefix {
        case 0: (0, 0)
        case 1...64: (UInt64.max << UInt64(64 - prefix), 0)
        default: (UInt64.max, prefix == 128 ? UInt64.max : UInt64.max << UInt64(128 - prefix))
        }
    }

    /// The address's bits; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as IPv4.
    private static func bits(of address: SocketAddress) -> Network? {
        switch address {
        case let .v4(v4):
            return .v4(UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case let .v6(v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            guard let parsed = ProxyIPv6Address(bytes: bytes) else { return nil }
            if parsed.high == 0, parsed.low >> 32 == 0xFFFF { return .v4(UInt32(truncatingIfNeeded: parsed.low)) }
            return .v6(high: parsed.high, low: parsed.low)
        case .unixDomainSocket:
            return nil
        }
    }
}

/// The balancers allowed to speak for devices (`listen.trusted_proxies`): only a connection from
/// one of these may carry a PROXY header, so that nobody else can claim another address.
public struct TrustedProxies: Sendable, Hashable {
    public let blocks: [CIDRBlock]

    public init(_ blocks: [CIDRBlock]) {
        self.blocks = blocks
    }

    public func contains(_ address: SocketAddress?) -> Bool {
        guard let address else { return false }
        return blocks.contains { $0.contains(address) }
    }
}
