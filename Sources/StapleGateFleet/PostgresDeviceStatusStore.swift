import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import StapleGateOCSP

/// A failure to reach or set up the fleet's database. The message names the database (its URL
/// without secrets), because the operator's fix is about that database.
public struct PostgresStoreError: Error, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Device statuses in PostgreSQL, shared by every gateway of a fleet: what one gateway learnt
/// from the responder, the others find on a miss in memory (`status(for:now:)`) instead of
/// asking again, and a gateway that starts loads what the fleet knows.
///
/// The same write-behind rule as the SQLite file: nothing here blocks a handshake. Writes are
/// queued and one writer task applies whatever accumulated in a single transaction, in order.
/// A batch that cannot be written (the database down, say) is counted, kept as
/// `lastWriteError`, and stays queued (up to `maximumPending` operations), tried again every
/// `retryDelay` until the database is back: the answers given meanwhile then reach the other
/// gateways, as the SQLite file keeps them for a restart. The in-memory cache keeps admitting
/// the devices it knows throughout.
public final class PostgresDeviceStatusStore: DeviceStatusStore {
    /// Every gateway of the fleet writes its answers here.
    public var isShared: Bool { true }
    public var settings: PostgresSettings { database.settings }
    public var location: String { database.location }

    public let database: FleetDatabase
    /// Whether `close()` closes the database too (it was opened for this store alone).
    private let ownsDatabase: Bool
    private var client: PostgresClient { database.client }
    private let logger: Logger
    private let state: NIOLockedValueBox<WriterState>
    /// Wakes the writer; one element per enqueue that found the writer idle.
    private let wakeUps: AsyncStream<Void>.Continuation
    private let writerTask: Task<Void, Never>

    private enum Operation: Sendable {
        case upsert(CachedOCSPStatus)
        case delete(CertID)
        /// Resumed once everything queued before it is written.
        case barrier(@Sendable () -> Void)
    }

    private struct WriterState: Sendable {
        var pending: [Operation] = []
        var writeErrorCount = 0
        var lastWriteError: String?
        /// Whether the last batch failed: the log says when writes start and stop failing,
        /// not once per batch.
        var failing = false

        /// Whether a `flush` waits for the next batch.
        var awaitsFlush: Bool {
            pending.contains { if case .barrier = $0 { return true } else { return false } }
        }
    }

    /// How long a caller that needs the tables (a test, a command) waits for the database.
    public static let blockingTimeout: Duration = .seconds(15)
    /// How long one batch may wait for the database (a connection, then its transaction)
    /// before it is given up and counted as failed, as a SQLite write error would be: the
    /// pool would otherwise wait for as long as the database stays away.
    public static let writeTimeout: Duration = .seconds(4)
    /// How long the writer waits before trying a failed batch again.
    static let retryDelay: Duration = .seconds(2)
    /// Operations kept while writes fail; beyond, the oldest go (the memory cache still has them).
    static let maximumPending = 20_000
    /// How long `flush()` waits: at exit, a database that is gone must not hold the shutdown
    /// (the answers not written are only the warm-up of the next start).
    public static let flushTimeout: Duration = .seconds(5)

    /// The store on the fleet's database, which may still be connecting (or down): writes are
    /// then counted as failed and reads fail, until it is back.
    public init(database: FleetDatabase, logger: Logger, ownsDatabase: Bool = false) {
        self.database = database
        self.ownsDatabase = ownsDatabase
        self.logger = logger
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wakeUps = continuation
        let state = NIOLockedValueBox(WriterState())
        self.state = state
        let client = database.client
        let location = database.location
        let instance = database.instance
        let metrics = database.metrics
        writerTask = Task {
            for await _ in stream {
                let retry = await Self.drain(state: state, client: client, location: location, instance: instance, metrics: metrics,
                                             health: { database.health }, logger: logger)
                // The failed batch is queued again: come back for it even if nothing new is saved.
                if retry { continuation.yield() }
            }
        }
    }

    /// Opens a database of its own and waits for its tables: throws, naming the database, when
    /// it cannot be reached or set up within `blockingTimeout`.
    public convenience init(settings: PostgresSettings, logger: Logger) throws {
        let database = try FleetDatabase(settings: settings, logger: logger)
        guard database.readyBlocking(within: Self.blockingTimeout, orFirstFailure: true) else {
            let reason: String
            if case let .unreachable(why) = database.health { reason = why } else { reason = "no answer within \(Self.blockingTimeout)" }
            database.close()
            throw PostgresStoreError("cannot set up the fleet database \(settings.redactedURL): \(reason)")
        }
        self.init(database: database, logger: logger, ownsDatabase: true)
    }

    deinit {
        wakeUps.finish()
    }

    /// Stops the writer (queued writes not yet applied are lost: call `flush()` first), and
    /// closes the database when it was opened for this store alone.
    public func close() {
        wakeUps.finish()
        writerTask.cancel()
        if ownsDatabase { database.close() }
    }

    // MARK: Writes (queued)

    public func save(_ status: CachedOCSPStatus) {
        guard !status.isFailure else { return }
        enqueue(.upsert(status))
    }

    public func delete(_ certID: CertID) {
        enqueue(.delete(certID))
    }

    /// Blocks until everything queued before the call is written (or failed to be), at most
    /// `flushTimeout` (then the failure is counted like a failed batch).
    public func flush() {
        let done = DispatchSemaphore(value: 0)
        enqueue(.barrier { done.signal() })
        if done.wait(timeout: .now() + .seconds(Int(Self.flushTimeout.components.seconds))) == .timedOut {
            state.withLockedValue { state in
                state.writeErrorCount += 1
                state.lastWriteError = "cannot write to the fleet database \(location): no answer within \(Self.flushTimeout)"
            }
        }
    }

    /// Waits until everything queued before the call is written (or failed to be).
    private func written() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            enqueue(.barrier { continuation.resume() })
        }
    }

    public var writeErrorCount: Int { state.withLockedValue { $0.writeErrorCount } }
    public var lastWriteError: String? { state.withLockedValue { $0.lastWriteError } }

    private func enqueue(_ operation: Operation) {
        state.withLockedValue { state in
            state.pending.append(operation)
            if state.pending.count > Self.maximumPending { state.pending.removeFirst(state.pending.count - Self.maximumPending) }
        }
        wakeUps.yield()
    }

    /// Runs on the writer task only: one transaction for everything pending, then expired rows go.
    /// True when the batch failed and was queued again.
    private static func drain(state: NIOLockedValueBox<WriterState>, client: PostgresClient, location: String,
                              instance: String, metrics: FleetMetrics, health: @Sendable () -> FleetDatabase.Health,
                              logger: Logger) async -> Bool {
        // While writes fail, one attempt per `retryDelay`; a flush waiting cuts the wait short.
        if state.withLockedValue({ $0.failing }) {
            let until = ContinuousClock.now + retryDelay
            while ContinuousClock.now < until, !Task.isCancelled, !state.withLockedValue({ $0.awaitsFlush }) {
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let batch = state.withLockedValue { state -> [Operation] in
            defer { state.pending.removeAll(keepingCapacity: true) }
            return state.pending
        }
        guard !batch.isEmpty else { return false }
        let writeTimeout = Self.writeTimeout
        let writes = batch.filter { if case .barrier = $0 { return false } else { return true } }
        if !writes.isEmpty {
            do {
                try await withDeadline(writeTimeout, "write to \(location)") {
                    try await apply(writes, client: client, instance: instance, logger: logger)
                }
                if state.withLockedValue({ state in defer { state.failing = false }; return state.failing }) {
                    logger.notice("device statuses are written to the fleet database again", metadata: ["database": "\(location)"])
                }
            } catch {
                // A write given up for want of a connection says only "no answer"; the health
                // probe knows why the database cannot be reached.
                var cause = describe(error)
                if case let .unreachable(reason) = health() { cause = "it is unreachable (\(reason))" }
                let message = "cannot write to the fleet database \(location): \(cause)"
                metrics.writeFailed()
                let first = state.withLockedValue { state -> Bool in
                    state.writeErrorCount += 1
                    state.lastWriteError = message
                    // Back to the head of the queue, before anything saved meanwhile.
                    state.pending = Array((writes + state.pending).suffix(maximumPending))
                    defer { state.failing = true }
                    return !state.failing
                }
                if first {
                    logger.warning("\(message); devices known in memory are still admitted, new answers are kept and shared once it is back")
                }
                for case let .barrier(resume) in batch { resume() }
                return true
            }
        }
        for case let .barrier(resume) in batch { resume() }
        return false
    }

    /// `writes` in one transaction, then the purge of expired rows.
    private static func apply(_ writes: [Operation], client: PostgresClient, instance: String, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            for operation in writes {
                switch operation {
                case let .upsert(status):
                    _ = try await connection.query(StatusRow.upsert(status, writtenBy: instance), logger: logger)
                case let .delete(id):
                    _ = try await connection.query("""
                        DELETE FROM device_ocsp_status WHERE issuer_name_hash = \(ByteBuffer(bytes: id.issuerNameHash))
                        AND issuer_key_hash = \(ByteBuffer(bytes: id.issuerKeyHash)) AND serial = \(ByteBuffer(bytes: id.serialNumber))
                        """, logger: logger)
                case .barrier:
                    break
                }
            }
            // An expired row would never be used again: keep the table from growing with
            // every device that ever connected to any gateway of the fleet.
            _ = try await connection.query("DELETE FROM device_ocsp_status WHERE expires_at <= \(Date())", logger: logger)
        }
    }

    // MARK: Reads

    /// Its error does not repeat the database's URL: the warm-up's caller names `location`.
    public func loadAll(notExpiredAt now: Date) throws -> [CachedOCSPStatus] {
        try requireReachable()
        do {
            return try blocking(timeout: Self.blockingTimeout, "read the device statuses") {
                try await self.rows("SELECT \(unescaped: StatusRow.columns) FROM device_ocsp_status WHERE expires_at > \(now) ORDER BY checked_at DESC")
            }
        } catch {
            throw PostgresStoreError(Self.describe(error))
        }
    }

    public func statuses(matching selector: CertificateSelector) async throws -> [CachedOCSPStatus] {
        await written()
        let query: PostgresQuery
        switch selector {
        case let .serial(hex):
            query = "SELECT \(unescaped: StatusRow.columns) FROM device_ocsp_status WHERE serial_hex = \(hex) ORDER BY checked_at DESC"
        case let .identity(identity):
            query = "SELECT \(unescaped: StatusRow.columns) FROM device_ocsp_status WHERE identity = \(identity) ORDER BY checked_at DESC"
        }
        do {
            return try await rows(query)
        } catch {
            throw PostgresStoreError("cannot read the device statuses in \(location): \(Self.describe(error))")
        }
    }

    public func status(for certID: CertID, now: Date) async throws -> CachedOCSPStatus? {
        do {
            try requireReachable()
            return try await rows(StatusRow.valid(certID, at: now)).first
        } catch {
            throw PostgresStoreError("cannot read the device status in \(location): \(Self.describe(error))")
        }
    }

    /// Fails at once while the database is known to be away (or not yet set up): otherwise each
    /// new device's handshake would wait for a pool that cannot connect, and a start would wait
    /// for the warm-up. The health probe notices the database's return within seconds.
    private func requireReachable() throws {
        switch database.health {
        case .ready: return
        case .connecting: throw PostgresStoreError("the database is not connected yet")
        case let .unreachable(reason): throw PostgresStoreError("the database is unreachable: \(reason)")
        }
    }

    /// How long a read waits for the database (a connection, then the rows).
    public static let readTimeout: Duration = .seconds(5)

    private func rows(_ query: PostgresQuery) async throws -> [CachedOCSPStatus] {
        let client = self.client
        let logger = self.logger
        return try await withDeadline(Self.readTimeout, "read \(location)") {
            var statuses: [CachedOCSPStatus] = []
            for try await row in try await client.query(query, logger: logger) {
                if let status = try StatusRow.status(from: row) { statuses.append(status) }
            }
            return statuses
        }
    }

    static func describe(_ error: any Error) -> String { FleetDatabase.describe(error) }
}
