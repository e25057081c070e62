/// The admin HTTP listener: health and readiness probes, Prometheus metrics, OCSP state and
/// device traces for operators and their tooling. Read-only: anything that changes the
/// gateway stays on the control socket, whose file permissions decide who may use it.
public struct AdminConfiguration: Sendable, Equatable {
    public var enabled: Bool
    /// An IPv4 or IPv6 address literal. Loopback by default: the endpoints have no
    /// authentication, so exposing them is a deliberate choice.
    public var address: String
    /// 0 lets the kernel pick (tests use it); the bound port is logged at start.
    public var port: Int

    public init(enabled: Bool = true, address: String = "127.0.0.1", port: Int = 9883) {
        self.enabled = enabled
        self.address = address
        self.port = port
    }
}
