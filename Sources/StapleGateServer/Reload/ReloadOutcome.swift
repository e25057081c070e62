import StapleGateConfig

/// How a reload went, as `staplegate reload` prints it and the log says it.
public struct ReloadOutcome: Codable, Sendable, Equatable {
    /// false: the configuration was refused and nothing changed.
    public let applied: Bool
    /// What changed, or why nothing did.
    public let message: String
    /// Applied, but worth an operator's eye: settings that only a restart applies, a new
    /// certificate switched in without its staple, expiring certificates.
    public let warnings: [String]

    static func refused(_ reason: String) -> ReloadOutcome {
        ReloadOutcome(applied: false, message: "reload refused, nothing changed: \(reason)", warnings: [])
    }
}

/// Settings the running gateway cannot change in place: a reload applies everything else and
/// names these, so that an operator is never left believing a change took effect.
enum RestartOnlySettings {
    static func changed(from old: GatewayConfiguration, to new: GatewayConfiguration) -> [String] {
        var changed: [String] = []
        if old.listen.address != new.listen.address || old.listen.port != new.listen.port
            || old.listen.backlog != new.listen.backlog {
            changed.append("listen (address, port, backlog)")
        }
        if old.listen.maxSessions != new.listen.maxSessions { changed.append("listen.max_sessions") }
        if old.listen.maxHandshakes != new.listen.maxHandshakes { changed.append("listen.max_handshakes") }
        if old.listen.perSourceConnectionRate != new.listen.perSourceConnectionRate { changed.append("listen.per_source_connection_rate") }
        if old.stateDirectory != new.stateDirectory { changed.append("state_directory") }
        if old.logLevel != new.logLevel || old.logFormat != new.logFormat { changed.append("logging") }
        if old.trace != new.trace { changed.append("trace") }
        // The token is not among them: a reload that names a new token file applies it at once.
        if old.admin.enabled != new.admin.enabled || old.admin.address != new.admin.address || old.admin.port != new.admin.port {
            changed.append("admin (enabled, address, port)")
        }
        if old.deviceOCSP.cacheCapacity != new.deviceOCSP.cacheCapacity { changed.append("device_ocsp.cache_size") }
        // The device-status store is opened once, with the status cache that outlives reloads.
        if old.fleet != new.fleet { changed.append("fleet") }
        return changed.map { "\($0) changed: takes effect at the next restart" }
    }
}
