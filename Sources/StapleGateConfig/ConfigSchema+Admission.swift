import StapleGateAdmission
import StapleGateTrace

extension ConfigSchema {
    static let admissionKeys = [
        "identity", "client_id_must_match_identity", "username_from_certificate", "max_connect_size", "connect_timeout",
    ]
    static let traceKeys = ["enabled", "retention", "max_size_mb", "queue_capacity", "max_message_trace"]

    func admission(_ section: YAMLValue) throws(ConfigError) -> AdmissionConfiguration {
        let keys = try section.mapping(knownKeys: Self.admissionKeys)
        var admission = AdmissionConfiguration()
        if let value = keys["identity"] { admission.identity = try choice(value) }
        if let value = keys["client_id_must_match_identity"] { admission.clientIDMustMatchIdentity = try value.boolean() }
        if let value = keys["username_from_certificate"] { admission.usernameFromCertificate = try value.boolean() }
        // 268 435 455 is MQTT's largest packet; a CONNECT needs far less (a will is its only big part).
        if let value = keys["max_connect_size"] { admission.maximumConnectBytes = try value.integer(in: 64...268_435_455) }
        if let value = keys["connect_timeout"] { admission.connectTimeout = try positiveDuration(value) }
        return admission
    }

    func trace(_ section: YAMLValue) throws(ConfigError) -> TraceConfiguration {
        let keys = try section.mapping(knownKeys: Self.traceKeys)
        var trace = TraceConfiguration()
        if let value = keys["enabled"] { trace.enabled = try value.boolean() }
        if let value = keys["retention"] { trace.retention = try positiveDuration(value) }
        if let value = keys["max_size_mb"] { trace.maximumBytes = Int64(try value.integer(in: 1...1_048_576)) * 1024 * 1024 }
        if let value = keys["queue_capacity"] { trace.queueCapacity = try value.integer(in: 100...10_000_000) }
        if let value = keys["max_message_trace"] { trace.maximumMessageTraceDuration = try positiveDuration(value) }
        return trace
    }
}
