import Foundation

/// What the device-status cache remembers about one certificate (keyed by its CertID): the
/// verified answer, or a recent failure to get one.
public struct CachedOCSPStatus: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        case good
        case revoked(at: Date, reason: RevocationReason?)
        case unknown
        /// No verified answer could be had (responder down, timed out, invalid answer): the
        /// reason in words. Kept only for `failureCacheLifetime`.
        case failed(String)
    }

    public var certID: CertID
    public var outcome: Outcome
    /// From the verified response; nil for failures.
    public var thisUpdate: Date?
    public var nextUpdate: Date?
    /// When the responder was asked.
    public var checkedAt: Date
    /// When this entry stops being used: min(checkedAt + cache lifetime, nextUpdate) for an
    /// answer, checkedAt + failure lifetime for a failure.
    public var expiresAt: Date
    public var responderURL: String
    /// The device certificate's subject, for listings.
    public var subject: String
    /// The device's identity (as `admission.identity` takes it from the certificate), so that
    /// `staplegate ocsp recheck --device` finds a device that is not connected; nil for
    /// intermediate CAs and for entries written before identities were recorded.
    public var identity: String?
    /// How long the responder took (connect to last byte), for answers fetched by this run;
    /// nil for failures and for entries loaded from the store.
    public var latency: Duration?

    public init(certID: CertID, outcome: Outcome, thisUpdate: Date?, nextUpdate: Date?, checkedAt: Date,
                expiresAt: Date, responderURL: String, subject: String, identity: String? = nil) {
        self.certID = certID
        self.outcome = outcome
        self.thisUpdate = thisUpdate
        self.nextUpdate = nextUpdate
        self.checkedAt = checkedAt
        self.expiresAt = expiresAt
        self.responderURL = responderURL
        self.subject = subject
        self.identity = identity
    }

    public var isFailure: Bool {
        if case .failed = outcome { return true }
        return false
    }
}
