import Foundation
import Logging
import PostgresNIO
import StapleGateTrace

/// Retention on the shared table: `trace.retention` and the size cap, enforced by one gateway at
/// a time. Each runs a pass every `pruneInterval`, inside a transaction that first takes
/// `pg_try_advisory_xact_lock(pruneLock)`: a gateway that does not get it skips the pass (the
/// other is doing the same work), and the lock goes with the transaction, also when the
/// gateway dies mid-pass.
extension PostgresTraceStore {
    /// Rows are counted as PostgreSQL stores them (`pg_column_size`, after compression) plus
    /// this much each: the tuple header, its line pointer and its entries in the four indexes.
    static let rowOverhead: Int64 = 160
    /// A pass over the cap deletes down to this share of it, so that the next passes find room.
    static let pruneTarget = 0.9

    @discardableResult
    public func prune(now: Date) throws -> Bool {
        do {
            return try blocking(timeout: Self.blockingTimeout, "prune the traces in \(location)") {
                try await self.prunePass(now: now)
            }
        } catch {
            throw TraceStoreError("cannot prune the traces in \(location): \(FleetDatabase.describe(error))")
        }
    }

    /// One retention pass, or false when another gateway holds the lock.
    func prunePass(now: Date) async throws -> Bool {
        let client = database.client, logger = logger
        let cutoff = now.addingTimeInterval(-Double(retention.components.seconds)
                                            - Double(retention.components.attoseconds) / 1e18)
        let maximumBytes = maximumBytes
        let (ran, deleted) = try await withDeadline(tuning.pruneTimeout, "prune the traces in \(location)") {
            try await client.withTransaction(logger: logger) { connection -> (Bool, Int) in
                let rows = try await connection.query("SELECT pg_try_advisory_xact_lock(\(Self.pruneLock))", logger: logger)
                var locked = false
                for try await value in rows.decode(Bool.self) { locked = value }
                guard locked else { return (false, 0) }
                var deleted = Int(try await Self.count(connection.query(
                    "WITH gone AS (DELETE FROM trace_event WHERE time < \(cutoff) RETURNING 1) SELECT count(*) FROM gone",
                    logger: logger)))
                _ = try await connection.query("DELETE FROM trace_message_switch WHERE until <= \(now)", logger: logger)
                deleted += try await Self.pruneBySize(connection, maximumBytes: maximumBytes, logger: logger)
                return (true, deleted)
            }
        }
        if deleted > 0 { logger.debug("trace retention deleted \(deleted) events from \(location)") }
        return ran
    }

    /// The files' size (`pg_total_relation_size`) is the cheap first look: it never shrinks
    /// without a VACUUM FULL (deleted rows' space is reused by the next ones), so only when it is
    /// over the cap are the rows themselves measured; then the oldest go, in time order.
    private static func pruneBySize(_ connection: PostgresConnection, maximumBytes: Int64, logger: Logger) async throws -> Int {
        let files = try await count(connection.query("SELECT pg_total_relation_size('trace_event')", logger: logger))
        guard files > maximumBytes else { return 0 }
        var rows: Int64 = 0, bytes: Int64 = 0
        for try await (count, size) in try await connection.query("""
            SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0)::bigint FROM trace_event t
            """, logger: logger).decode((Int64, Int64).self) {
            rows = count
            bytes = size + count * rowOverhead
        }
        guard bytes > maximumBytes, rows > 0 else { return 0 }
        let keep = Double(maximumBytes) * pruneTarget / Double(bytes)
        let excess = Int64((Double(rows) * (1 - keep)).rounded(.up))
        return Int(try await count(connection.query("""
            WITH gone AS (DELETE FROM trace_event WHERE id IN (SELECT id FROM trace_event ORDER BY time, id LIMIT \(excess))
            RETURNING 1) SELECT count(*) FROM gone
            """, logger: logger)))
    }

    private static func count(_ rows: PostgresRowSequence) async throws -> Int64 {
        var result: Int64 = 0
        for try await value in rows.decode(Int64.self) { result = value }
        return result
    }
}
