/// How a device's MQTT session is admitted once its TLS handshake (and certificate checks)
/// succeeded: what its first packet must be, and what it may claim.
public struct AdmissionConfiguration: Sendable, Equatable {
    /// Where the device's identity comes from.
    public enum IdentitySource: String, Sendable, CaseIterable {
        /// The subject's common name.
        case cn
        /// The first URI subject alternative name (SPIFFE-style IDs, AWS IoT-style URNs).
        case sanURI = "san_uri"
        /// The first DNS subject alternative name.
        case sanDNS = "san_dns"
    }

    public var identity: IdentitySource = .cn
    /// Refuse a CONNECT whose client id differs from the identity (CONNACK "identifier rejected").
    public var clientIDMustMatchIdentity = false
    /// Replace the CONNECT's username with the identity and drop any password, so broker ACLs
    /// keyed on the username (Mosquitto's `%u`) apply per device certificate.
    public var usernameFromCertificate = false
    /// Largest CONNECT accepted (the will payload included).
    public var maximumConnectBytes = 65_536
    /// Time allowed between the end of the handshake and a complete CONNECT.
    public var connectTimeout: Duration = .seconds(10)

    public init() {}
}
