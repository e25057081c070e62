/// Where accepted device sessions are forwarded: one Mosquitto, or several with a rule for
/// choosing among them.
public struct UpstreamConfiguration: Sendable, Equatable {
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)

        /// As `upstream.brokers` writes it; also the broker's name in logs, traces, /readyz and
        /// metric labels, and what `client_id_hash` hashes (so it must not change by itself).
        public var description: String {
            switch self {
            case let .tcp(host, port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case let .unixSocket(path): "unix:\(path)"
            }
        }
    }

    /// How a session's broker is chosen among `brokers`.
    public enum Balance: String, Sendable, CaseIterable {
        /// The first broker in list order that is not marked down.
        case failover
        /// Each new session to the next broker that is not marked down.
        case roundRobin = "round_robin"
        /// Each client id to the same broker every time (brokers as independent shards).
        case clientIDHash = "client_id_hash"
    }

    /// Never empty: the single `address`/`unix_socket` form is a list of one.
    public var brokers: [Endpoint]
    public var balance: Balance
    /// A broker that has not accepted the connection by then counts as unreachable.
    public var connectTimeout: Duration
    /// A session with no bytes in either direction for this long is closed; nil never closes.
    public var idleTimeout: Duration?
    /// How long a broker that refused or timed out is skipped before it is tried again.
    public var downTime: Duration
    /// Open each broker connection with a PROXY protocol v2 header carrying the device's
    /// address and its TLS details (`upstream.proxy_protocol: v2`), for brokers that read it.
    public var sendsProxyProtocol = false

    public init(brokers: [Endpoint], balance: Balance = .failover, connectTimeout: Duration = .seconds(5),
                idleTimeout: Duration? = .seconds(3600), downTime: Duration = .seconds(10)) {
        precondition(!brokers.isEmpty, "an upstream needs at least one broker")
        self.brokers = brokers
        self.balance = balance
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.downTime = downTime
    }

    /// A single broker.
    public init(endpoint: Endpoint, connectTimeout: Duration = .seconds(5), idleTimeout: Duration? = .seconds(3600)) {
        self.init(brokers: [endpoint], connectTimeout: connectTimeout, idleTimeout: idleTimeout)
    }

    /// "127.0.0.1:1883", or "10.0.0.5:1883, 10.0.0.6:1883 (failover)" for several.
    public var summary: String {
        let list = brokers.map(\.description).joined(separator: ", ")
        return brokers.count == 1 ? list : "\(list) (\(balance.rawValue))"
    }
}
