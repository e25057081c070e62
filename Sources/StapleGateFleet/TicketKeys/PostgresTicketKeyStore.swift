import Foundation
import Logging
import NIOCore
import PostgresNIO
import StapleGateTLS

/// A key as stored: its listing and its sealed bytes.
struct StoredTicketKey: Sendable {
    let entry: TicketKeyEntry
    let sealed: [UInt8]
}

/// The `ticket_keys` table. Reads are plain; a rotation runs in one transaction under an
/// advisory lock, so when several gateways find a key due at once, one makes it and the others,
/// waiting on the lock, then find it made.
struct PostgresTicketKeyStore: Sendable {
    let database: FleetDatabase
    let logger: Logger

    /// The advisory lock's key ("SGTKEY" in ASCII), apart from the migrations' lock.
    static let rotationLock: Int64 = 0x53_47_54_4B_45_59
    /// How long one read or rotation may wait for the database.
    static let timeout: Duration = .seconds(5)

    var location: String { database.location }

    /// Every key, and the database's clock (the one the rotation rules are applied with).
    func keys() async throws -> (keys: [StoredTicketKey], now: Date) {
        let client = database.client
        let logger = logger
        return try await withDeadline(Self.timeout, "read the ticket keys in \(location)") {
            try await client.withConnection { connection in
                try await Self.keys(on: connection, logger: logger)
            }
        }
    }

    private static func keys(on connection: PostgresConnection, logger: Logger) async throws -> (keys: [StoredTicketKey], now: Date) {
        var keys: [StoredTicketKey] = []
        let rows = try await connection.query("SELECT id, created_at, active_from, sealed FROM ticket_keys", logger: logger)
        for try await (id, createdAt, activeFrom, sealed) in rows.decode((String, Date, Date, ByteBuffer).self) {
            keys.append(StoredTicketKey(entry: TicketKeyEntry(id: id, createdAt: createdAt, activeFrom: activeFrom),
                                        sealed: Array(sealed.readableBytesView)))
        }
        var now = Date()
        for try await value in try await connection.query("SELECT now()", logger: logger).decode(Date.self) { now = value }
        return (keys, now)
    }

    /// Under the lock: makes a new key when `rotation` says one is due (sealed by `seal`), and
    /// deletes the keys no gateway uses any more. Returns the key made, if any.
    func rotateIfDue(_ rotation: TicketKeyRotation, instance: String,
                     seal: @escaping @Sendable (SessionTicketKey) -> [UInt8]) async throws -> TicketKeyEntry? {
        let client = database.client
        let logger = logger
        return try await withDeadline(Self.timeout, "rotate the ticket keys in \(location)") {
            try await client.withTransaction(logger: logger) { connection in
                _ = try await connection.query("SELECT pg_advisory_xact_lock(\(Self.rotationLock))", logger: logger)
                // Read after the lock: a gateway that rotated while we waited has committed.
                let (stored, now) = try await Self.keys(on: connection, logger: logger)
                var entries = stored.map(\.entry)
                var made: TicketKeyEntry?
                if rotation.isDue(entries, now: now) {
                    let key = SessionTicketKey.random()
                    let id = key.nameHex
                    let activeFrom = rotation.activeFrom(createdAt: now, isFirst: entries.isEmpty)
                    _ = try await connection.query("""
                        INSERT INTO ticket_keys (id, created_at, active_from, sealed, created_by)
                        VALUES (\(id), \(now), \(activeFrom), \(ByteBuffer(bytes: seal(key))), \(instance))
                        """, logger: logger)
                    let entry = TicketKeyEntry(id: id, createdAt: now, activeFrom: activeFrom)
                    entries.append(entry)
                    made = entry
                }
                if let obsolete = rotation.plan(entries, now: now)?.obsolete, !obsolete.isEmpty {
                    _ = try await connection.query("DELETE FROM ticket_keys WHERE id = ANY(\(obsolete))", logger: logger)
                }
                return made
            }
        }
    }
}
