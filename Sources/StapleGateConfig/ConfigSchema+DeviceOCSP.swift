import StapleGateOCSP
import StapleGateTLS

extension ConfigSchema {
    /// The keys of a `CAPolicy`: at the top of `device_ocsp` they set the defaults, in a `per_ca`
    /// entry they override them for that CA.
    static let deviceOCSPPolicyKeys = [
        "enabled", "responder", "ca_bundle", "method", "timeout", "max_response_size",
        "unknown", "unreachable", "no_responder", "scope",
    ]
    static let deviceOCSPKeys = deviceOCSPPolicyKeys + [
        "cache_lifetime", "failure_cache_lifetime", "cache_size", "max_in_flight", "nonce", "clock_skew", "per_ca",
    ]
    static let deviceOCSPPerCAKeys = ["ca"] + deviceOCSPPolicyKeys

    /// `deviceCA` is the resolved `tls.device_ca` path (at `deviceCALine`): every `per_ca` entry
    /// must name one of the CAs in it, or it could never apply.
    func deviceOCSP(_ section: YAMLValue, deviceCA: String, deviceCALine: Int?) throws(ConfigError) -> DeviceOCSPConfiguration {
        let keys = try section.mapping(knownKeys: Self.deviceOCSPKeys)
        var ocsp = DeviceOCSPConfiguration()
        // The defaults are complete before any per_ca entry starts from them, whatever the key order.
        ocsp.defaultPolicy = try caPolicy(keys, base: ocsp.defaultPolicy)
        if let value = keys["cache_lifetime"] { ocsp.cacheLifetime = try positiveDuration(value) }
        if let value = keys["failure_cache_lifetime"] { ocsp.failureCacheLifetime = try duration(value) }
        if let value = keys["cache_size"] { ocsp.cacheCapacity = try value.integer(in: 1...10_000_000) }
        if let value = keys["max_in_flight"] { ocsp.maximumRequestsInFlight = try value.integer(in: 1...1024) }
        if let value = keys["nonce"] { ocsp.nonce = try value.boolean() }
        if let value = keys["clock_skew"] { ocsp.clockSkew = try duration(value) }
        // Like a section, a per_ca left with every entry commented out reads as empty.
        if let value = keys["per_ca"], value.node.tagName != .null {
            ocsp.overrides = try caOverrides(value, defaults: ocsp.defaultPolicy, deviceCA: deviceCA, deviceCALine: deviceCALine)
        }
        return ocsp
    }

    private func caOverrides(
        _ value: YAMLValue, defaults: DeviceOCSPConfiguration.CAPolicy, deviceCA: String, deviceCALine: Int?
    ) throws(ConfigError) -> [DeviceOCSPConfiguration.CAOverride] {
        let items = try value.list()
        guard !items.isEmpty else { return [] }
        let deviceCAs: [X509Certificate]
        do {
            deviceCAs = try PEMFile.caBundle(at: deviceCA)
        } catch {
            // As the TLS file checks would report it, had they come first.
            throw ConfigError(file: file, key: "tls.device_ca", line: deviceCALine, reason: error.description)
        }
        let deviceCAFingerprints = Set(deviceCAs.map(\.sha256Fingerprint))
        var overrides: [DeviceOCSPConfiguration.CAOverride] = []
        // The `ca` value of the entry that claimed each CA first.
        var claimed: [String: YAMLValue] = [:]
        for item in items {
            let keys = try item.mapping(knownKeys: Self.deviceOCSPPerCAKeys)
            let caValue = try keys.required("ca")
            let path = try filePath(caValue)
            let ca = try singleCA(caValue, at: path)
            let fingerprint = ca.sha256Fingerprint
            guard deviceCAFingerprints.contains(fingerprint) else {
                throw caValue.error("\(path): CA '\(ca.subject)' is not in tls.device_ca (\(deviceCA)), so no device of it can connect; add it there or remove this entry")
            }
            if let first = claimed[fingerprint] {
                let line = first.line.map { " on line \($0)" } ?? ""
                throw caValue.error("\(path): CA '\(ca.subject)' already has an entry, \(first.path)\(line); give each CA one entry")
            }
            claimed[fingerprint] = caValue
            overrides.append(.init(caFingerprint: fingerprint, caSubject: ca.subject, policy: try caPolicy(keys, base: defaults)))
        }
        return overrides
    }

    /// The one CA certificate a `per_ca` entry is about.
    private func singleCA(_ value: YAMLValue, at path: String) throws(ConfigError) -> X509Certificate {
        let certificates: [X509Certificate]
        do {
            certificates = try PEMFile.caBundle(at: path)
        } catch {
            throw value.error(error.description)
        }
        guard certificates.count == 1 else {
            throw value.error("\(path): holds \(certificates.count) certificates; name a file with just the CA certificate this entry is for")
        }
        return certificates[0]
    }

    /// `base` with the policy keys that `keys` names applied.
    private func caPolicy(
        _ keys: YAMLMapping, base: DeviceOCSPConfiguration.CAPolicy
    ) throws(ConfigError) -> DeviceOCSPConfiguration.CAPolicy {
        var policy = base
        if let value = keys["enabled"] { policy.enabled = try value.boolean() }
        if let value = keys["responder"] { policy.responderOverride = try responderURL(value) }
        try fetchSettings(keys, into: &policy.fetch)
        if let value = keys["unknown"] { policy.unknown = try choice(value) }
        if let value = keys["unreachable"] { policy.unreachable = try choice(value) }
        if let value = keys["no_responder"] { policy.noResponder = try choice(value) }
        if let value = keys["scope"] { policy.scope = try choice(value) }
        return policy
    }

    /// One of the cases of `Choice`, by name.
    func choice<Choice: RawRepresentable & CaseIterable>(
        _ value: YAMLValue
    ) throws(ConfigError) -> Choice where Choice.RawValue == String {
        let text = try value.string()
        guard let choice = Choice(rawValue: text) else {
            let names = Choice.allCases.map(\.rawValue)
            let listed = names.dropLast().joined(separator: ", ") + " or " + (names.last ?? "")
            throw value.error("must be \(listed), not \"\(text)\"")
        }
        return choice
    }
}
