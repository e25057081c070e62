import CoreMetrics
import Dispatch
import Foundation
import GRDB
import Logging
import NIOConcurrencyHelpers

/// A failure to open or read the persisted device-status cache. The message names the file,
/// because the operator's fix (permissions, disk, a stray file) is about that file.
public struct OCSPCacheStoreError: Error, Sendable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// The device-status cache on disk (`<state_directory>/ocsp-cache.sqlite`), so that a restart
/// does not send every reconnecting device to the responder at once.
///
/// Only verified answers are kept: a failure says nothing about the certificate, and after a
/// restart the last verified answer (while it lasts) is worth more than "the responder was down".
///
/// Writes never block the caller, who may be on an event loop in the middle of a handshake: they
/// are queued, and one writer applies whatever accumulated in a single transaction, in order. A
/// batch that cannot be written (the disk full, say) stays queued, up to
/// `maximumPending` operations, and is tried again every `retryDelay`: once the disk has room
/// again the file holds every answer, as a restart's warm-up needs. Failures are reported by
/// `OCSPCacheWriteReport`.
public final class OCSPCacheStore: DeviceStatusStore {
    /// How long the writer waits before trying a failed batch again.
    static let retryDelay: DispatchTimeInterval = .seconds(2)
    /// Operations kept while writes fail; beyond, the oldest go (the memory cache still has them).
    static let maximumPending = 20_000

    /// This gateway's own file: nothing is in it that did not pass through this process's cache.
    public var isShared: Bool { false }
    public let path: String
    public var location: String { path }

    private let database: DatabasePool
    private let writer: DispatchQueue
    private let state = NIOLockedValueBox(WriterState())
    private let report: OCSPCacheWriteReport

    private enum Operation: Sendable {
        case upsert(CachedOCSPStatus)
        case delete(CertID)
    }

    private struct WriterState: Sendable {
        var pending: [Operation] = []
        /// Whether a drain is already queued on `writer`: it will pick up what is added meanwhile.
        var drainQueued = false
        var writeErrorCount = 0
        var lastWriteError: String?
        /// Since a batch failed and until one is written: drains wait `retryDelay`.
        var failing = false
    }

    /// Opens (or creates) the database at `path`, creating its folder if needed. `logger`: where
    /// write failures are reported (nil: counted only).
    public init(path: String, logger: Logger? = nil, metricsFactory: any MetricsFactory = MetricsSystem.factory) throws {
        self.path = path
        report = OCSPCacheWriteReport(logger: logger, factory: metricsFactory)
        let folder = (path as NSString).deletingLastPathComponent
        do {
            if !folder.isEmpty {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            }
            // A DatabasePool is in WAL mode: the handshake-time reads at startup and the writer
            // never wait for each other.
            database = try DatabasePool(path: path)
            try Self.migrator.migrate(database)
        } catch {
            throw OCSPCacheStoreError("cannot open the OCSP cache \(path): \(Self.describe(error))")
        }
        writer = DispatchQueue(label: "staplegate.ocsp-cache-writer")
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("device_ocsp_status") { db in
            try db.create(table: "device_ocsp_status") { t in
                // The CertID: what a response is about, so what an answer is keyed by.
                t.column("issuer_name_hash", .blob).notNull()
                t.column("issuer_key_hash", .blob).notNull()
                t.column("serial", .blob).notNull()
                t.primaryKey(["issuer_name_hash", "issuer_key_hash", "serial"])
                // Operators name certificates by serial (`staplegate ocsp forget <serial>`).
                t.column("serial_hex", .text).notNull().indexed()
                t.column("outcome", .text).notNull()
                t.column("revoked_at", .datetime)
                t.column("revocation_reason", .text)
                t.column("this_update", .datetime)
                t.column("next_update", .datetime)
                t.column("checked_at", .datetime).notNull()
                t.column("expires_at", .datetime).notNull().indexed()
                t.column("responder_url", .text).notNull()
                t.column("subject", .text).notNull()
            }
        }
        // `staplegate ocsp recheck --device` finds devices that are not connected by identity.
        migrator.registerMigration("device_ocsp_status_identity") { db in
            try db.alter(table: "device_ocsp_status") { t in t.add(column: "identity", .text) }
            try db.create(index: "device_ocsp_status_on_identity", on: "device_ocsp_status", columns: ["identity"])
        }
        return migrator
    }

    // MARK: Writes (queued)

    /// Queues an upsert of `status`; failures are ignored (see the type's comment).
    public func save(_ status: CachedOCSPStatus) {
        guard !status.isFailure else { return }
        enqueue(.upsert(status))
    }

    /// Queues the deletion of the row for `certID`, if there is one.
    public func delete(_ certID: CertID) {
        enqueue(.delete(certID))
    }

    /// Blocks until everything queued before the call is written (or failed to be).
    public func flush() {
        // The writer queue is serial: a drain run here comes after any drain queued before it.
        writer.sync { drain() }
    }

    /// How many batches failed to be written since the store was opened.
    public var writeErrorCount: Int { state.withLockedValue { $0.writeErrorCount } }

    /// The last write failure in words, for the caller to log; nil if none happened.
    public var lastWriteError: String? { state.withLockedValue { $0.lastWriteError } }

    private func enqueue(_ operation: Operation) {
        let drainAfter = state.withLockedValue { state -> DispatchTimeInterval? in
            state.pending.append(operation)
            if state.pending.count > Self.maximumPending { state.pending.removeFirst(state.pending.count - Self.maximumPending) }
            guard !state.drainQueued else { return nil }
            state.drainQueued = true
            // A first connect's answer waits a moment for others: one transaction per batch of
            // answers, not per device. Nothing reads the file meanwhile (memory answers first,
            // and `flush` writes at once), so only a crash can lose these 100 ms of answers.
            return state.failing ? Self.retryDelay : .milliseconds(100)
        }
        if let drainAfter {
            writer.asyncAfter(deadline: .now() + drainAfter) { self.drain() }
        }
    }

    /// Runs on `writer` only: one transaction for everything pending, then expired rows go.
    private func drain() {
        let batch = state.withLockedValue { state -> [Operation] in
            state.drainQueued = false
            defer { state.pending.removeAll(keepingCapacity: true) }
            return state.pending
        }
        do {
            try database.write { db in
                for operation in batch {
                    switch operation {
                    case .upsert(let status):
                        try Self.upsert(status, db)
                    case .delete(let id):
                        try db.cachedStatement(sql: """
                            DELETE FROM device_ocsp_status
                            WHERE issuer_name_hash = ? AND issuer_key_hash = ? AND serial = ?
                            """).execute(arguments: [Data(id.issuerNameHash), Data(id.issuerKeyHash), Data(id.serialNumber)])
                    }
                }
                // An expired row would never be loaded again: keep the file from growing with
                // every device that ever connected.
                try db.cachedStatement(sql: "DELETE FROM device_ocsp_status WHERE expires_at <= \(Self.date)")
                    .execute(arguments: [Date().timeIntervalSince1970])
            }
            state.withLockedValue { $0.failing = false }
            report.written(batch.count, path: path)
        } catch {
            // The in-memory cache still answers; the batch goes back to the head of the queue,
            // before anything queued meanwhile, and is tried again.
            let message = "cannot write the OCSP cache \(path): \(Self.describe(error))"
            let (kept, retry) = state.withLockedValue { state -> (Int, Bool) in
                state.writeErrorCount += 1
                state.lastWriteError = message
                state.failing = true
                state.pending = Array((batch + state.pending).suffix(Self.maximumPending))
                defer { state.drainQueued = true }
                return (state.pending.count, !state.drainQueued)
            }
            report.failed(message, kept: kept)
            if retry { writer.asyncAfter(deadline: .now() + Self.retryDelay) { self.drain() } }
        }
    }

    /// A date parameter bound as seconds since 1970 and stored as GRDB's own date text
    /// ("2026-12-07 06:21:48.123", UTC), so rows and comparisons stay as GRDB writes them:
    /// its DateFormatter was most of the cost of an upsert.
    private static let date = "strftime('%Y-%m-%d %H:%M:%f', ?, 'unixepoch')"

    private static func upsert(_ status: CachedOCSPStatus, _ db: Database) throws {
        let row = PersistedOutcome(status.outcome)
        let statement = try db.cachedStatement(sql: """
            INSERT INTO device_ocsp_status (issuer_name_hash, issuer_key_hash, serial, serial_hex, outcome,
                revoked_at, revocation_reason, this_update, next_update, checked_at, expires_at,
                responder_url, subject, identity)
            VALUES (?, ?, ?, ?, ?, \(date), ?, \(date), \(date), \(date), \(date), ?, ?, ?)
            ON CONFLICT (issuer_name_hash, issuer_key_hash, serial) DO UPDATE SET
                serial_hex = excluded.serial_hex, outcome = excluded.outcome,
                revoked_at = excluded.revoked_at, revocation_reason = excluded.revocation_reason,
                this_update = excluded.this_update, next_update = excluded.next_update,
                checked_at = excluded.checked_at, expires_at = excluded.expires_at,
                responder_url = excluded.responder_url, subject = excluded.subject,
                identity = excluded.identity
            """)
        let id = status.certID
        let arguments: StatementArguments = [
            Data(id.issuerNameHash), Data(id.issuerKeyHash), Data(id.serialNumber), id.serialHex,
            row.text, row.revokedAt?.timeIntervalSince1970, row.reason, status.thisUpdate?.timeIntervalSince1970,
            status.nextUpdate?.timeIntervalSince1970, status.checkedAt.timeIntervalSince1970,
            status.expiresAt.timeIntervalSince1970, status.responderURL, status.subject, status.identity,
        ]
        try statement.execute(arguments: arguments)
    }

    // MARK: Reads

    /// Every row still valid at `now`, most recently checked first. Reads whatever the writer
    /// has committed: call `flush()` first to include queued writes.
    public func loadAll(notExpiredAt now: Date) throws -> [CachedOCSPStatus] {
        do {
            return try database.read { db in
                let rows = try Row.fetchAll(db, sql: """
                    SELECT * FROM device_ocsp_status WHERE expires_at > ? ORDER BY checked_at DESC
                    """, arguments: [now])
                return rows.compactMap(Self.status(from:))
            }
        } catch {
            throw OCSPCacheStoreError("cannot read the OCSP cache \(path): \(Self.describe(error))")
        }
    }

    /// Every row `selector` names, expired or not, most recently checked first, once what is
    /// queued has been written: what an operator's recheck may ask about.
    public func statuses(matching selector: CertificateSelector) async throws -> [CachedOCSPStatus] {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            writer.async {
                self.drain()
                done.resume()
            }
        }
        let (column, value): (String, String)
        switch selector {
        case let .serial(hex): (column, value) = ("serial_hex", hex)
        case let .identity(identity): (column, value) = ("identity", identity)
        }
        do {
            return try await database.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM device_ocsp_status WHERE \(column) = ? ORDER BY checked_at DESC",
                                 arguments: [value]).compactMap(Self.status(from:))
            }
        } catch {
            throw OCSPCacheStoreError("cannot read the OCSP cache \(path): \(Self.describe(error))")
        }
    }

    /// The row for `certID` if still valid at `now`. For a fleet of one (this file is this
    /// gateway's own) it is already in memory whenever it is here, but answering keeps the
    /// caller free of "which store is this".
    public func status(for certID: CertID, now: Date) async throws -> CachedOCSPStatus? {
        do {
            return try await database.read { db in
                try Row.fetchOne(db.cachedStatement(sql: """
                    SELECT * FROM device_ocsp_status
                    WHERE issuer_name_hash = ? AND issuer_key_hash = ? AND serial = ? AND expires_at > \(Self.date)
                    """), arguments: [Data(certID.issuerNameHash), Data(certID.issuerKeyHash), Data(certID.serialNumber),
                                      now.timeIntervalSince1970])
                    .flatMap(Self.status(from:))
            }
        } catch {
            throw OCSPCacheStoreError("cannot read the OCSP cache \(path): \(Self.describe(error))")
        }
    }

    /// Nil for a row this version cannot interpret (an outcome or reason written by a newer
    /// one): better to ask the responder again than to guess.
    private static func status(from row: Row) -> CachedOCSPStatus? {
        guard let outcome = PersistedOutcome.outcome(text: row["outcome"], revokedAt: row["revoked_at"],
                                                     reason: row["revocation_reason"]) else { return nil }
        guard let nameHash = row["issuer_name_hash"] as Data?,
              let keyHash = row["issuer_key_hash"] as Data?,
              let serial = row["serial"] as Data?,
              let checkedAt = row["checked_at"] as Date?,
              let expiresAt = row["expires_at"] as Date? else { return nil }
        let certID = CertID(issuerNameHash: [UInt8](nameHash), issuerKeyHash: [UInt8](keyHash),
                            serialNumber: [UInt8](serial))
        return CachedOCSPStatus(certID: certID, outcome: outcome,
                                thisUpdate: row["this_update"], nextUpdate: row["next_update"],
                                checkedAt: checkedAt, expiresAt: expiresAt,
                                responderURL: row["responder_url"] ?? "", subject: row["subject"] ?? "",
                                identity: row["identity"])
    }

    /// GRDB's DatabaseError description already carries the SQLite message and code.
    private static func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError { return error.message ?? "\(error)" }
        return error.localizedDescription
    }
}
