import StapleGateTLS

/// The name a device goes by in traces, in client-id checks and (optionally) as its broker
/// username: taken from its verified certificate, never from what it claims in its CONNECT.
public enum DeviceIdentity {
    /// The identity from `source`, or nil when the certificate has no such field (a CN-less
    /// certificate, no URI SAN, …), which admission refuses.
    public static func of(_ certificate: X509Certificate, source: AdmissionConfiguration.IdentitySource) -> String? {
        switch source {
        case .cn:
            return certificate.commonName
        case .sanURI:
            return certificate.subjectAlternativeNames.lazy.compactMap { if case let .uri(value) = $0 { value } else { nil } }.first
        case .sanDNS:
            return certificate.subjectAlternativeNames.lazy.compactMap { if case let .dns(value) = $0 { value } else { nil } }.first
        }
    }
}
