import StapleGateTLS

/// The admin HTTP listener: health and readiness probes, Prometheus metrics, OCSP state and
/// device traces for operators and their tooling. Read-only: anything that changes the
/// gateway stays on the control socket, whose file permissions decide who may use it.
public struct AdminConfiguration: Sendable, Equatable {
    public var enabled: Bool
    /// An IPv4 or IPv6 address literal. Loopback by default; any other address needs a token
    /// (or `allowUnauthenticated`), since the endpoints tell who connected from where.
    public var address: String
    /// 0 lets the kernel pick (tests use it); the bound port is logged at start.
    public var port: Int
    /// `admin.token_file`: every endpoint but the probes (/healthz, /readyz) then needs
    /// `Authorization: Bearer TOKEN`. Read at start and at each reload.
    public var tokenFile: String?
    public var token: AccessToken?
    /// `admin.allow_unauthenticated`: serve a non-loopback address without a token anyway.
    public var allowUnauthenticated: Bool

    public init(enabled: Bool = true, address: String = "127.0.0.1", port: Int = 9883, tokenFile: String? = nil,
                token: AccessToken? = nil, allowUnauthenticated: Bool = false) {
        self.enabled = enabled
        self.address = address
        self.port = port
        self.tokenFile = tokenFile
        self.token = token
        self.allowUnauthenticated = allowUnauthenticated
    }
}
