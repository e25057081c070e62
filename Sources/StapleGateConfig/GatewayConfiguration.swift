import Logging
import StapleGateAdmission
import StapleGateFleet
import StapleGateOCSP
import StapleGateProxy
import StapleGateProxyProtocol
import StapleGateTLS
import StapleGateTrace

/// The whole gateway configuration, as read from the YAML file (see config/staplegate.yaml).
public struct GatewayConfiguration: Sendable {
    public var listen: ListenConfiguration
    public var tls: TLSServerConfiguration
    public var upstream: UpstreamConfiguration
    public var logLevel: Logger.Level
    /// Text for people, or one JSON object per line for log collectors.
    public var logFormat = LogFormat.text
    /// Where the gateway keeps what must survive a restart (staples, their status).
    public var stateDirectory: String
    public var stapling: StaplingConfiguration
    /// OCSP checks of device certificates during the handshake.
    public var deviceOCSP: DeviceOCSPConfiguration
    /// What a device's first MQTT packet must be, and what it may claim.
    public var admission = AdmissionConfiguration()
    /// Per-device trace events in the state directory.
    public var trace = TraceConfiguration()
    /// The admin HTTP listener (health, readiness, metrics).
    public var admin = AdminConfiguration()
    /// Where the gateways of a fleet share device statuses: each its own SQLite file (default)
    /// or one PostgreSQL database. Read once at start; a reload keeps the store it has.
    public var fleet = FleetConfiguration()

    public static let defaultStateDirectory = "/var/lib/staplegate"

    public init(listen: ListenConfiguration, tls: TLSServerConfiguration, upstream: UpstreamConfiguration,
                logLevel: Logger.Level = .info, stateDirectory: String = defaultStateDirectory,
                stapling: StaplingConfiguration = StaplingConfiguration(),
                deviceOCSP: DeviceOCSPConfiguration = DeviceOCSPConfiguration()) {
        self.listen = listen
        self.tls = tls
        self.upstream = upstream
        self.logLevel = logLevel
        self.stateDirectory = stateDirectory
        self.stapling = stapling
        self.deviceOCSP = deviceOCSP
    }
}

/// Where devices connect.
public struct ListenConfiguration: Sendable, Equatable {
    /// An IPv4 or IPv6 address literal, e.g. "0.0.0.0" or "::".
    public var address: String
    /// 0 lets the kernel pick (tests use it); the bound port is reported at start.
    public var port: Int
    public var backlog: Int
    /// On SIGTERM: how long sessions may go on after the listener closes, before the rest are
    /// closed (devices that reconnect then find another instance, or this one restarted).
    public var drainGracePeriod: Duration
    /// The most device sessions held at once; more are refused with a CONNACK "server busy".
    public var maxSessions = SessionLimit.automatic
    /// `listen.max_handshakes`: the most connections between accept and the end of their TLS
    /// handshake; past it the listener stops accepting and new connections wait in the kernel's
    /// backlog. 0: no limit.
    public var maxHandshakes = 0
    /// `listen.per_source_connection_rate`: new connections a second from one source address (the
    /// PROXY header's, behind a balancer); more are closed before TLS. 0: no limit.
    public var perSourceConnectionRate = 0
    /// Which PROXY protocol headers a balancer in front must send (`listen.proxy_protocol`);
    /// nil: off, devices connect directly.
    public var proxyProtocol: ProxyHeaderParser.AcceptedVersions?
    /// Who may send them (`listen.trusted_proxies`); required when `proxyProtocol` is on.
    public var trustedProxies = TrustedProxies([])

    public init(address: String = "0.0.0.0", port: Int = 8883, backlog: Int = 1024,
                drainGracePeriod: Duration = .seconds(30)) {
        self.address = address
        self.port = port
        self.backlog = backlog
        self.drainGracePeriod = drainGracePeriod
    }
}
