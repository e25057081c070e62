/// Where accepted device sessions are forwarded: the local Mosquitto.
public struct UpstreamConfiguration: Sendable, Equatable {
    public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)

        public var description: String {
            switch self {
            case let .tcp(host, port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case let .unixSocket(path): "unix:\(path)"
            }
        }
    }

    public var endpoint: Endpoint
    /// A broker that has not accepted the connection by then counts as unreachable.
    public var connectTimeout: Duration
    /// A session with no bytes in either direction for this long is closed; nil never closes.
    public var idleTimeout: Duration?
    /// Open each broker connection with a PROXY protocol v2 header carrying the device's
    /// address and its TLS details (`upstream.proxy_protocol: v2`), for brokers that read it.
    public var sendsProxyProtocol = false

    public init(endpoint: Endpoint, connectTimeout: Duration = .seconds(5), idleTimeout: Duration? = .seconds(3600)) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
    }
}
