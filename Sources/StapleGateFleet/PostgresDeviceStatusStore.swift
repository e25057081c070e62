import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
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
/// queued and one writer task applies whatever accumulated in a single transaction, in order;
/// a failed batch (database down, say) is counted and kept as `lastWriteError`, and the
/// in-memory cache keeps admitting the devices it knows.
public final class PostgresDeviceStatusStore: DeviceStatusStore {
    public let settings: PostgresSettings
    public var location: String { settings.redactedURL }

    private let client: PostgresClient
    private let runTask: Task<Void, Never>
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
    }

    /// How long start-up waits for the database before giving up on it.
    public static let blockingTimeout: Duration = .seconds(15)
    /// How long one batch may wait for the database (a connection, then its transaction)
    /// before it is given up and counted as failed, as a SQLite write error would be: the
    /// pool would otherwise wait for as long as the database stays away.
    public static let writeTimeout: Duration = .seconds(4)
    /// How long `flush()` waits: at exit, a database that is gone must not hold the shutdown
    /// (the answers not written are only the warm-up of the next start).
    public static let flushTimeout: Duration = .seconds(5)

    /// Connects, and creates or migrates the tables (see `FleetSchema`). Throws, naming the
    /// database, when it cannot be reached or set up within `blockingTimeout`.
    public init(settings: PostgresSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        let password: String?
        if let file = settings.passwordFile {
            do {
                let text = try String(contentsOfFile: file, encoding: .utf8)
                password = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
            } catch {
                throw PostgresStoreError("cannot read the password of \(settings.redactedURL) from \(file): \(error.localizedDescription)")
            }
        } else {
            password = nil
        }
        var configuration = PostgresClient.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: password,
            database: settings.database, tls: try Self.tls(settings))
        configuration.options.maximumConnections = settings.poolSize
        configuration.options.connectTimeout = .seconds(5)
        // The host name, not an IP, is what a server certificate names; postgres-nio only
        // sends it (and checks it) when told.
        if settings.tls == .verifyFull { configuration.options.tlsServerName = settings.host }
        // The pool logs each failed connection attempt at info, every second or two while the
        // database is away; the writer's warning says it once.
        var poolLogger = logger
        poolLogger.logLevel = max(logger.logLevel, .notice)
        let client = PostgresClient(configuration: configuration, backgroundLogger: poolLogger)
        self.client = client
        runTask = Task { await client.run() }

        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wakeUps = continuation
        let state = NIOLockedValueBox(WriterState())
        self.state = state
        let location = settings.redactedURL
        let instance = settings.instance
        writerTask = Task {
            for await _ in stream {
                await Self.drain(state: state, client: client, location: location, instance: instance, logger: logger)
            }
        }

        do {
            let applied = try blocking(timeout: Self.blockingTimeout, "create the tables in \(location)") {
                try await FleetSchema.migrate(client, logger: logger)
            }
            if !applied.isEmpty {
                logger.notice("fleet database migrated", metadata: ["database": "\(location)", "versions": "\(applied)"])
            }
        } catch {
            close()
            throw PostgresStoreError("cannot set up the fleet database \(location): \(Self.describe(error))")
        }
    }

    deinit {
        wakeUps.finish()
        runTask.cancel()
    }

    /// Stops the writer and closes the connections (queued writes not yet applied are lost:
    /// call `flush()` first).
    public func close() {
        wakeUps.finish()
        writerTask.cancel()
        runTask.cancel()
    }

    private static func tls(_ settings: PostgresSettings) throws -> PostgresClient.Configuration.TLS {
        switch settings.tls {
        case .disable:
            return .disable
        case .require:
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            return .require(configuration)
        case .verifyFull:
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .fullVerification
            if let caFile = settings.caFile {
                do {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
                } catch {
                    throw PostgresStoreError("cannot read the CA bundle \(caFile) for \(settings.redactedURL): \(error)")
                }
            }
            return .require(configuration)
        }
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
        state.withLockedValue { $0.pending.append(operation) }
        wakeUps.yield()
    }

    /// Runs on the writer task only: one transaction for everything pending, then expired rows go.
    private static func drain(state: NIOLockedValueBox<WriterState>, client: PostgresClient, location: String,
                              instance: String, logger: Logger) async {
        let batch = state.withLockedValue { state -> [Operation] in
            defer { state.pending.removeAll(keepingCapacity: true) }
            return state.pending
        }
        guard !batch.isEmpty else { return }
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
                let message = "cannot write to the fleet database \(location): \(describe(error))"
                let first = state.withLockedValue { state -> Bool in
                    state.writeErrorCount += 1
                    state.lastWriteError = message
                    defer { state.failing = true }
                    return !state.failing
                }
                if first {
                    logger.warning("\(message); devices known in memory are still admitted, new answers are not shared until it is back")
                }
            }
        }
        for case let .barrier(resume) in batch { resume() }
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

    public func loadAll(notExpiredAt now: Date) throws -> [CachedOCSPStatus] {
        do {
            return try blocking(timeout: Self.blockingTimeout, "read \(location)") {
                try await self.rows("SELECT \(unescaped: StatusRow.columns) FROM device_ocsp_status WHERE expires_at > \(now) ORDER BY checked_at DESC")
            }
        } catch {
            throw PostgresStoreError("cannot read the device statuses in \(location): \(Self.describe(error))")
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
            return try await rows("""
                SELECT \(unescaped: StatusRow.columns) FROM device_ocsp_status
                WHERE issuer_name_hash = \(ByteBuffer(bytes: certID.issuerNameHash)) AND issuer_key_hash = \(ByteBuffer(bytes: certID.issuerKeyHash))
                AND serial = \(ByteBuffer(bytes: certID.serialNumber)) AND expires_at > \(now)
                """).first
        } catch {
            throw PostgresStoreError("cannot read the device status in \(location): \(Self.describe(error))")
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

    /// PSQLError's own description hides the server's message (it may hold data); the
    /// server's message text is what an operator needs, and holds none of ours.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return "\(error.code)" + (error.underlying.map { " (\($0))" } ?? "")
        }
        return "\(error)"
    }
}
