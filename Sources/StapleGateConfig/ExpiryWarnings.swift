import Foundation
import StapleGateTLS

/// Problems that do not stop the gateway today but will, or already stop some devices.
enum ExpiryWarnings {
    /// How far ahead an expiry is worth mentioning at every start: a month leaves time to renew.
    static let horizon: TimeInterval = 30 * 86_400

    static func check(_ material: TLSMaterial, configuration tls: TLSServerConfiguration, now: Date) -> [String] {
        var warnings: [String] = []
        for (index, identity) in material.identities.enumerated() {
            let leaf = identity.leaf
            let what = "tls.certificates[\(index)].certificate: server certificate '\(leaf.subject)' in \(tls.certificates[index].chainPath)"
            if let notBefore = leaf.notBefore, notBefore > now {
                warnings.append("\(what) is not valid until \(format(notBefore)); devices will refuse it until then")
            }
            if let expiry = expiry(of: leaf, now: now) {
                warnings.append("\(what) \(expiry); devices will refuse to connect once it has expired")
            }
        }
        for ca in material.deviceCAs {
            if let expiry = expiry(of: ca, now: now) {
                warnings.append("tls.device_ca: device CA '\(ca.subject)' in \(tls.deviceCABundlePath) \(expiry); devices it issued cannot connect after that")
            }
        }
        return warnings
    }

    /// "expired on …" or "expires in N days (on …)", or nil when expiry is beyond the horizon.
    private static func expiry(of certificate: X509Certificate, now: Date) -> String? {
        guard let notAfter = certificate.notAfter else { return nil }
        let remaining = notAfter.timeIntervalSince(now)
        if remaining <= 0 { return "expired on \(format(notAfter))" }
        guard remaining <= horizon else { return nil }
        let days = Int((remaining / 86_400).rounded(.up))
        return "expires in \(days) day\(days == 1 ? "" : "s") (on \(format(notAfter)))"
    }

    private static func format(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
