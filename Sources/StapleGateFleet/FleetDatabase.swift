import Foundation
import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import PostgresNIO

/// The fleet's PostgreSQL database, opened once per process: one connection pool shared by
/// every part of the fleet (device statuses, lookup leases, events, staples, ticket keys,
/// traces), and the schema brought up to date in the background.
///
/// A database that is down at start does not stop the gateway (serving devices beats refusing
/// the fleet): the pool reconnects by itself, and the migrations are retried with backoff until
/// they succeed. Until then every fleet part fails its reads and writes quickly, counted, and
/// each gateway runs on what it knows in memory.
public final class FleetDatabase: Sendable {
    public let settings: PostgresSettings
    public let client: PostgresClient
    public var instance: String { settings.instance }
    /// The URL without secrets, for messages.
    public var location: String { settings.redactedURL }
    let logger: Logger
    /// Says why the pool cannot connect: the pool itself only times out.
    private let diagnosis: Diagnosis
    let metrics: FleetMetrics
    private let state: NIOLockedValueBox<Health>
    private let runTask: Task<Void, Never>
    private let watchTask: NIOLockedValueBox<Task<Void, Never>?>

    /// What `/readyz` and `check` report about the database.
    public enum Health: Sendable, Equatable {
        /// Not reached yet since the start.
        case connecting
        /// Reachable, and its tables are at this gateway's version.
        case ready
        /// Not reachable (or not set up) now; why, in words.
        case unreachable(String)

        public var label: String {
            switch self {
            case .connecting: return "connecting"
            case .ready: return "ready"
            case .unreachable: return "unreachable"
            }
        }
    }

    /// How often the database is probed (`SELECT 1`), so that health follows it both ways.
    static let probeInterval: Duration = .seconds(2)
    /// How long a migration attempt (or the diagnosis's connection) may take before it counts
    /// as a failure.
    static let attemptTimeout: Duration = .seconds(5)
    /// How long a probe waits: short, so that an outage is noticed within seconds; a probe that
    /// only waited behind a busy pool is told apart by the diagnosis's connection.
    static let probeTimeout: Duration = .seconds(2)

    /// Prepares the pool and starts connecting. Throws only for what is wrong on this machine
    /// (an unreadable password or CA file), never because the database is away.
    public init(settings: PostgresSettings, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory) throws {
        self.settings = settings
        self.logger = logger
        let tlsConfiguration = try Self.tls(settings)
        let password = try Self.password(settings)
        var poolLogger = logger
        poolLogger.logLevel = max(logger.logLevel, .notice)
        diagnosis = try Diagnosis(settings: settings, password: password, tls: tlsConfiguration, logger: poolLogger)
        var configuration = PostgresClient.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: password, database: settings.database,
            tls: tlsConfiguration.map { PostgresClient.Configuration.TLS.require($0) } ?? PostgresClient.Configuration.TLS.disable)
        // One more than asked: a listener for the fleet's notifications holds one for good.
        configuration.options.maximumConnections = settings.poolSize + 1
        configuration.options.connectTimeout = .seconds(5)
        // No tlsServerName: postgres-nio sends the URL's host name as SNI and NIOSSL checks the
        // certificate against it; for an IP address (not allowed in SNI, refused if set) NIOSSL
        // checks the certificate's IP names against the address connected to.
        // The pool (poolLogger) logs each failed connection attempt at info, every second or
        // two while the database is away; the health watch says it once.
        let client = PostgresClient(configuration: configuration, backgroundLogger: poolLogger)
        self.client = client
        metrics = FleetMetrics(factory: metricsFactory)
        runTask = Task { await client.run() }
        state = NIOLockedValueBox(.connecting)
        watchTask = NIOLockedValueBox(nil)
        let task = Task { [self] in await watch() }
        watchTask.withLockedValue { $0 = task }
    }

    deinit {
        runTask.cancel()
    }

    /// Stops the health watch and closes the connections.
    public func close() {
        watchTask.withLockedValue { $0?.cancel() }
        runTask.cancel()
    }

    public var health: Health { state.withLockedValue { $0 } }

    /// Waits until the tables are ready, at most `timeout`; whether they are. With
    /// `orFirstFailure`, gives up at the first failed attempt instead.
    public func ready(within timeout: Duration, orFirstFailure: Bool = false) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            switch health {
            case .ready: return true
            case .unreachable where orFirstFailure: return false
            default: break
            }
            do { try await Task.sleep(for: .milliseconds(20)) } catch { break }
        }
        return health == .ready
    }

    /// The blocking twin of `ready(within:orFirstFailure:)`, for start-up (never on an event loop).
    public func readyBlocking(within timeout: Duration, orFirstFailure: Bool = false) -> Bool {
        (try? blocking(timeout: timeout + .seconds(1), "wait for \(location)") {
            await self.ready(within: timeout, orFirstFailure: orFirstFailure)
        }) ?? false
    }

    /// Migrates (retrying with backoff until it works), then probes for as long as the process
    /// runs, logging each change of health once.
    private func watch() async {
        var migrated = false
        var backoff: Duration = .milliseconds(250)
        while !Task.isCancelled {
            let next: Health
            do {
                if !migrated {
                    // A connection of our own first: the pool would wait attemptTimeout before
                    // failing, and say less about why (a first start with a wrong CA, say).
                    if let reason = await diagnosis.reason() { throw Unreachable(reason: reason) }
                    let applied = try await withDeadline(Self.attemptTimeout, "set up the tables in \(location)") { [client, logger] in
                        try await FleetSchema.migrate(client, logger: logger)
                    }
                    migrated = true
                    if !applied.isEmpty {
                        logger.notice("fleet database migrated", metadata: ["database": "\(location)", "versions": "\(applied)"])
                    }
                } else {
                    try await withDeadline(Self.probeTimeout, "reach \(location)") { [client, logger] in
                        _ = try await client.query("SELECT 1", logger: logger)
                    }
                }
                next = .ready
                backoff = .milliseconds(250)
            } catch {
                // The pool answers "no connection in time" whatever the cause; one connection
                // of our own names it (refused, a certificate not trusted, the server's refusal).
                if let error = error as? Unreachable {
                    next = .unreachable(error.reason)
                } else if let reason = await diagnosis.reason() {
                    next = .unreachable(reason)
                } else if migrated, error is BlockingTimeout {
                    // A connection of our own works: the probe only waited behind the device
                    // lookups and writes that hold the pool. Busy is not unreachable (which
                    // would make every lookup skip the database).
                    next = .ready
                } else {
                    next = .unreachable(describe(error))
                }
            }
            metrics.databaseUp(next == .ready)
            let previous = state.withLockedValue { state -> Health in
                defer { state = next }
                return state
            }
            switch (previous, next) {
            case (.ready, .ready), (.unreachable, .unreachable): break
            case (_, .ready):
                if previous != .connecting { logger.notice("the fleet database is reachable again", metadata: ["database": "\(location)"]) }
            case let (_, .unreachable(reason)):
                logger.warning("the fleet database \(location) is unreachable: \(reason); devices known in memory are still admitted, and it is retried in the background")
            case (_, .connecting): break
            }
            let pause = next == .ready ? Self.probeInterval : backoff
            if next != .ready { backoff = min(backoff * 2, .seconds(10)) }
            do { try await Task.sleep(for: pause) } catch { return }
        }
    }

    /// Why the database cannot be reached, already in words.
    private struct Unreachable: Error {
        let reason: String
    }

    private static func password(_ settings: PostgresSettings) throws -> String? {
        guard let file = settings.passwordFile else { return nil }
        do {
            let text = try String(contentsOfFile: file, encoding: .utf8)
            return text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        } catch {
            throw PostgresStoreError("cannot read the password of \(settings.redactedURL) from \(file): \(error.localizedDescription)")
        }
    }

    /// The TLS settings of `fleet.tls`, nil for `disable`. `require` encrypts without checking
    /// the server (as libpq's sslmode=require); `verify-full` checks the chain and the name.
    private static func tls(_ settings: PostgresSettings) throws -> TLSConfiguration? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch settings.tls {
        case .disable:
            return nil
        case .require:
            configuration.certificateVerification = .none
        case .verifyFull:
            configuration.certificateVerification = .fullVerification
            if let caFile = settings.caFile {
                do {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
                } catch {
                    throw PostgresStoreError("cannot read the CA bundle \(caFile) for \(settings.redactedURL): \(error)")
                }
            }
        }
        return configuration
    }

    /// An error in words for this database's messages (see `FleetErrorText`).
    func describe(_ error: any Error) -> String { FleetErrorText(settings: settings).describe(error) }

    /// An error in words, without the settings that would name the CA file or host.
    public static func describe(_ error: any Error) -> String { FleetErrorText(settings: nil).describe(error) }
}
