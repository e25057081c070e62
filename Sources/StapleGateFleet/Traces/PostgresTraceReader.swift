import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import StapleGateTrace

/// `staplegate trace` and `/devices/ID/trace` over the fleet's table: every gateway's events,
/// each naming its `instance`. Every query is bounded by `readTimeout`.
public final class PostgresTraceReader: TraceReading {
    public let database: FleetDatabase
    public var location: String { database.location }
    /// How long one query may wait for the database (a connection, then the rows).
    public static let readTimeout: Duration = .seconds(5)
    private let logger: Logger

    public init(database: FleetDatabase, logger: Logger? = nil) {
        self.database = database
        self.logger = logger ?? database.logger
    }

    public func events(device: String, since: Date?, limit: Int) async throws -> [TraceEvent] {
        try await events("""
            SELECT * FROM (SELECT \(unescaped: TraceRow.columns) FROM trace_event
                WHERE device = \(device) AND time >= \(since ?? .distantPast) ORDER BY time DESC, id DESC LIMIT \(limit)) AS newest
            ORDER BY time, id
            """)
    }

    public func failures(since: Date?, limit: Int) async throws -> [TraceEvent] {
        try await events("""
            SELECT * FROM (SELECT \(unescaped: TraceRow.columns) FROM trace_event
                WHERE is_failure AND time >= \(since ?? .distantPast) ORDER BY time DESC, id DESC LIMIT \(limit)) AS newest
            ORDER BY time, id
            """)
    }

    public func devices(since: Date?) async throws -> [TraceDeviceSummary] {
        let client = database.client, logger = logger
        return try await read {
            var summaries: [TraceDeviceSummary] = []
            for try await (device, lastSeen, events, failures) in try await client.query("""
                SELECT device, max(time), count(*), count(*) FILTER (WHERE is_failure) FROM trace_event
                WHERE device IS NOT NULL AND time >= \(since ?? .distantPast) GROUP BY device ORDER BY max(time) DESC
                """, logger: logger).decode((String, Date, Int64, Int64).self) {
                summaries.append(TraceDeviceSummary(device: device, lastSeen: lastSeen, events: Int(events),
                                                    failures: Int(failures)))
            }
            return summaries
        }
    }

    public func follower(device: String) async throws -> any TraceFollowing {
        PostgresTraceFollower(reader: self, device: device, horizon: try await horizon())
    }

    // MARK: For the follower

    /// The oldest transaction still running now (`pg_snapshot_xmin`): every event not yet
    /// visible was written by a transaction at or after it.
    func horizon() async throws -> String {
        let client = database.client, logger = logger
        return try await read {
            var horizon = "0"
            for try await value in try await client.query(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text", logger: logger
            ).decode(String.self) {
                horizon = value
            }
            return horizon
        }
    }

    /// The events of `device` written by transactions at or after `horizon`, in time order.
    func events(device: String, writtenSince horizon: String) async throws -> [TraceEvent] {
        try await events("""
            SELECT \(unescaped: TraceRow.columns) FROM trace_event
            WHERE device = \(device) AND xact_id >= \(horizon)::xid8 ORDER BY time, id
            """)
    }

    private func events(_ query: PostgresQuery) async throws -> [TraceEvent] {
        let client = database.client, logger = logger
        return try await read {
            var events: [TraceEvent] = []
            for try await row in try await client.query(query, logger: logger) {
                if let event = try TraceRow.event(from: row) { events.append(event) }
            }
            return events
        }
    }

    private func read<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            return try await withDeadline(Self.readTimeout, "read the traces in \(location)", work)
        } catch {
            throw TraceStoreError("cannot read the traces in \(location): \(FleetDatabase.describe(error))")
        }
    }
}

/// `--follow` across the fleet. Ids come from one sequence but are taken at insert: gateway A's
/// batch may hold id 100 and commit after gateway B's id 101 was read, so "id > last" would skip
/// it, and so would a time window too short for a slow batch. Instead each poll takes the
/// horizon (`pg_snapshot_xmin`) first, then reads every row written at or after the previous
/// horizon: a transaction that had not committed at a poll is at or after that poll's horizon,
/// so its rows are read by the next one. Rows read twice are recognised by id: only those of
/// the previous poll's result can come again, so that set is all there is to remember.
final class PostgresTraceFollower: TraceFollowing {
    private struct Cursor: Sendable {
        var horizon: String
        var seen: Set<Int64> = []
    }

    private let reader: PostgresTraceReader
    private let device: String
    private let cursor: NIOLockedValueBox<Cursor>

    init(reader: PostgresTraceReader, device: String, horizon: String) {
        self.reader = reader
        self.device = device
        cursor = NIOLockedValueBox(Cursor(horizon: horizon))
    }

    func markShown(_ events: [TraceEvent]) {
        cursor.withLockedValue { $0.seen.formUnion(events.compactMap(\.id)) }
    }

    func next() async throws -> [TraceEvent] {
        let previous = cursor.withLockedValue { $0 }
        // Before the read: anything the read cannot see yet is at or after it.
        let horizon = try await reader.horizon()
        let rows = try await reader.events(device: device, writtenSince: previous.horizon)
        cursor.withLockedValue { $0 = Cursor(horizon: horizon, seen: Set(rows.compactMap(\.id))) }
        return rows.filter { !previous.seen.contains($0.id ?? -1) }
    }
}
