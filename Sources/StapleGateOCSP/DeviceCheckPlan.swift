import Foundation
import StapleGateTLS

/// One certificate of a device's chain to check, with the issuer that vouches for it.
struct DeviceCheck: Sendable {
    let certificate: X509Certificate
    let issuer: X509Certificate
    let certID: CertID
    let responderOverride: String?
    /// The device certificate itself (not an intermediate CA).
    let isLeaf: Bool

    /// The override, else the certificate's AIA OCSP URL; nil when there is neither. Computed
    /// when asked (it parses the AIA extension): a cache hit never needs it.
    var responderURL: String? { responderOverride ?? certificate.ocspResponderURLs.first }

    /// "the device certificate", or "intermediate CN=…" for the log.
    var label: String { isLeaf ? "device certificate" : "intermediate \(certificate.subject)" }
}

/// Which certificates of a verified chain (leaf first, trust anchor last) are checked, and
/// under which CA's policy: the first CA above the leaf that has an override, else the defaults.
struct DeviceCheckPlan {
    let policy: DeviceOCSPConfiguration.CAPolicy
    let checks: [DeviceCheck]

    init(chain: [X509Certificate], configuration: DeviceOCSPConfiguration) {
        var policy = configuration.defaultPolicy
        if !configuration.overrides.isEmpty {
            for ca in chain.dropFirst() {
                let fingerprint = ca.sha256Fingerprint
                if configuration.overrides.contains(where: { $0.caFingerprint == fingerprint }) {
                    policy = configuration.policy(forIssuerFingerprint: fingerprint)
                    break
                }
            }
        }
        self.policy = policy
        // The trust anchor (last) is trusted by configuration, not checked. Scope "chain" adds
        // the intermediates between the leaf and the anchor.
        let checkedCount = chain.count < 2 ? 0 : (policy.scope == .leaf ? 1 : chain.count - 1)
        var checks: [DeviceCheck] = []
        for index in 0..<checkedCount {
            let certificate = chain[index]
            // The chain comes verified from OpenSSL (or, for rechecks, from `issuer(of:)`).
            guard let certID = CertID(verifiedCertificate: certificate, issuer: chain[index + 1]) else { continue }
            checks.append(DeviceCheck(certificate: certificate, issuer: chain[index + 1], certID: certID,
                                      responderOverride: policy.responderOverride, isLeaf: index == 0))
        }
        self.checks = checks
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

    func verdict(policy: DeviceOCSPConfiguration.CAPolicy) -> DeviceCertificateVerdict {
        switch self {
        case let .noResponder(check):
            guard check.isLeaf else { return .accept(note: "\(check.label) names no OCSP responder: not checked") }
            return policy.noResponder == .allow
                ? .accept(note: "no OCSP responder for the device certificate: allowed by policy")
                : .reject(.noResponder, reason: "the device certificate names no OCSP responder (no AIA OCSP URL) and none is configured")
        case let .status(check, status, url, cached):
            let source = cached ? "cached until \(Self.format(status.expiresAt))" : "from \(url)"
            switch status.outcome {
            case .good:
                return .accept(note: check.isLeaf ? "OCSP good (\(source))" : "\(check.label): OCSP good (\(source))")
            case let .revoked(at, reason):
                let why = reason.map { ", reason \($0.rawValue)" } ?? ""
                return .reject(.revoked, reason: "\(check.label) revoked at \(Self.format(at))\(why) (OCSP, \(source))")
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

    private static func format(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
