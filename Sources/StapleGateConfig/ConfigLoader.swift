import Foundation
import StapleGateTLS

/// A configuration that has been read, validated and proven usable: its files load and OpenSSL
/// accepts its TLS settings.
public struct LoadedConfiguration: Sendable {
    public let configuration: GatewayConfiguration
    /// Already loaded and cross-checked.
    public let tlsMaterial: TLSMaterial
    /// The `SSL_CTX` built from it (proves the TLS settings are accepted).
    public let serverContext: ServerContext
    /// The keys of `tls.session_ticket_keys`, read afresh at each load (so a reload rotates them);
    /// nil when it is not set.
    public let sessionTicketKeys: SessionTicketKeyRing?
    /// Worth logging at start, e.g. a server certificate that expires within 30 days or has expired.
    public let warnings: [String]
}

/// Reads config/staplegate.yaml-style files. Everything is checked before the gateway starts,
/// so that a bad edit fails a start (or a reload) with one precise message instead of failing
/// device handshakes later.
public enum ConfigLoader {
    /// Reads, validates and checks every referenced file. Throws the FIRST error found.
    public static func load(path: String) throws(ConfigError) -> LoadedConfiguration {
        try load(yaml: read(path), path: path)
    }

    /// Same for YAML text (for tests); `path` is used in messages and to resolve relative paths (its folder).
    public static func load(yaml: String, path: String) throws(ConfigError) -> LoadedConfiguration {
        guard !yaml.allSatisfy(\.isWhitespace) else {
            throw ConfigError(file: path, reason: "is empty; it needs at least the tls and upstream sections (see config/staplegate.yaml)")
        }
        guard let root = try YAMLDocument.compose(yaml, file: path) else {
            throw ConfigError(file: path, reason: "contains only comments; it needs at least the tls and upstream sections (see config/staplegate.yaml)")
        }
        let document = YAMLValue(node: root, path: "", line: nil, file: path)
        let configuration = try ConfigSchema(file: path).configuration(from: document)
        let checks = TLSFileChecks(file: path, keyLines: document.keyLines())
        let material = try checks.material(for: configuration.tls)
        let keyWarnings = try checks.keyFilePermissions(for: configuration.tls)
        let ticketKeys = try checks.sessionTicketKeys(for: configuration.tls)
        let context = try checks.serverContext(for: configuration.tls, material: material, ticketKeys: ticketKeys)
        if configuration.stapling.enabled {
            try checks.staplingTargets(for: context, configuration: configuration.stapling)
        }
        return LoadedConfiguration(
            configuration: configuration,
            tlsMaterial: material,
            serverContext: context,
            sessionTicketKeys: ticketKeys,
            warnings: keyWarnings + ExpiryWarnings.check(material, configuration: configuration.tls, now: Date())
        )
    }

    private static func read(_ path: String) throws(ConfigError) -> String {
        if let problem = FileAccess.problem(at: path) {
            throw ConfigError(file: path, reason: "config file: \(problem)")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigError(file: path, reason: "config file could not be read (\(error.localizedDescription))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, reason: "is not UTF-8 text")
        }
        return text
    }
}
