import Foundation
import StapleGateTLS

/// One certificate of a device's chain to check, with the issuer that vouches for it.
struct DeviceCheck: Sendable {
    /// What the gateway has of the certificate in question.
    enum Known: Sendable {
        /// The certificate itself: from a handshake's verified chain, or a live session.
        case certificate(X509Certificate)
        /// Only its cache entry: a device not connected now, rechecked by an operator.
        case cacheEntry(CachedOCSPStatus)
    }

    let known: Known
    let issuer: X509Certificate
    let certID: CertID
    let responderOverride: String?
    /// The device certificate itself (not an intermediate CA).
    let isLeaf: Bool

    /// The override, else the certificate's AIA OCSP URL (the responder its cache entry names,
    /// for a certificate known only by that); nil when there is neither. Computed when asked
    /// (it parses the AIA extension): a cache hit never needs it.
    var responderURL: String? {
        if let responderOverride { return responderOverride }
        switch known {
        case let .certificate(certificate): return certificate.ocspResponderURLs.first
        case let .cacheEntry(entry): return entry.responderURL.isEmpty ? nil : entry.responderURL
        }
    }

    var subject: String {
        switch known {
        case let .certificate(certificate): certificate.subject
        case let .cacheEntry(entry): entry.subject
        }
    }

    /// The CN (else the subject), for the log.
    var logName: String {
        switch known {
        case let .certificate(certificate): certificate.commonName ?? certificate.subject
        case let .cacheEntry(entry): entry.identity ?? entry.subject
        }
    }

    /// "the device certificate", or "intermediate CN=…" for the log.
    var label: String { isLeaf ? "device certificate" : "intermediate \(subject)" }
}

/// Which certificates of a verified chain (leaf first, trust anchor last) are checked, and
/// under which CA's policy: the first CA above the leaf that has an override, else the defaults.
struct DeviceCheckPlan {
    let policy: DeviceOCSPConfiguration.CAPolicy
    let checks: [DeviceCheck]

    init(chain: [X509Certificate], configuration: DeviceOCSPConfiguration) {
        let policy = Self.policy(forCAs: chain.dropFirst(), configuration: configuration)
        self.policy = policy
        // The trust anchor (last) is trusted by configuration, not checked. Scope "chain" adds
        // the intermediates between the leaf and the anchor.
        let checkedCount = chain.count < 2 ? 0 : (policy.scope == .leaf ? 1 : chain.count - 1)
        var checks: [DeviceCheck] = []
        for index in 0..<checkedCount {
            let certificate = chain[index]
            // The chain comes verified from OpenSSL (or, for rechecks, from `issuer(of:)`).
            guard let certID = CertID(verifiedCertificate: certificate, issuer: chain[index + 1]) else { continue }
            checks.append(DeviceCheck(known: .certificate(certificate), issuer: chain[index + 1], certID: certID,
                                      responderOverride: policy.responderOverride, isLeaf: index == 0))
        }
        self.checks = checks
    }

    /// The plan for a device certificate known only by its cache entry, issued by `issuers[0]`
    /// (then that CA's own issuers, as far as they are known): the one certificate is checked.
    init(entry: CachedOCSPStatus, issuers: [X509Certificate], configuration: DeviceOCSPConfiguration) {
        policy = Self.policy(forCAs: issuers[...], configuration: configuration)
        checks = [DeviceCheck(known: .cacheEntry(entry), issuer: issuers[0], certID: entry.certID,
                              responderOverride: policy.responderOverride, isLeaf: true)]
    }

    private static func policy(forCAs cas: ArraySlice<X509Certificate>,
                               configuration: DeviceOCSPConfiguration) -> DeviceOCSPConfiguration.CAPolicy {
        guard !configuration.overrides.isEmpty else { return configuration.defaultPolicy }
        for ca in cas {
            let fingerprint = ca.sha256Fingerprint
            if configuration.overrides.contains(where: { $0.caFingerprint == fingerprint }) {
                return configuration.policy(forIssuerFingerprint: fingerprint)
            }
        }
        return configuration.defaultPolicy
    }
}

/// What was found for one certificate of the chain, before the CA's policy turns it into a verdict.
enum DeviceCheckFinding {
    case noResponder(DeviceCheck)
    case status(DeviceCheck, CachedOCSPStatus, url: String, cached: Bool)

    /// Every value `resultLabel` takes, for counters made up front.
    static let resultLabels = ["good", "revoked", "unknown", "unavailable", "no_responder"]

    /// The `result` label of the lookups metric.
    var resultLabel: String {
        switch self {
        case .noResponder: return "no_responder"
        case let .status(_, status, _, _):
            switch status.outcome {
            case .good: return "good"
            case .revoked: return "revoked"
            case .unknown: return "unknown"
            case .failed: return "unavailable"
            }
        }
    }

    /// The answer behind this finding, when it is the device certificate's own.
    var leafEvidence: OCSPCheckEvidence? {
        guard case let .status(check, status, _, cached) = self, check.isLeaf else { return nil }
        return OCSPCheckEvidence(status: status, fromCache: cached)
    }

    func verdict(policy: DeviceOCSPConfiguration.CAPolicy) -> DeviceCertificateVerdict {
        switch self {
        case let .noResponder(check):
            guard check.isLeaf else { return .accept(note: "\(check.label) names no OCSP responder: not checked") }
            return policy.noResponder == .allow
                ? .accept(note: "no OCSP responder for the device certificate: allowed by policy")
                : .reject(.noResponder, reason: "the device certificate names no OCSP responder (no AIA OCSP URL) and none is configured")
        case let .status(check, status, url, cached):
            let source = cached ? "cached until \(status.expiresAt.iso8601String)" : "from \(url)"
            switch status.outcome {
            case .good:
                return .accept(note: check.isLeaf ? "OCSP good (\(source))" : "\(check.label): OCSP good (\(source))")
            case let .revoked(at, reason):
                let why = reason.map { ", reason \($0.rawValue)" } ?? ""
                return .reject(.revoked, reason: "\(check.label) revoked at \(at.iso8601String)\(why) (OCSP, \(source))")
            case .unknown:
                return policy.unknown == .allow
                    ? .accept(note: "\(check.label): OCSP status unknown, allowed by policy (\(source))")
                    : .reject(.statusUnknown, reason: "the OCSP responder does not know the \(check.label) (status unknown, \(source))")
            case let .failed(reason):
                return policy.unreachable == .allow
                    ? .accept(note: "\(check.label): no OCSP answer (\(reason)), allowed by policy (soft-fail)")
                    : .reject(.statusUnavailable, reason: "OCSP check of the \(check.label) failed: \(reason)")
            }
        }
    }
}

/// The OCSP answer a verdict was based on, for the device's trace: its details are formatted
/// only when a trace asks.
struct OCSPCheckEvidence: DeviceCheckEvidence {
    let status: CachedOCSPStatus
    let fromCache: Bool

    var traceDetails: [String: String] { status.traceDetails }
}

/// A device certificate asked about again (`DeviceStatusChecker.recheck`): the verdict a new
/// connection would now get, and what was asked.
public struct DeviceRecheck: Sendable {
    public enum Asked: Sendable {
        /// OCSP checks are off for the certificate's CA: nothing was asked.
        case checksOff
        /// Neither the certificate nor the configuration names a responder.
        case noResponder
        /// The responder's verified answer, or why there was none (`.failed`); now cached.
        case answered(CachedOCSPStatus)
    }

    public let verdict: DeviceCertificateVerdict
    public let asked: Asked

    public init(verdict: DeviceCertificateVerdict, asked: Asked) {
        self.verdict = verdict
        self.asked = asked
    }

    /// The cached status the recheck produced, if it asked.
    public var status: CachedOCSPStatus? {
        if case let .answered(status) = asked { return status }
        return nil
    }
}
