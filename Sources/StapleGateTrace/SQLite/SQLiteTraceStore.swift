import CoreMetrics
import Dispatch
import Foundation
import GRDB
import GRDBSQLite
import Logging
import NIOConcurrencyHelpers

/// Per-device trace events on disk (`<state_directory>/trace.sqlite`), so that "why can't device
/// X connect?" has an answer after the fact, from another process (`staplegate trace`): the
/// store of a gateway that is not part of a fleet (`fleet.store: sqlite`).
///
/// The event loops that call `record` must never wait for the disk: events go to a bounded
/// in-memory queue that one background writer drains, one transaction per batch. When the queue
/// is full (the writer is slow or stuck) or the store is failing, events are dropped and
/// counted: losing trace lines is better than slowing or dropping MQTT traffic.
public final class SQLiteTraceStore: TraceStore {
    public let path: String
    public var location: String { path }
    public let retention: Duration
    public let maximumBytes: Int64
    public let queueCapacity: Int

    /// Knobs that tests turn down; the defaults are what the gateway runs with.
    struct Tuning: Sendable {
        /// How long `record` drops events after a failed write before letting one through again.
        var retryDelay: Duration = .seconds(5)
        /// The least time between two automatic retention passes.
        var pruneInterval: Duration = .seconds(5)
        /// How long a write waits for another connection's lock before failing (see `open`).
        var busyTimeout: TimeInterval = 5
        /// How long the writer lets events gather after the first of a batch: one transaction
        /// then carries a few dozen handshakes' events, not one's (its begin and commit were
        /// as much of the writer's time as the inserts). `trace --follow` polls slower than this.
        var gatherDelay: DispatchTimeInterval = .milliseconds(100)
    }

    private let tuning: Tuning
    private let logger: Logger
    private let writer = DispatchQueue(label: "staplegate.trace-writer")
    private let queue: TraceEventQueue
    /// Message trace switches in memory: read on every device session start, so never from disk.
    private let switches: NIOLockedValueBox<[String: Date]>
    /// Touched on `writer` only; the lock just makes that state Sendable (it is never contended).
    private let connection: NIOLockedValueBox<Connection>

    public convenience init(path: String, retention: Duration = .seconds(3 * 24 * 3600),
                            maximumBytes: Int64 = 256 * 1024 * 1024, queueCapacity: Int = 10_000,
                            logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory) throws {
        try self.init(path: path, retention: retention, maximumBytes: maximumBytes, queueCapacity: queueCapacity,
                      logger: logger, metricsFactory: metricsFactory, tuning: Tuning())
    }

    /// Opens (or creates) the database at `path`, creating its folder if needed.
    init(path: String, retention: Duration, maximumBytes: Int64, queueCapacity: Int, logger: Logger,
         metricsFactory: any MetricsFactory, tuning: Tuning) throws {
        self.path = path
        self.retention = retention
        self.maximumBytes = maximumBytes
        self.queueCapacity = queueCapacity
        self.tuning = tuning
        self.logger = logger
        queue = TraceEventQueue(location: path, capacity: queueCapacity, retryDelay: tuning.retryDelay, logger: logger,
                                metricsFactory: metricsFactory)
        let pool = try Self.open(path, tuning: tuning)
        do {
            let rows = try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT device, until FROM message_trace WHERE until > ?", arguments: [Date()])
            }
            switches = NIOLockedValueBox(Dictionary(rows.map { ($0["device"] as String, $0["until"] as Date) },
                                                    uniquingKeysWith: { $1 }))
        } catch {
            throw TraceStoreError("cannot read the trace store \(path): \(describe(error))")
        }
        connection = NIOLockedValueBox(Connection(pool: pool, identity: FileIdentity(path: path)))
    }

    /// `createFolder`: at start only. A reopen (the file was replaced or removed under a running
    /// gateway) must not recreate a state directory someone removed: it fails, and events are
    /// dropped and counted until the folder is back.
    private static func open(_ path: String, tuning: Tuning, createFolder: Bool = true) throws -> DatabasePool {
        var configuration = Configuration()
        // Waiting a little for a lock (an operator's sqlite3 shell, a checkpoint) beats failing at
        // once; the wait happens on the writer, and `record` drops rather than waits meanwhile.
        configuration.busyMode = .timeout(tuning.busyTimeout)
        configuration.prepareDatabase { db in
            guard !db.configuration.readonly else { return }
            // Only possible before the first table exists, so before DatabasePool sets up WAL:
            // lets retention give freed pages back to the file system (`incremental_vacuum`).
            try db.execute(sql: "PRAGMA auto_vacuum = INCREMENTAL")
            // In WAL mode NORMAL never corrupts; a power cut may only lose the last batches.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // After a burst the WAL file shrinks back to this, rather than keeping its peak size
            // beside a database that `maximumBytes` bounds.
            try db.execute(sql: "PRAGMA journal_size_limit = \(8 * 1024 * 1024)")
        }
        do {
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty && createFolder {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } else if !folder.isEmpty && !FileManager.default.fileExists(atPath: folder) {
                throw TraceStoreError("its folder \(folder) no longer exists")
            }
            // A DatabasePool is in WAL mode: `staplegate trace` reads while the gateway writes.
            let pool = try DatabasePool(path: path, configuration: configuration)
            try migrator.migrate(pool)
            return pool
        } catch {
            throw TraceStoreError("cannot open the trace store \(path): \(describe(error))")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("trace") { db in
            try db.create(table: "trace_event") { t in
                // AUTOINCREMENT: ids are never reused after retention, so `--follow` can poll by id.
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .datetime).notNull().indexed()
                t.column("kind", .text).notNull()
                t.column("device", .text)
                t.column("serial", .text)
                t.column("connection_id", .integer).notNull()
                t.column("remote_address", .text).notNull()
                t.column("is_failure", .boolean).notNull()
                t.column("summary", .text).notNull()
                t.column("details", .text).notNull()
            }
            // `trace DEVICE` and `trace --failures`, newest first, without a scan.
            try db.create(indexOn: "trace_event", columns: ["device", "time"])
            try db.create(indexOn: "trace_event", columns: ["is_failure", "time"])
            try db.create(table: "message_trace") { t in
                t.primaryKey("device", .text)
                t.column("until", .datetime).notNull()
            }
        }
        // Failures are a few of the events: an index of them alone costs the writer nothing for
        // the rest, where one on (is_failure, time) took a B-tree insert per event (one of four).
        // `trace --failures` asks for `is_failure = 1`, which this index's condition matches.
        migrator.registerMigration("trace-failures-partial-index") { db in
            try db.execute(sql: """
                DROP INDEX IF EXISTS index_trace_event_on_is_failure_time;
                CREATE INDEX trace_event_failures ON trace_event(time) WHERE is_failure = 1;
                """)
        }
        return migrator
    }

    // MARK: Recording (any thread, never blocks on I/O)

    /// Queues `event` for the writer, or drops and counts it when the queue is full or the store
    /// is failing. O(1): a short lock and an append.
    public func record(_ event: TraceEvent) {
        guard queue.append(event) else { return }
        writer.asyncAfter(deadline: .now() + tuning.gatherDelay) { self.drain() }
    }

    /// Events dropped since the store was opened (queue full, or a write failed).
    public var droppedEvents: Int { queue.dropped }

    /// Events waiting for the writer.
    public var queuedEvents: Int { queue.queued }

    /// Blocks until everything queued before the call is written (or failed to be).
    public func flush() {
        // The writer queue is serial: this drain comes after any drain queued before it.
        writer.sync { drain() }
    }

    // MARK: Message trace

    /// Records PUBLISH events for `device` until `until` (also across restarts).
    public func enableMessageTrace(device: String, until: Date) {
        switches.withLockedValue { $0[device] = until }
        enqueue(device, .on(until: until))
    }

    public func disableMessageTrace(device: String) {
        switches.withLockedValue { $0[device] = nil }
        enqueue(device, .off)
    }

    /// When message trace for `device` ends, or nil if it is off (or over) at `now`. Called at
    /// every device session start: a dictionary lookup, never the disk.
    public func messageTraceUntil(device: String, now: Date) -> Date? {
        switches.withLockedValue { $0[device] }.flatMap { $0 > now ? $0 : nil }
    }

    /// Every device with message trace on at `now`, and until when.
    public func messageTraces(now: Date) -> [String: Date] {
        switches.withLockedValue { $0 }.filter { $0.value > now }
    }

    private func enqueue(_ device: String, _ change: TraceEventQueue.SwitchChange) {
        if queue.change(device: device, change) { writer.async { self.drain() } }
    }

    // MARK: Writer (on `writer` only)

    private func drain() {
        let batch = queue.take()
        defer { batch.barriers.forEach { $0() } }
        guard !batch.isEmpty else { return }
        do {
            let pool = try currentPool()
            try pool.write { db in
                try Self.apply(batch.switches, db)
                let insert = try db.cachedStatement(sql: TraceEvent.insertSQL)
                for event in batch.events {
                    event.bind(to: insert)
                    let code = sqlite3_step(insert.sqliteStatement)
                    guard code == SQLITE_DONE else {
                        throw DatabaseError(resultCode: ResultCode(rawValue: code), message: db.lastErrorMessage)
                    }
                }
                sqlite3_reset(insert.sqliteStatement)
            }
            queue.written(batch)
            pruneIfDue()
        } catch {
            let problem = (error as? TraceStoreError)?.message
                ?? "cannot write the trace store \(path): \(describe(error))"
            queue.failed(batch, problem: problem)
        }
    }

    /// The writer's pool, reopened if the file at `path` is no longer the one it has open: SQLite
    /// would go on writing into a deleted file that no reader can see and that never frees its
    /// space. A missing file is recreated; a folder or unreadable file in its place fails here.
    private func currentPool() throws -> DatabasePool {
        try connection.withLockedValue { connection in
            if let pool = connection.pool {
                if FileIdentity(path: path) == connection.identity { return pool }
                try? pool.close()
                connection.pool = nil
                logger.warning("the trace store \(path) was removed or replaced while in use: opening it again")
            }
            let pool = try Self.open(path, tuning: tuning, createFolder: false)
            connection.pool = pool
            connection.identity = FileIdentity(path: path)
            return pool
        }
    }

    private static func apply(_ changes: [String: TraceEventQueue.SwitchChange], _ db: Database) throws {
        for (device, change) in changes {
            switch change {
            case .on(let until):
                try db.execute(sql: """
                    INSERT INTO message_trace (device, until) VALUES (?, ?)
                    ON CONFLICT (device) DO UPDATE SET until = excluded.until
                    """, arguments: [device, until])
            case .off:
                try db.execute(sql: "DELETE FROM message_trace WHERE device = ?", arguments: [device])
            }
        }
    }

    // MARK: Retention

    /// Deletes events older than `retention` before `now`, then the oldest events while the
    /// database is larger than `maximumBytes`. Runs on the writer, after queued writes.
    @discardableResult
    public func prune(now: Date) throws -> Bool {
        try writer.sync {
            do {
                try prune(now: now, in: currentPool())
                return true
            } catch let error as TraceStoreError {
                throw error
            } catch {
                throw TraceStoreError("cannot prune the trace store \(path): \(describe(error))")
            }
        }
    }

    private func pruneIfDue() {
        let due = connection.withLockedValue { connection -> Bool in
            let now = ContinuousClock.now
            if let last = connection.lastPrune, now - last < tuning.pruneInterval { return false }
            connection.lastPrune = now
            return true
        }
        guard due else { return }
        do {
            try prune(now: Date(), in: currentPool())
        } catch {
            // Writes still work; the file only grows. Worth saying, but not once per batch.
            let mustWarn = connection.withLockedValue { connection -> Bool in
                let now = ContinuousClock.now
                if let last = connection.lastPruneWarning, now - last < .seconds(60) { return false }
                connection.lastPruneWarning = now
                return true
            }
            if mustWarn { logger.warning("cannot prune the trace store \(path): \(describe(error))") }
        }
    }

    /// The size is estimated as the pages in use (page_count minus freelist_count, times
    /// page_size), not read from the file: it includes committed pages still in the WAL and
    /// excludes freed pages, so it drops as soon as rows go and the loop below terminates.
    /// Deleting the oldest 10 % per round frees whole pages (rows are stored in id order, which
    /// is time order), and `incremental_vacuum` then hands the freed pages back so the file
    /// itself shrinks at the next checkpoint.
    private func prune(now: Date, in pool: DatabasePool) throws {
        let (seconds, attoseconds) = retention.components
        let cutoff = now.addingTimeInterval(-(Double(seconds) + Double(attoseconds) / 1e18))
        try pool.writeWithoutTransaction { db in
            var deleted = false
            try db.inTransaction {
                try db.execute(sql: "DELETE FROM trace_event WHERE time < ?", arguments: [cutoff])
                deleted = db.changesCount > 0
                try db.execute(sql: "DELETE FROM message_trace WHERE until <= ?", arguments: [now])
                return .commit
            }
            while try Self.bytesInUse(db) > maximumBytes {
                let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM trace_event") ?? 0
                guard count > 0 else { break }
                try db.execute(sql: "DELETE FROM trace_event WHERE id IN (SELECT id FROM trace_event ORDER BY time LIMIT ?)",
                               arguments: [max(1, count / 10)])
                deleted = true
            }
            guard deleted else { return }
            try db.execute(sql: "PRAGMA incremental_vacuum")
            // Best effort: a reader mid-query only postpones the shrink to a later checkpoint.
            _ = try? db.checkpoint(.passive)
        }
    }

    private static func bytesInUse(_ db: Database) throws -> Int64 {
        let pages = try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0
        let free = try Int64.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
        let pageSize = try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
        return (pages - free) * pageSize
    }

    // MARK: Reading

    /// Read access for `staplegate trace`, from another process while the gateway writes.
    public static func openForReading(path: String) throws -> SQLiteTraceReader {
        try SQLiteTraceReader(path: path)
    }

    /// A reader of its own per call: the file may have been replaced since the last one.
    public func reader() throws -> any TraceReading {
        try Self.openForReading(path: path)
    }
}

// MARK: - State

private struct Connection: Sendable {
    var pool: DatabasePool?
    /// The file the pool has open, to notice it being deleted or replaced.
    var identity: FileIdentity?
    var lastPrune: ContinuousClock.Instant?
    var lastPruneWarning: ContinuousClock.Instant?
}

/// Device and inode of a regular file; nil for anything else (missing, a folder).
private struct FileIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64

    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

/// GRDB's DatabaseError description already carries the SQLite message and code.
func describe(_ error: any Error) -> String {
    if let error = error as? TraceStoreError { return error.message }
    if let error = error as? DatabaseError { return error.message ?? "\(error)" }
    return error.localizedDescription
}

