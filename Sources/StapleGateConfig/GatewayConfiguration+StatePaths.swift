/// The files the gateway keeps in its state directory (besides the staples and their status).
extension GatewayConfiguration {
    /// The device-status cache (SQLite, WAL), so a restart does not re-query the whole fleet.
    public var deviceOCSPCachePath: String { "\(stateDirectory)/ocsp-cache.sqlite" }
    /// Where `staplegate ocsp recheck` and `ocsp cache` reach the running gateway.
    public var controlSocketPath: String { "\(stateDirectory)/control.sock" }
}

extension GatewayConfiguration {
    /// Per-device trace events (SQLite, WAL), read by `staplegate trace`.
    public var traceStorePath: String { "\(stateDirectory)/trace.sqlite" }
}
