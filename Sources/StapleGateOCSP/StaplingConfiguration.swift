/// How the gateway keeps a verified OCSP response for each of its own certificates.
public struct StaplingConfiguration: Sendable, Equatable {
    /// What to do with handshakes while no valid staple is held.
    public enum Policy: String, Sendable, CaseIterable {
        /// Serve them without a staple (clients that require one will refuse us).
        case lenient
        /// Refuse them, logging why, until a staple is held.
        case strict
        /// As strict; the default for certificates carrying the must-staple TLS Feature.
        case must
    }

    public var enabled: Bool
    /// nil: `must` for must-staple certificates, `lenient` for the others.
    public var policy: Policy?
    /// Used instead of the certificate's AIA OCSP URL when set.
    public var responderOverride: String?
    public var fetch: OCSPFetchConfiguration
    public var timing: StapleSchedule.Timing
    /// Tolerated clock difference with the responder when checking thisUpdate / nextUpdate.
    public var clockSkew: Duration
    /// On reload, how long a new server certificate waits for its first staple before it is
    /// switched in anyway (until then, handshakes keep the previous certificate and its staple).
    public var reloadStapleWait: Duration = .seconds(60)

    public init(enabled: Bool = true, policy: Policy? = nil, responderOverride: String? = nil,
                fetch: OCSPFetchConfiguration = OCSPFetchConfiguration(),
                timing: StapleSchedule.Timing = StapleSchedule.Timing(), clockSkew: Duration = .seconds(300)) {
        self.enabled = enabled
        self.policy = policy
        self.responderOverride = responderOverride
        self.fetch = fetch
        self.timing = timing
        self.clockSkew = clockSkew
    }

    /// The policy in force for one certificate.
    public func policy(forMustStaple mustStaple: Bool) -> Policy {
        policy ?? (mustStaple ? .must : .lenient)
    }
}
