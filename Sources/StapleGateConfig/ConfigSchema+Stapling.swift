import Foundation
import StapleGateOCSP
import StapleGateTLS

extension ConfigSchema {
    static let staplingKeys = [
        "enabled", "policy", "responder", "ca_bundle", "method", "timeout", "max_response_size",
        "max_refresh_interval", "retry_min", "retry_max", "clock_skew", "reload_staple_wait",
    ]

    func stapling(_ section: YAMLValue) throws(ConfigError) -> StaplingConfiguration {
        let keys = try section.mapping(knownKeys: Self.staplingKeys)
        var stapling = StaplingConfiguration()
        if let value = keys["enabled"] { stapling.enabled = try value.boolean() }
        if let value = keys["policy"] {
            let text = try value.string()
            guard let policy = StaplingConfiguration.Policy(rawValue: text) else {
                throw value.error("must be lenient, strict or must, not \"\(text)\" (leave it out for: must for must-staple certificates, lenient otherwise)")
            }
            stapling.policy = policy
        }
        if let value = keys["responder"] { stapling.responderOverride = try responderURL(value) }
        try fetchSettings(keys, into: &stapling.fetch)
        if let value = keys["max_refresh_interval"] { stapling.timing.maximumInterval = try positiveDuration(value) }
        if let value = keys["retry_min"] { stapling.timing.minimumRetryDelay = try positiveDuration(value) }
        if let value = keys["retry_max"] {
            stapling.timing.maximumRetryDelay = try positiveDuration(value)
            guard stapling.timing.maximumRetryDelay >= stapling.timing.minimumRetryDelay else {
                throw value.error("must not be shorter than retry_min")
            }
        }
        if let value = keys["clock_skew"] { stapling.clockSkew = try duration(value) }
        if let value = keys["reload_staple_wait"] { stapling.reloadStapleWait = try duration(value) }
        return stapling
    }

    /// Shared with `device_ocsp` (top level and per_ca).
    /// The keys of an OCSP fetch, shared by `stapling` and `device_ocsp`: the trust for an
    /// https:// responder, the method, the timeout and the response cap.
    func fetchSettings(_ keys: YAMLMapping, into fetch: inout OCSPFetchConfiguration) throws(ConfigError) {
        if let value = keys["ca_bundle"] {
            let path = try filePath(value)
            do {
                fetch.trust = try ClientTLSContext(caBundleAt: path)
            } catch {
                throw value.error(error.description)
            }
        }
        if let value = keys["method"] {
            let text = try value.string()
            guard let method = OCSPFetchConfiguration.Method(rawValue: text) else {
                throw value.error("must be post or get, not \"\(text)\"")
            }
            fetch.method = method
        }
        if let value = keys["timeout"] { fetch.timeout = try positiveDuration(value) }
        if let value = keys["max_response_size"] { fetch.maximumResponseBytes = try value.integer(in: 512...1_048_576) }
    }

    func responderURL(_ value: YAMLValue) throws(ConfigError) -> String {
        let text = try value.string()
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty else {
            throw value.error("\"\(text)\" is not an http:// or https:// URL")
        }
        return text
    }
}

extension ConfigSchema {
    /// The folder must be usable by the gateway now: an existing writable folder, or one that
    /// can be created in an existing parent.
    func stateDirectory(_ value: YAMLValue) throws(ConfigError) -> String {
        let path = try filePath(value)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw value.error("\(path) is a file, not a folder") }
            guard access(path, W_OK) == 0 else { throw value.error("\(path) is not writable by this user") }
        } else {
            let parent = (path as NSString).deletingLastPathComponent
            guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw value.error("neither \(path) nor its parent folder \(parent) exists")
            }
        }
        return path
    }
}
