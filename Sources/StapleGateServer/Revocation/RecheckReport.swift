import Foundation
import StapleGateOCSP
import StapleGateTLS

/// One certificate asked about again: what the responder answered, and what the gateway did
/// with the answer. `summary` says it in one line, from these fields only, so that the words an
/// operator reads can never claim more than what was done.
public struct CertificateRecheck: Codable, Sendable, Equatable {
    public enum Answer: String, Codable, Sendable, CaseIterable {
        case good, revoked, unknown
        /// The responder could not be asked, or its answer was not valid.
        case unavailable
        /// Neither the certificate (AIA) nor the configuration names a responder.
        case noResponder = "no_responder"
        /// OCSP checks are off for the certificate's CA.
        case notChecked = "not_checked"
        /// The certificate's CA is not known to the gateway: no request could be made.
        case issuerUnknown = "issuer_unknown"
    }

    public var serial: String
    /// The device identity; nil when not known (an entry of an older version, an intermediate).
    public var device: String?
    public var subject: String
    /// The responder asked; nil when none was.
    public var responder: String?
    public var answer: Answer
    public var revokedAt: Date?
    public var revocationReason: String?
    /// Why there was no answer (for `unavailable`).
    public var failure: String?
    /// Until when the new answer is cached; nil when nothing is cached for the certificate now.
    public var cachedUntil: Date?
    /// Whether a new connection with this certificate is now refused.
    public var refused: Bool
    /// The verdict in the log's words ("device certificate revoked at …").
    public var verdict: String
    /// Sessions with this certificate closed because of the answer, and those left open.
    public var sessionsClosed: Int
    public var sessionsKept: Int
    /// Where the sessions with this certificate came from (closed or kept), for the operator.
    public var sessionAddresses: [String] = []
    /// Whether the previously cached answer was dropped (no new answer could replace it).
    public var cachedAnswerDropped: Bool

    /// "revoked at 2026-12-06T23:50:00Z, keyCompromise: cached until …; 1 session closed".
    public var summary: String {
        var answerText: String
        switch answer {
        case .good: answerText = "good"
        case .revoked:
            answerText = "revoked at \(Self.format(revokedAt))" + (revocationReason.map { ", \($0)" } ?? "")
        case .unknown: answerText = refused ? "unknown (refused by policy)" : "unknown (allowed by policy)"
        case .unavailable:
            answerText = "no answer from \(responder ?? "the responder") (\(failure ?? "failed"))"
        case .noResponder:
            answerText = "no OCSP responder for it (no AIA OCSP URL and none configured), " + (refused ? "refused" : "allowed") + " by policy"
        case .notChecked: answerText = "OCSP checks are off for its CA: not asked"
        case .issuerUnknown:
            answerText = "its issuing CA is not known to this gateway (not in tls.device_ca, and no device has presented it since the start): not asked"
        }
        var actions: [String] = []
        if let cachedUntil { actions.append("cached until \(Self.format(cachedUntil))") }
        if cachedAnswerDropped {
            actions.append("the cached answer was dropped" + (answer == .issuerUnknown ? ", so its next connect asks the responder" : ""))
        }
        if answer == .unavailable {
            actions.append(refused ? "new connections are refused until the responder answers (unreachable: reject)"
                                   : "new connections are admitted without an answer (unreachable: allow)")
        }
        var sessions: [String] = []
        if sessionsClosed > 0 || sessionsKept == 0 { sessions.append("\(Self.count(sessionsClosed)) closed") }
        if sessionsKept > 0 { sessions.append("\(Self.count(sessionsKept)) kept") }
        let from = sessionAddresses.isEmpty ? "" : " (from \(sessionAddresses.joined(separator: ", ")))"
        actions.append(sessions.joined(separator: ", ") + from)
        return "\(answerText): \(actions.joined(separator: "; "))"
    }

    private static func count(_ sessions: Int) -> String { sessions == 1 ? "1 session" : "\(sessions) sessions" }

    static func format(_ date: Date?) -> String { date.map { $0.iso8601String } ?? "an unknown time" }
}

/// What `staplegate ocsp recheck` asked for and got: one entry per certificate the gateway
/// knows for the device or serial (cached, on disk, or connected now).
public struct RecheckReport: Codable, Sendable, Equatable {
    /// "device dev-1" or "serial 0AAB".
    public let target: String
    public let certificates: [CertificateRecheck]
    /// In a fleet: what the other gateways closed for the refused certificates, one entry per
    /// gateway and certificate (those that replied within the wait).
    public var elsewhere: [FleetSessionsClosed]

    public init(target: String, certificates: [CertificateRecheck], elsewhere: [FleetSessionsClosed] = []) {
        self.target = target
        self.certificates = certificates
        self.elsewhere = elsewhere
    }

    /// How the recheck went as a whole; the command's exit status follows it.
    public enum Outcome: Sendable, Equatable {
        /// Every certificate is accepted by its new answer (or was not checked, by policy).
        case accepted
        /// At least one certificate is now refused (its sessions were closed).
        case refused
        /// The gateway knows nothing about the target: no cached status, no connected session.
        case nothingKnown
        /// None refused, but at least one could not be asked (responder down, CA unknown).
        case incomplete
    }

    public var outcome: Outcome {
        if certificates.isEmpty { return .nothingKnown }
        if certificates.contains(where: { $0.refused && $0.answer != .unavailable }) { return .refused }
        if certificates.contains(where: { $0.answer == .unavailable || $0.answer == .issuerUnknown }) { return .incomplete }
        return .accepted
    }

    /// The lines the command prints.
    public var lines: [String] {
        guard !certificates.isEmpty else {
            return ["the gateway knows nothing about \(target): no cached OCSP status and no connected session; nothing was done"]
        }
        var lines: [String] = []
        for certificate in certificates {
            lines.append("\(certificate.serial)  \(certificate.device ?? certificate.subject)  \(certificate.summary)")
            for other in elsewhere where other.serial == certificate.serial {
                let from = other.addresses.isEmpty ? "" : " (from \(other.addresses.joined(separator: ", ")))"
                lines.append("    on \(other.instance): \(other.closed == 1 ? "1 session" : "\(other.closed) sessions") closed\(from)")
            }
        }
        return lines
    }
}
