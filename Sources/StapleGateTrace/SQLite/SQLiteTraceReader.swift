import Foundation
import GRDB
import NIOConcurrencyHelpers

/// Queries over a gateway's own trace file for `staplegate trace`. Opens the file read-only: in
/// WAL mode it neither waits for nor delays the gateway's writer. Results come oldest first.
public final class SQLiteTraceReader: TraceReading {
    public let path: String
    public var location: String { path }
    private let database: DatabaseQueue

    init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw TraceStoreError("cannot open the trace store \(path): no such file (the gateway creates it when it starts with trace.enabled)")
        }
        var configuration = Configuration()
        configuration.readonly = true
        // The rare WAL-mode SQLITE_BUSY (the writer's connection closing or recovering) is brief.
        configuration.busyMode = .timeout(5)
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw TraceStoreError("cannot open the trace store \(path): \(describe(error))")
        }
    }

    /// The newest `limit` events of `device` at or after `since`, oldest first.
    public func events(device: String, since: Date? = nil, limit: Int = 1000) throws -> [TraceEvent] {
        try newest(where: "device = ?", [device], since: since, limit: limit)
    }

    /// The first `limit` events of `device` stored after the event with id `afterID`, for
    /// `--follow` (pass the id of the last event shown; ids only grow).
    public func events(device: String, afterID: Int64, limit: Int = 1000) throws -> [TraceEvent] {
        try fetch("SELECT * FROM trace_event WHERE device = ? AND id > ? ORDER BY id LIMIT ?",
                  [device, afterID, limit])
    }

    /// The newest `limit` failures of any device at or after `since`, oldest first (newest last).
    public func failures(since: Date? = nil, limit: Int = 1000) throws -> [TraceEvent] {
        try newest(where: "is_failure = 1", [], since: since, limit: limit)
    }

    /// Every device with events at or after `since`, most recently seen first.
    public func devices(since: Date? = nil) throws -> [TraceDeviceSummary] {
        let filter = since == nil ? "" : "AND time >= ?"
        return try read { db in
            try Row.fetchAll(db, sql: """
                SELECT device, max(time) AS last_seen, count(*) AS events, sum(is_failure) AS failures
                FROM trace_event WHERE device IS NOT NULL \(filter) GROUP BY device ORDER BY last_seen DESC
                """, arguments: StatementArguments([since].compactMap { $0 })).map {
                TraceDeviceSummary(device: $0["device"], lastSeen: $0["last_seen"], events: $0["events"],
                                   failures: $0["failures"])
            }
        }
    }

    /// One writer, one transaction at a time: ids grow in commit order, so the id of the last
    /// event seen is an exact cursor.
    public func follower(device: String) throws -> any TraceFollowing {
        let newest = try read { db in try Int64.fetchOne(db, sql: "SELECT max(id) FROM trace_event") } ?? 0
        return SQLiteTraceFollower(reader: self, device: device, afterID: newest)
    }

    private func newest(where condition: String, _ arguments: [any DatabaseValueConvertible], since: Date?,
                        limit: Int) throws -> [TraceEvent] {
        let filter = since == nil ? "" : " AND time >= ?"
        return try fetch("""
            SELECT * FROM (SELECT * FROM trace_event WHERE \(condition)\(filter) ORDER BY time DESC, id DESC LIMIT ?)
            ORDER BY time, id
            """, arguments + [since].compactMap { $0 } + [limit])
    }

    private func fetch(_ sql: String, _ arguments: [any DatabaseValueConvertible]) throws -> [TraceEvent] {
        try read { db in
            let decoder = JSONDecoder()
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments))
                .compactMap { TraceEvent(row: $0, decoder: decoder) }
        }
    }

    private func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try database.read(body)
        } catch {
            throw TraceStoreError("cannot read the trace store \(path): \(describe(error))")
        }
    }
}

/// `--follow` on the file: polls by id (see `SQLiteTraceReader.follower`).
final class SQLiteTraceFollower: TraceFollowing {
    private let reader: SQLiteTraceReader
    private let device: String
    private let lastID: NIOLockedValueBox<Int64>

    init(reader: SQLiteTraceReader, device: String, afterID: Int64) {
        self.reader = reader
        self.device = device
        lastID = NIOLockedValueBox(afterID)
    }

    func markShown(_ events: [TraceEvent]) {
        let newest = events.compactMap(\.id).max() ?? 0
        lastID.withLockedValue { $0 = max($0, newest) }
    }

    func next() throws -> [TraceEvent] {
        let events = try reader.events(device: device, afterID: lastID.withLockedValue { $0 })
        markShown(events)
        return events
    }
}
