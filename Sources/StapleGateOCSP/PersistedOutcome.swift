import Foundation

/// A status's outcome as the columns of a stored row (`outcome`, `revoked_at`,
/// `revocation_reason`), both ways: one spelling for the SQLite file and the fleet's PostgreSQL
/// table. `.failed` is never stored (stores filter it before writing).
public struct PersistedOutcome: Sendable {
    public let text: String
    public let revokedAt: Date?
    public let reason: String?

    public init(_ outcome: CachedOCSPStatus.Outcome) {
        switch outcome {
        case .good: self.init(text: "good")
        case .unknown: self.init(text: "unknown")
        case .revoked(let at, let reason): self.init(text: "revoked", revokedAt: at, reason: reason?.rawValue)
        case .failed: preconditionFailure("failures are not persisted")
        }
    }

    private init(text: String, revokedAt: Date? = nil, reason: String? = nil) {
        self.text = text
        self.revokedAt = revokedAt
        self.reason = reason
    }

    /// The outcome a row's columns spell; nil for one this version cannot interpret (an outcome
    /// or reason written by a newer one): better to ask the responder again than to guess.
    public static func outcome(text: String?, revokedAt: Date?, reason: String?) -> CachedOCSPStatus.Outcome? {
        switch text {
        case "good": return .good
        case "unknown": return .unknown
        case "revoked":
            guard let revokedAt else { return nil }
            guard let reason else { return .revoked(at: revokedAt, reason: nil) }
            guard let known = RevocationReason(rawValue: reason) else { return nil }
            return .revoked(at: revokedAt, reason: known)
        default:
            return nil
        }
    }
}
