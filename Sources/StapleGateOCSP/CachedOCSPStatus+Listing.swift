import Foundation
import StapleGateTLS

extension CachedOCSPStatus {
    /// One cache entry as `staplegate ocsp cache` shows it and the control socket sends it.
    public struct Listing: Codable, Sendable, Equatable {
        public var serial: String
        public var subject: String
        /// The device identity; nil for intermediate CAs and entries from older versions.
        public var identity: String?
        /// good, revoked, unknown or failed.
        public var status: String
        public var revokedAt: Date?
        public var revocationReason: String?
        /// For failed lookups: why.
        public var failure: String?
        public var thisUpdate: Date?
        public var nextUpdate: Date?
        public var checkedAt: Date
        public var expiresAt: Date
        public var responder: String
    }

    public var listing: Listing {
        var listing = Listing(serial: certID.serialHex, subject: subject, status: "good", checkedAt: checkedAt,
                              expiresAt: expiresAt, responder: responderURL)
        listing.identity = identity
        listing.thisUpdate = thisUpdate
        listing.nextUpdate = nextUpdate
        switch outcome {
        case .good: break
        case let .revoked(at, reason):
            listing.status = "revoked"
            listing.revokedAt = at
            listing.revocationReason = reason?.rawValue
        case .unknown: listing.status = "unknown"
        case let .failed(why):
            listing.status = "failed"
            listing.failure = why
        }
        return listing
    }
}

extension CachedOCSPStatus {
    /// The fields a device trace shows for this status ("ocsp.status", "ocsp.next_update", …).
    public var traceDetails: [String: String] {
        var details = ["ocsp.responder": responderURL, "ocsp.checked_at": checkedAt.iso8601String,
                       "ocsp.cached_until": expiresAt.iso8601String]
        let listing = self.listing
        details["ocsp.status"] = listing.status
        if let thisUpdate { details["ocsp.this_update"] = thisUpdate.iso8601String }
        if let nextUpdate { details["ocsp.next_update"] = nextUpdate.iso8601String }
        if let revokedAt = listing.revokedAt { details["ocsp.revoked_at"] = revokedAt.iso8601String }
        if let reason = listing.revocationReason { details["ocsp.revocation_reason"] = reason }
        if let failure = listing.failure { details["ocsp.failure"] = failure }
        if let latency { details["ocsp.latency_ms"] = "\((latency.timeInterval * 1000 * 1000).rounded() / 1000)" }
        return details
    }
}
