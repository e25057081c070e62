import Foundation
import Logging
import NIOCore
import PostgresNIO
import StapleGateOCSP

/// The fleet's staples (`fleet.store: postgres`): each gateway writes the staple it verified
/// after every refresh, keyed by the certificate's SHA-256 fingerprint, and a gateway that
/// starts (or fails to reach the responder) reads it from here. Gateways serving the same
/// certificate share one row; an older answer never replaces a newer one.
///
/// Nothing read here is trusted: `StaplingService` verifies the DER (signature, signer, CertID,
/// validity window) exactly as it verifies a responder's answer before stapling it, so a row
/// tampered with or out of date is refused with its reason in the log.
public struct PostgresStapleArchive: StapleArchive {
    public let database: FleetDatabase
    private let logger: Logger

    /// How long a read or a write may wait for the database: a start must not hang on it (the
    /// responder is asked next), nor a refresh.
    public static let timeout: Duration = .seconds(5)

    public init(database: FleetDatabase, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    public var location: String { database.location }

    /// Fails at once while the database is known to be away: the start reads staples before the
    /// listener opens, and must not wait out a timeout per certificate (the responder is asked
    /// next, and the staple re-read after a failed refresh).
    private func checkReachable() throws {
        switch database.health {
        case .ready: return
        case .connecting: throw PostgresStoreError("the fleet database \(location) has not answered yet")
        case let .unreachable(reason): throw PostgresStoreError("the fleet database \(location) is unreachable: \(reason)")
        }
    }

    public func staple(fingerprint: String) async throws -> [UInt8]? {
        try checkReachable()
        let client = database.client
        let logger = logger
        do {
            return try await withDeadline(Self.timeout, "read the staple in \(location)") {
                let rows = try await client.query("SELECT der FROM staples WHERE certificate_sha256 = \(fingerprint)", logger: logger)
                for try await der in rows.decode(ByteBuffer.self) { return Array(der.readableBytesView) }
                return nil
            }
        } catch {
            throw PostgresStoreError("cannot read the staple in \(location): \(FleetDatabase.describe(error))")
        }
    }

    public func save(_ response: VerifiedOCSPResponse, fingerprint: String) async throws {
        try checkReachable()
        let client = database.client
        let logger = logger
        let instance = database.instance
        let status: String
        switch response.status {
        case .good: status = "good"
        case .revoked: status = "revoked"
        case .unknown: status = "unknown"
        }
        do {
            try await withDeadline(Self.timeout, "write the staple to \(location)") {
                _ = try await client.query("""
                    INSERT INTO staples (certificate_sha256, der, cert_status, produced_at, this_update, next_update,
                        written_at, written_by)
                    VALUES (\(fingerprint), \(ByteBuffer(bytes: response.der)), \(status), \(response.producedAt),
                        \(response.thisUpdate), \(response.nextUpdate), now(), \(instance))
                    ON CONFLICT (certificate_sha256) DO UPDATE SET
                        der = excluded.der, cert_status = excluded.cert_status, produced_at = excluded.produced_at,
                        this_update = excluded.this_update, next_update = excluded.next_update,
                        written_at = excluded.written_at, written_by = excluded.written_by
                    WHERE staples.produced_at <= excluded.produced_at
                    """, logger: logger)
            }
        } catch {
            throw PostgresStoreError("cannot write the staple to \(location): \(FleetDatabase.describe(error))")
        }
    }
}
