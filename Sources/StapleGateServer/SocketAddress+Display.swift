import NIOCore

extension SocketAddress {
    /// "203.0.113.7:51234", "[2001:db8::1]:8883" or the socket path: what operators grep logs for
    /// (NIO's own description adds the family and repeats the host).
    var displayText: String {
        switch self {
        case let .v4(address): "\(address.host):\(port ?? 0)"
        case let .v6(address): "[\(address.host)]:\(port ?? 0)"
        case let .unixDomainSocket(address): "\(address)"
        }
    }
}
