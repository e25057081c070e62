import NIOCore
import StapleGateProxyProtocol
import StapleGateTLS

/// The PROXY protocol v2 header the gateway opens each broker connection with
/// (`upstream.proxy_protocol: v2`), as HAProxy's `send-proxy-v2-ssl-cn` writes it: the device's
/// address and port, the address it connected to, and the SSL TLV saying the device presented a
/// certificate that was verified, with its identity (as the CN sub-TLV), TLS version and cipher.
/// Mosquitto 2.1 (`enable_proxy_protocol 2`), EMQX, HiveMQ and VerneMQ read it.
enum UpstreamProxyHeader {
    /// - Parameters:
    ///   - device: where the device connected from (its real address, behind a balancer too);
    ///   - gateway: the address it connected to.
    static func bytes(device: ProxyEndpoint?, gateway: ProxyEndpoint?, identity: String,
                      handshake: TLSHandshakeSummary?) -> [UInt8] {
        let ssl = ProxySSLInfo(client: [.ssl, .certificateOnConnection, .certificateInSession], verify: 0,
                               version: handshake?.protocolVersion, commonName: identity, cipher: handshake?.cipher)
        let header = ProxyHeader(version: .v2, command: .proxy, source: device, destination: gateway, tlvs: [.ssl(ssl)])
        if let bytes = try? ProxyHeaderEncoder.bytes(header) { return bytes }
        // Addresses of two families (or none): the broker still gets a header it can parse,
        // saying the addresses are unknown, rather than a connection it would refuse.
        return (try? ProxyHeaderEncoder.bytes(ProxyHeader(version: .v2, command: .proxy))) ?? []
    }
}

extension ProxyEndpoint {
    /// The endpoint of a socket address; nil for a Unix socket without a path.
    init?(_ address: SocketAddress?) {
        switch address {
        case let .v4(v4)?:
            self = .ipv4(ProxyIPv4Address(value: UInt32(bigEndian: v4.address.sin_addr.s_addr)), port: UInt16(address?.port ?? 0))
        case let .v6(v6)?:
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            guard let parsed = ProxyIPv6Address(bytes: bytes) else { return nil }
            self = .ipv6(parsed, port: UInt16(address?.port ?? 0))
        case .unixDomainSocket?:
            guard let path = address?.pathname, !path.isEmpty else { return nil }
            self = .unix(path: Array(path.utf8))
        case nil:
            return nil
        }
    }
}
