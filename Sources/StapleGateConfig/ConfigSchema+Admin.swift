extension ConfigSchema {
    static let adminKeys = ["enabled", "address", "port"]

    func admin(_ section: YAMLValue) throws(ConfigError) -> AdminConfiguration {
        let keys = try section.mapping(knownKeys: Self.adminKeys)
        var admin = AdminConfiguration()
        if let value = keys["enabled"] { admin.enabled = try value.boolean() }
        if let value = keys["address"] {
            let address = try value.string()
            // A literal, as for listen.address: which interface the probes are on must not
            // depend on name resolution at start.
            guard Self.isIPLiteral(address) else {
                throw value.error("\"\(address)\" is not an IPv4 or IPv6 address (e.g. \"127.0.0.1\" for this machine only, \"0.0.0.0\" for every IPv4 interface)")
            }
            admin.address = address
        }
        if let value = keys["port"] { admin.port = try value.integer(in: 0...65535) }
        return admin
    }
}
