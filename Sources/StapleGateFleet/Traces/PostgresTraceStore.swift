import CoreMetrics
import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import StapleGateTrace

/// Trace events in the fleet's PostgreSQL database (`fleet.store: postgres`): every gateway
/// writes there, each event stamped with its `instance`, so that a device's timeline can be
/// read from any gateway across all the gateways it went through.
///
/// The SQLite file's rule holds: `record` never waits. Events go to the same bounded queue
/// (`TraceEventQueue`) and one writer task inserts them in batches, one transaction and one
/// multi-row INSERT each (`TraceRow.insert`), every call under `withDeadline`. A database that
/// is slow or away costs dropped events (counted in `staplegate_trace_events_dropped_total`,
/// logged once a minute), never MQTT traffic; the pool reconnects by itself with backoff, and
/// writes resume at the next probe after `retryDelay`.
///
/// Message trace switches live in `trace_message_switch`, so that `trace enable` on any
/// gateway applies on all: each gateway reads them every `refreshInterval` off the event loops
/// into memory, and the data path only looks them up there.
public final class PostgresTraceStore: TraceStore {
    public let database: FleetDatabase
    public var location: String { database.location }
    public let retention: Duration
    public let maximumBytes: Int64

    /// Knobs that tests turn down; the defaults are what the gateway runs with.
    struct Tuning: Sendable {
        var retryDelay: Duration = .seconds(5)
        /// How long one batch may take (a connection, then its transaction) before it is given
        /// up and its events counted as dropped: the pool would wait as long as the database is away.
        var writeTimeout: Duration = .seconds(4)
        var refreshInterval: Duration = .seconds(1)
        /// Between two retention passes; only one gateway of the fleet runs each (`pruneLock`).
        var pruneInterval: Duration = .seconds(60)
        var pruneTimeout: Duration = .seconds(60)
    }

    /// `pg_try_advisory_xact_lock`'s key for retention: any constant the fleet's database has no
    /// other use for ("SGTRC" in ASCII; the migrations use "SGATE").
    static let pruneLock: Int64 = 0x53_47_54_52_43
    /// How long `flush()` and `prune(now:)` wait for the database.
    public static let blockingTimeout: Duration = .seconds(15)

    let tuning: Tuning
    let logger: Logger
    private let queue: TraceEventQueue
    /// What the data path reads: device → until.
    private let switches = NIOLockedValueBox<[String: Date]>([:])
    /// The switch changes of the batch being written: neither queued nor readable yet.
    private let inFlightSwitches = NIOLockedValueBox<[String: TraceEventQueue.SwitchChange]>([:])
    private let wakeUps: AsyncStream<Void>.Continuation
    private let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])
    /// Whether the last refresh or retention pass failed: said once, not every second.
    private let failingReads = NIOLockedValueBox(Set<String>())

    public convenience init(database: FleetDatabase, configuration: TraceConfiguration, logger: Logger,
                            metricsFactory: any MetricsFactory = MetricsSystem.factory) {
        self.init(database: database, retention: configuration.retention, maximumBytes: configuration.maximumBytes,
                  queueCapacity: configuration.queueCapacity, logger: logger, metricsFactory: metricsFactory, tuning: Tuning())
    }

    init(database: FleetDatabase, retention: Duration, maximumBytes: Int64, queueCapacity: Int, logger: Logger,
         metricsFactory: any MetricsFactory, tuning: Tuning) {
        self.database = database
        self.retention = retention
        self.maximumBytes = maximumBytes
        self.tuning = tuning
        self.logger = logger
        queue = TraceEventQueue(location: database.location, capacity: queueCapacity, retryDelay: tuning.retryDelay,
                                logger: logger, metricsFactory: metricsFactory)
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wakeUps = continuation
        let writer = Task { [self] in
            for await _ in stream { await drain() }
        }
        let refresher = Task { [self] in
            while !Task.isCancelled {
                await refreshSwitches()
                do { try await Task.sleep(for: tuning.refreshInterval) } catch { return }
            }
        }
        let pruner = Task { [self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: tuning.pruneInterval) } catch { return }
                do {
                    _ = try await prunePass(now: Date())
                    noteRecovered("retention")
                } catch {
                    noteFailure("retention", "cannot prune the traces in \(location): \(FleetDatabase.describe(error))")
                }
            }
        }
        tasks.withLockedValue { $0 = [writer, refresher, pruner] }
    }

    deinit {
        wakeUps.finish()
    }

    /// Stops the writer and the refresh (call `flush()` first to keep what is queued).
    public func close() {
        wakeUps.finish()
        tasks.withLockedValue { $0.forEach { $0.cancel() } }
    }

    // MARK: Recording (any thread, never blocks)

    public func record(_ event: TraceEvent) {
        if queue.append(event) { wakeUps.yield() }
    }

    public var droppedEvents: Int { queue.dropped }
    public var queuedEvents: Int { queue.queued }

    /// Waits (at most `blockingTimeout`) until what was queued before is written or dropped.
    public func flush() {
        let done = DispatchSemaphore(value: 0)
        if queue.addBarrier({ done.signal() }) { wakeUps.yield() }
        _ = done.wait(timeout: .now() + .seconds(Int(Self.blockingTimeout.components.seconds)))
    }

    // MARK: Message trace

    public func enableMessageTrace(device: String, until: Date) {
        switches.withLockedValue { $0[device] = until }
        if queue.change(device: device, .on(until: until)) { wakeUps.yield() }
    }

    public func disableMessageTrace(device: String) {
        switches.withLockedValue { $0[device] = nil }
        if queue.change(device: device, .off) { wakeUps.yield() }
    }

    public func messageTraceUntil(device: String, now: Date) -> Date? {
        switches.withLockedValue { $0[device] }.flatMap { $0 > now ? $0 : nil }
    }

    public func messageTraces(now: Date) -> [String: Date] {
        switches.withLockedValue { $0 }.filter { $0.value > now }
    }

    /// The fleet's switches, with this gateway's changes not yet written laid over them. A
    /// database that is away leaves the switches as they were (they end by themselves).
    ///
    /// The local changes are taken before the read as well as after it: one committed between
    /// the two was in neither the rows nor the second look, and would flicker off for a second.
    private func refreshSwitches() async {
        let client = database.client, logger = logger
        let before = localChanges()
        do {
            let rows = try await withDeadline(tuning.writeTimeout, "read the message trace switches in \(location)") {
                var rows: [String: Date] = [:]
                for try await (device, until) in try await client.query(
                    "SELECT device, until FROM trace_message_switch WHERE until > now()", logger: logger
                ).decode((String, Date).self) {
                    rows[device] = until
                }
                return rows
            }
            var merged = rows
            for (device, change) in before.merging(localChanges(), uniquingKeysWith: { _, newer in newer }) {
                switch change {
                case .on(let until): merged[device] = until
                case .off: merged[device] = nil
                }
            }
            switches.withLockedValue { $0 = merged }
            noteRecovered("switches")
        } catch {
            noteFailure("switches", "cannot read the message trace switches in \(location): \(FleetDatabase.describe(error))")
        }
    }

    private func localChanges() -> [String: TraceEventQueue.SwitchChange] {
        inFlightSwitches.withLockedValue { $0 }.merging(queue.pendingSwitches) { _, newer in newer }
    }

    // MARK: Writer (the writer task only)

    private func drain() async {
        let batch = queue.take()
        defer { batch.barriers.forEach { $0() } }
        guard !batch.isEmpty else { return }
        inFlightSwitches.withLockedValue { $0 = batch.switches }
        // After `failed` has queued them again, or once they are readable.
        defer { inFlightSwitches.withLockedValue { $0 = [:] } }
        let client = database.client, logger = logger, instance = database.instance
        do {
            try await withDeadline(tuning.writeTimeout, "write traces to \(location)") {
                try await client.withTransaction(logger: logger) { connection in
                    for (device, change) in batch.switches {
                        switch change {
                        case .on(let until):
                            _ = try await connection.query("""
                                INSERT INTO trace_message_switch (device, until, set_by) VALUES (\(device), \(until), \(instance))
                                ON CONFLICT (device) DO UPDATE SET until = excluded.until, set_by = excluded.set_by, set_at = now()
                                """, logger: logger)
                        case .off:
                            _ = try await connection.query("DELETE FROM trace_message_switch WHERE device = \(device)",
                                                           logger: logger)
                        }
                    }
                    if !batch.events.isEmpty {
                        _ = try await connection.query(TraceRow.insert(batch.events, instance: instance), logger: logger)
                    }
                }
            }
            queue.written(batch)
        } catch {
            queue.failed(batch, problem: "cannot write traces to the fleet database \(location): \(FleetDatabase.describe(error))")
        }
    }

    // MARK: Reading

    public func reader() throws -> any TraceReading {
        PostgresTraceReader(database: database)
    }

    // MARK: Log, once per change

    func noteFailure(_ what: String, _ message: String) {
        let first = failingReads.withLockedValue { $0.insert(what).inserted }
        if first { logger.warning("\(message)") }
    }

    func noteRecovered(_ what: String) {
        let was = failingReads.withLockedValue { $0.remove(what) != nil }
        if was { logger.notice("trace \(what) work again with the fleet database \(location)") }
    }
}
