import Foundation
import Logging
import StapleGateOCSP
import StapleGateProxy
import StapleGateTLS
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The schema of the config file (documented in config/staplegate.yaml): walks the composed
/// document into a `GatewayConfiguration`, applying defaults and refusing anything unknown.
/// Only the structure and values are checked here; the files the paths name are checked after.
struct ConfigSchema {
    let file: String
    /// Absolute folder of the config file. Relative paths in the file are relative to it, so a
    /// config and its certificates can be moved together and the service's working directory
    /// does not matter.
    let baseDirectory: String

    init(file: String) {
        self.file = file
        baseDirectory = URL(fileURLWithPath: file).deletingLastPathComponent().standardizedFileURL.path
    }

    func configuration(from root: YAMLValue) throws(ConfigError) -> GatewayConfiguration {
        guard case .mapping = root.node else {
            throw ConfigError(file: file, line: root.node.mark?.line,
                              reason: "expected a mapping with the sections listen, tls, upstream, logging, state_directory, stapling, device_ocsp, admission, trace, admin and fleet, got \(root.kind)")
        }
        let sections = try root.mapping(knownKeys: [
            "listen", "tls", "upstream", "logging", "state_directory", "stapling", "device_ocsp", "admission", "trace", "admin",
            "fleet",
        ])
        // An optional section left with every key commented out reads as empty: all defaults.
        var listen = ListenConfiguration()
        if let section = sections["listen"], section.node.tagName != .null { listen = try self.listen(section) }
        let tls = try self.tls(sections.required("tls"))
        let upstream = try self.upstream(sections.required("upstream"))
        var logging = LoggingConfiguration()
        if let section = sections["logging"], section.node.tagName != .null { logging = try self.logging(section) }
        var stateDirectory = GatewayConfiguration.defaultStateDirectory
        if let value = sections["state_directory"] { stateDirectory = try self.stateDirectory(value) }
        var stapling = StaplingConfiguration()
        if let section = sections["stapling"], section.node.tagName != .null { stapling = try self.stapling(section) }
        var deviceOCSP = DeviceOCSPConfiguration()
        if let section = sections["device_ocsp"], section.node.tagName != .null {
            deviceOCSP = try self.deviceOCSP(section, deviceCA: tls.deviceCABundlePath, deviceCALine: root.keyLines()["tls.device_ca"])
        }
        var configuration = GatewayConfiguration(listen: listen, tls: tls, upstream: upstream, logLevel: logging.level,
                                                 stateDirectory: stateDirectory, stapling: stapling, deviceOCSP: deviceOCSP)
        configuration.logFormat = logging.format
        if let section = sections["admission"], section.node.tagName != .null { configuration.admission = try admission(section) }
        if let section = sections["trace"], section.node.tagName != .null { configuration.trace = try trace(section) }
        if let section = sections["admin"], section.node.tagName != .null { configuration.admin = try admin(section) }
        if let section = sections["fleet"], section.node.tagName != .null { configuration.fleet = try fleet(section) }
        try checkFleetTicketKeys(configuration, root: root)
        return configuration
    }

    // MARK: - Sections

    private func listen(_ section: YAMLValue) throws(ConfigError) -> ListenConfiguration {
        let keys = try section.mapping(knownKeys: [
            "address", "port", "backlog", "drain_grace_period", "max_sessions", "max_handshakes", "per_source_connection_rate",
            "proxy_protocol", "trusted_proxies",
        ])
        var listen = ListenConfiguration()
        if let value = keys["address"] {
            let address = try value.string()
            guard Self.isIPLiteral(address) else {
                throw value.error("\"\(address)\" is not an IPv4 or IPv6 address (e.g. \"0.0.0.0\" for all IPv4 interfaces, \"::\" for all IPv6 ones)\(Self.bracketHint(address))")
            }
            listen.address = address
        }
        if let value = keys["port"] { listen.port = try value.integer(in: 0...65535) }
        if let value = keys["backlog"] { listen.backlog = try value.integer(in: 1...65535) }
        if let value = keys["drain_grace_period"] { listen.drainGracePeriod = try duration(value) }
        if let value = keys["max_sessions"] { listen.maxSessions = try sessionLimit(value) }
        if let value = keys["max_handshakes"] { listen.maxHandshakes = try value.integer(in: 0...1_000_000) }
        if let value = keys["per_source_connection_rate"] { listen.perSourceConnectionRate = try value.integer(in: 0...1_000_000) }
        try proxyProtocol(keys, section: section, into: &listen)
        return listen
    }

    private func tls(_ section: YAMLValue) throws(ConfigError) -> TLSServerConfiguration {
        let keys = try section.mapping(knownKeys: [
            "certificates", "device_ca", "verify_depth", "min_version",
            "tls13_ciphersuites", "tls12_ciphers", "groups", "handshake_timeout", "session_ticket_keys", "open_key_files",
            "session_cache_size",
        ])
        let list = try keys.required("certificates")
        let items = try list.list()
        // OpenSSL has one slot per key type; two is the most that can be in use at once.
        guard (1...2).contains(items.count) else {
            throw list.error("must list 1 or 2 certificates (at most one ECDSA and one RSA), not \(items.count)")
        }
        var certificates: [TLSServerConfiguration.CertificateKeyPair] = []
        for item in items {
            let pair = try item.mapping(knownKeys: ["certificate", "key"])
            certificates.append(.init(chainPath: try filePath(pair.required("certificate")),
                                      keyPath: try filePath(pair.required("key"))))
        }
        var tls = TLSServerConfiguration(certificates: certificates, deviceCABundlePath: try filePath(keys.required("device_ca")))
        if let value = keys["verify_depth"] { tls.verifyDepth = try value.integer(in: 0...100) }
        if let value = keys["min_version"] { tls.minimumVersion = try protocolVersion(value) }
        if let value = keys["tls13_ciphersuites"] { tls.tls13Ciphersuites = try openSSLList(value) }
        if let value = keys["tls12_ciphers"] { tls.tls12Ciphers = try openSSLList(value) }
        if let value = keys["groups"] { tls.groups = try openSSLList(value) }
        if let value = keys["handshake_timeout"] { tls.handshakeTimeout = try positiveDuration(value) }
        if let value = keys["open_key_files"] { tls.openKeyFiles = try choice(value) }
        if let value = keys["session_cache_size"] { tls.sessionCacheSize = try value.integer(in: 1...10_000_000) }
        if let value = keys["session_ticket_keys"] {
            // The word `fleet` is the fleet's rotated keys; a key file of that name is `./fleet`.
            tls.sessionTicketKeys = (try? value.string()) == "fleet" ? .fleet : .file(try filePath(value))
        }
        return tls
    }

    // MARK: - Values

    /// An absolute, normalised path; relative ones are taken from the config file's folder.
    func filePath(_ value: YAMLValue) throws(ConfigError) -> String {
        let text = try value.string()
        guard !text.isEmpty else { throw value.error("must name a file, not be empty") }
        return resolve(text)
    }

    func resolve(_ path: String) -> String {
        let base = URL(fileURLWithPath: baseDirectory, isDirectory: true)
        return URL(fileURLWithPath: path, relativeTo: path.hasPrefix("/") ? nil : base).standardizedFileURL.path
    }

    private func protocolVersion(_ value: YAMLValue) throws(ConfigError) -> TLSServerConfiguration.ProtocolVersion {
        // Unquoted 1.2 and 1.3 are YAML floats; they can only mean the version.
        if value.node.tagName == .float, let number = value.node.float {
            if number == 1.2 { return .tls12 }
            if number == 1.3 { return .tls13 }
        }
        if value.node.tagName == .str, let text = value.node.scalar?.string,
           let version = TLSServerConfiguration.ProtocolVersion(rawValue: text) {
            return version
        }
        let shown = value.node.scalar.map { "\"\($0.string)\"" } ?? value.kind
        throw value.error("must be \"1.2\" or \"1.3\", not \(shown)")
    }

    /// A colon-separated OpenSSL list; OpenSSL itself judges the names when the context is built.
    private func openSSLList(_ value: YAMLValue) throws(ConfigError) -> String {
        let text = try value.string()
        // An empty list would disable every suite rather than mean "default".
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw value.error("must not be empty; remove the key to keep the default")
        }
        return text
    }

    func duration(_ value: YAMLValue) throws(ConfigError) -> Duration {
        // Bare numbers arrive as YAML ints; everything else must be a string such as "10s".
        guard value.node.tagName == .str || value.node.tagName == .int, let text = value.node.scalar?.string else {
            throw value.error("expected a duration, got \(value.kind); use \(ConfigDuration.acceptedForms)")
        }
        guard let duration = ConfigDuration.parse(text) else {
            throw value.error("\"\(text)\" is not a duration; use \(ConfigDuration.acceptedForms)")
        }
        return duration
    }

    func positiveDuration(_ value: YAMLValue) throws(ConfigError) -> Duration {
        let duration = try duration(value)
        guard duration > .zero else { throw value.error("must be longer than 0") }
        return duration
    }

    // MARK: - Address syntax

    static func isIPLiteral(_ text: String) -> Bool {
        var storage = in6_addr()
        return inet_pton(AF_INET, text, &storage) == 1 || inet_pton(AF_INET6, text, &storage) == 1
    }

    /// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
    static func isHostName(_ text: String) -> Bool {
        let name = text.hasSuffix(".") ? String(text.dropLast()) : text
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    /// "[::1]" is how URLs write IPv6 addresses, a likely habit.
    static func bracketHint(_ text: String) -> String {
        guard text.hasPrefix("["), text.hasSuffix("]"), isIPLiteral(String(text.dropFirst().dropLast())) else { return "" }
        return "; write IPv6 addresses without brackets"
    }
}
