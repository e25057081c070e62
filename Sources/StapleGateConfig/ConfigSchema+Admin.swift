import Foundation
import StapleGateTLS

extension ConfigSchema {
    static let adminKeys = ["enabled", "address", "port", "token_file", "allow_unauthenticated"]

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
        if let value = keys["token_file"] {
            let path = try filePath(value)
            // Read now, so an open or short token fails the start (or the reload), not a scrape.
            do { admin.token = try AccessToken.load(at: path) } catch { throw value.error(error.description) }
            admin.tokenFile = path
        }
        if let value = keys["allow_unauthenticated"] { admin.allowUnauthenticated = try value.boolean() }
        // The traces say which device connected from where and when: off this machine, only to
        // those who hold the token, unless the operator says in so many words that anyone may read them.
        if admin.enabled, admin.token == nil, !admin.allowUnauthenticated, !Self.isLoopback(admin.address) {
            let reason = "\"\(admin.address)\" is not a loopback address, and the admin listener serves device traces (who connected from where) and metrics without authentication: set admin.token_file (a file holding a bearer token, e.g. `openssl rand -hex 32`), or admin.allow_unauthenticated: true to serve them to anyone who can reach it"
            throw keys["address"]?.error(reason) ?? section.error(reason)
        }
        return admin
    }

    /// 127.0.0.0/8, ::1 and IPv4-mapped loopback: addresses only this machine can reach.
    static func isLoopback(_ address: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return false }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }
        let mapped = bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF
        return mapped && bytes[12] == 127
    }
}
