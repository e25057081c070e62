import Foundation

/// Where verified staples are kept between runs, keyed by the certificate's SHA-256 fingerprint
/// (so a replaced certificate never picks up its predecessor's staple). Chosen once at start
/// (`FleetStores.staples`): the state directory's files, this gateway's alone, or the fleet's
/// table, which lets a new or restarted gateway staple its first handshake with what another
/// one fetched, even while the responder is down.
///
/// What an archive returns is never trusted: the stapling service verifies it exactly as it
/// verifies a responder's answer (signature, signer, CertID, validity window) before serving it.
public protocol StapleArchive: Sendable {
    /// Where the staples are, for messages: a directory or a database URL without secrets.
    var location: String { get }
    /// The staple last saved for the certificate with `fingerprint`, unverified; nil when none.
    func staple(fingerprint: String) async throws -> [UInt8]?
    /// Keeps `response` (verified, good or revoked) for the certificate with `fingerprint`.
    func save(_ response: VerifiedOCSPResponse, fingerprint: String) async throws
}

/// Today's archive: one DER file per certificate in the state directory (`StaplePersistence`).
extension StaplePersistence: StapleArchive {
    public var location: String { directory }

    public func staple(fingerprint: String) async throws -> [UInt8]? {
        loadStaple(fingerprint: fingerprint)
    }

    public func save(_ response: VerifiedOCSPResponse, fingerprint: String) async throws {
        try saveStaple(response.der, fingerprint: fingerprint)
    }
}
