import StapleGateFleet
import StapleGateTLS

extension ConfigSchema {
    static let fleetKeys = ["store", "url", "password_file", "tls", "ca_file", "instance", "pool_size", "required_for_readiness",
                            "secret_file", "ticket_key_rotation"]
    /// The keys that only mean something with `store: postgres`.
    static let fleetPostgresKeys = ["url", "password_file", "tls", "ca_file", "instance", "pool_size", "required_for_readiness",
                                    "secret_file", "ticket_key_rotation"]

    func fleet(_ section: YAMLValue) throws(ConfigError) -> FleetConfiguration {
        let keys = try section.mapping(knownKeys: Self.fleetKeys)
        var fleet = FleetConfiguration()
        if let value = keys["store"] { fleet.store = try choice(value) }
        guard fleet.store == .postgres else {
            // A url under store: sqlite is a half-done switch: say so rather than ignore it.
            if let stray = Self.fleetPostgresKeys.compactMap({ keys[$0] }).min(by: { ($0.line ?? 0) < ($1.line ?? 0) }) {
                throw stray.error("only applies with fleet.store: postgres (the store is \(fleet.store.rawValue))")
            }
            return fleet
        }
        let urlValue = try keys.required("url")
        let parts: (host: String, port: Int, user: String, database: String)
        switch PostgresSettings.parse(url: try urlValue.string()) {
        case let .success(parsed): parts = parsed
        case let .failure(problem): throw urlValue.error(problem.description)
        }
        var settings = PostgresSettings(host: parts.host, port: parts.port, user: parts.user, database: parts.database)
        if let value = keys["password_file"] { settings.passwordFile = try readableFile(value) }
        if let value = keys["tls"] { settings.tls = try choice(value) }
        if let value = keys["ca_file"] {
            guard settings.tls == .verifyFull else {
                throw value.error("only applies with fleet.tls: verify-full (tls is \(settings.tls.rawValue))")
            }
            settings.caFile = try readableFile(value)
        }
        if let value = keys["instance"] {
            let instance = try value.string()
            guard !instance.isEmpty, instance.count <= 200 else {
                throw value.error("must be a name of 1 to 200 characters; remove the key to use the host name")
            }
            settings.instance = instance
        }
        if let value = keys["pool_size"] { settings.poolSize = try value.integer(in: 1...100) }
        if let value = keys["required_for_readiness"] { fleet.requiredForReadiness = try value.boolean() }
        fleet.postgres = settings
        if let value = keys["secret_file"] {
            let path = try readableFile(value)
            // Read now, so a short or open secret fails the start, not the first key refresh.
            do { _ = try FleetSecret.load(at: path) } catch {
                throw value.error("\(path): \(error.reason)")
            }
            fleet.secretFile = path
        }
        if let value = keys["ticket_key_rotation"] {
            let rotation = try duration(value)
            let allowed = TicketKeyRotation.allowedRotation
            guard allowed.contains(rotation) else {
                throw value.error("must be between \(allowed.lowerBound) and \(allowed.upperBound) (e.g. \"12h\"), not \(rotation)")
            }
            fleet.ticketKeyRotation = rotation
        }
        return fleet
    }

    /// `tls.session_ticket_keys: fleet` needs the fleet's database and its secret: refused
    /// against the `tls` key otherwise, naming what is missing.
    func checkFleetTicketKeys(_ configuration: GatewayConfiguration, root: YAMLValue) throws(ConfigError) {
        guard configuration.tls.sessionTicketKeys == .fleet else { return }
        let key = "tls.session_ticket_keys"
        let line = root.keyLines()[key]
        guard configuration.fleet.store == .postgres else {
            throw ConfigError(file: file, key: key, line: line,
                              reason: "fleet needs fleet.store: postgres (the keys are rotated through the fleet's database); use a key file (staplegate ticket-keys generate) for gateways without one")
        }
        guard configuration.fleet.secretFile != nil else {
            throw ConfigError(file: file, key: key, line: line,
                              reason: "fleet needs fleet.secret_file, the secret the keys are sealed with in the database (the same file on every gateway; make one with `openssl rand -base64 48`)")
        }
    }

    /// A file that exists and can be read now: a secret or CA file that cannot be read would
    /// otherwise only fail once the gateway first talks to the database.
    private func readableFile(_ value: YAMLValue) throws(ConfigError) -> String {
        let path = try filePath(value)
        if let problem = FileAccess.problem(at: path) { throw value.error("\(path): \(problem)") }
        return path
    }
}
