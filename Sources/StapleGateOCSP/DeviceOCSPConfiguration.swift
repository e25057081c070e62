import Foundation

/// How device certificates are checked against OCSP during the TLS handshake: defaults for every
/// device CA, with overrides per CA (as the IoT platforms switch OCSP per CA certificate).
public struct DeviceOCSPConfiguration: Sendable, Equatable {
    /// What to do with a device when the check cannot say "good".
    public enum Decision: String, Sendable, CaseIterable {
        case reject
        case allow
    }

    /// Which certificates of the device's chain are checked.
    public enum Scope: String, Sendable, CaseIterable {
        /// The device certificate only.
        case leaf
        /// The device certificate and every intermediate CA under the trusted root. An
        /// intermediate without an OCSP URL (and no override) is skipped and noted, never a failure.
        case chain
    }

    /// The rules for the devices one CA issued.
    public struct CAPolicy: Sendable, Equatable {
        public var enabled: Bool = true
        /// Used instead of the certificate's AIA OCSP URL when set.
        public var responderOverride: String?
        /// Method, timeout, response cap, and the trust for an https:// responder (`ca_bundle`).
        public var fetch: OCSPFetchConfiguration = OCSPFetchConfiguration()
        /// The responder answered "unknown".
        public var unknown: Decision = .reject
        /// The responder could not be reached, timed out, or answered something that does not
        /// verify. `allow` is soft-fail.
        public var unreachable: Decision = .reject
        /// The certificate names no OCSP responder and there is no override.
        public var noResponder: Decision = .reject
        public var scope: Scope = .leaf

        public init() {}
    }

    /// Overrides for one device CA, identified by its certificate.
    public struct CAOverride: Sendable, Equatable {
        /// SHA-256 of the CA certificate's DER, lowercase hex (`X509Certificate.sha256Fingerprint`).
        public var caFingerprint: String
        /// The CA's subject, for messages.
        public var caSubject: String
        public var policy: CAPolicy

        public init(caFingerprint: String, caSubject: String, policy: CAPolicy) {
            self.caFingerprint = caFingerprint
            self.caSubject = caSubject
            self.policy = policy
        }
    }

    /// The rules for CAs without an override.
    public var defaultPolicy = CAPolicy()
    public var overrides: [CAOverride] = []
    /// A good answer is trusted for at most this long, and never past its nextUpdate.
    public var cacheLifetime: Duration = .seconds(24 * 3600)
    /// A failed lookup (responder down, invalid answer) is remembered this long, so a dead
    /// responder is not asked again by every connecting device.
    public var failureCacheLifetime: Duration = .seconds(30)
    /// Most entries the cache holds; the least recently used go first.
    public var cacheCapacity: Int = 100_000
    /// Responder requests in flight at once; the rest wait their turn inside the handshake timeout.
    public var maximumRequestsInFlight: Int = 32
    /// Send a nonce and require it back (many responders, and all pre-signed ones, ignore nonces).
    public var nonce: Bool = false
    /// Tolerated clock difference with responders when checking thisUpdate / nextUpdate.
    public var clockSkew: Duration = .seconds(300)

    public init() {}

    /// The rules for devices whose issuing CA has this fingerprint.
    public func policy(forIssuerFingerprint fingerprint: String) -> CAPolicy {
        overrides.first { $0.caFingerprint == fingerprint }?.policy ?? defaultPolicy
    }
}
