import Foundation
import NIOCore
import PostgresNIO
import StapleGateOCSP

/// A `CachedOCSPStatus` as a row of `device_ocsp_status`, both ways; the columns are those of
/// the SQLite file's table (plus `written_by`, the gateway that asked the responder).
enum StatusRow {
    static let columns = """
        issuer_name_hash, issuer_key_hash, serial, outcome, revoked_at, revocation_reason, this_update, \
        next_update, checked_at, expires_at, responder_url, subject, identity
        """

    /// The row for `id`, if it is still valid at `now` (by this gateway's clock).
    static func valid(_ id: CertID, at now: Date) -> PostgresQuery {
        """
        SELECT \(unescaped: columns) FROM device_ocsp_status
        WHERE issuer_name_hash = \(ByteBuffer(bytes: id.issuerNameHash)) AND issuer_key_hash = \(ByteBuffer(bytes: id.issuerKeyHash))
        AND serial = \(ByteBuffer(bytes: id.serialNumber)) AND expires_at > \(now)
        """
    }

    /// An upsert that never replaces a newer answer with an older one: two gateways may write
    /// answers about the same device in either order.
    static func upsert(_ status: CachedOCSPStatus, writtenBy instance: String) -> PostgresQuery {
        let id = status.certID
        let row = PersistedOutcome(status.outcome)
        let outcome = row.text, revokedAt = row.revokedAt, reason = row.reason
        return """
            INSERT INTO device_ocsp_status (issuer_name_hash, issuer_key_hash, serial, serial_hex, outcome,
                revoked_at, revocation_reason, this_update, next_update, checked_at, expires_at,
                responder_url, subject, identity, written_by)
            VALUES (\(ByteBuffer(bytes: id.issuerNameHash)), \(ByteBuffer(bytes: id.issuerKeyHash)), \(ByteBuffer(bytes: id.serialNumber)), \(id.serialHex),
                \(outcome), \(revokedAt), \(reason), \(status.thisUpdate), \(status.nextUpdate), \(status.checkedAt),
                \(status.expiresAt), \(status.responderURL), \(status.subject), \(status.identity), \(instance))
            ON CONFLICT (issuer_name_hash, issuer_key_hash, serial) DO UPDATE SET
                serial_hex = excluded.serial_hex, outcome = excluded.outcome,
                revoked_at = excluded.revoked_at, revocation_reason = excluded.revocation_reason,
                this_update = excluded.this_update, next_update = excluded.next_update,
                checked_at = excluded.checked_at, expires_at = excluded.expires_at,
                responder_url = excluded.responder_url, subject = excluded.subject,
                identity = excluded.identity, written_by = excluded.written_by
            WHERE device_ocsp_status.checked_at <= excluded.checked_at
            """
    }

    /// Nil for a row this version cannot interpret (an outcome or reason written by a newer
    /// one): better to ask the responder again than to guess.
    static func status(from row: PostgresRow) throws -> CachedOCSPStatus? {
        // In the order of `columns`.
        let cells = Array(row)
        func cell<T: PostgresDecodable>(_ index: Int, _ type: T.Type) throws -> T {
            try cells[index].decode(T.self, context: .default)
        }
        let nameHash = try cell(0, Data.self)
        let keyHash = try cell(1, Data.self)
        let serial = try cell(2, Data.self)
        let outcomeText = try cell(3, String.self)
        let revokedAt = try cell(4, Date?.self)
        let reasonText = try cell(5, String?.self)
        let thisUpdate = try cell(6, Date?.self)
        let nextUpdate = try cell(7, Date?.self)
        let checkedAt = try cell(8, Date.self)
        let expiresAt = try cell(9, Date.self)
        let responderURL = try cell(10, String.self)
        let subject = try cell(11, String.self)
        let identity = try cell(12, String?.self)
        guard let outcome = PersistedOutcome.outcome(text: outcomeText, revokedAt: revokedAt, reason: reasonText) else {
            return nil
        }
        let certID = CertID(issuerNameHash: [UInt8](nameHash), issuerKeyHash: [UInt8](keyHash), serialNumber: [UInt8](serial))
        return CachedOCSPStatus(certID: certID, outcome: outcome, thisUpdate: thisUpdate, nextUpdate: nextUpdate,
                                checkedAt: checkedAt, expiresAt: expiresAt, responderURL: responderURL, subject: subject,
                                identity: identity)
    }
}
