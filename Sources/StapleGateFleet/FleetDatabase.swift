import Foundation
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
    /// How long a probe or a migration attempt may take before it counts as a failure.
    static let attemptTimeout: Duration = .seconds(5)

    /// Prepares the pool and starts connecting. Throws only for what is wrong on this machine
    /// (an unreadable password or CA file), never because the database is away.
    public init(settings: PostgresSettings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        var configuration = PostgresClient.Configuration(
            host: settings.host, port: settings.port, username: settings.user, password: try Self.password(settings),
            database: settings.database, tls: try Self.tls(settings))
        // One more than asked: a listener for the fleet's notifications holds one for good.
        configuration.options.maximumConnections = settings.poolSize + 1
        configuration.options.connectTimeout = .seconds(5)
        // The host name, not an IP, is what a server certificate names; postgres-nio only
        // sends it (and checks it) when told.
        if settings.tls == .verifyFull { configuration.options.tlsServerName = settings.host }
        // The pool logs each failed connection attempt at info, every second or two while the
        // database is away; the health watch says it once.
        var poolLogger = logger
        poolLogger.logLevel = max(logger.logLevel, .notice)
        let client = PostgresClient(configuration: configuration, backgroundLogger: poolLogger)
        self.client = client
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
                    let applied = try await withDeadline(Self.attemptTimeout, "set up the tables in \(location)") { [client, logger] in
                        try await FleetSchema.migrate(client, logger: logger)
                    }
                    migrated = true
                    if !applied.isEmpty {
                        logger.notice("fleet database migrated", metadata: ["database": "\(location)", "versions": "\(applied)"])
                    }
                } else {
                    try await withDeadline(Self.attemptTimeout, "reach \(location)") { [client, logger] in
                        _ = try await client.query("SELECT 1", logger: logger)
                    }
                }
                next = .ready
                backoff = .milliseconds(250)
            } catch {
                next = .unreachable(Self.describe(error))
            }
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

    private static func password(_ settings: PostgresSettings) throws -> String? {
        guard let file = settings.passwordFile else { return nil }
        do {
            let text = try String(contentsOfFile: file, encoding: .utf8)
            return text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        } catch {
            throw PostgresStoreError("cannot read the password of \(settings.redactedURL) from \(file): \(error.localizedDescription)")
        }
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

    /// PSQLError's own description hides the server's message (it may hold data); the
    /// server's message text is what an operator needs, and holds none of ours.
    public static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return "\(error.code)" + (error.underlying.map { " (\($0))" } ?? "")
        }
        return "\(error)"
    }
}
