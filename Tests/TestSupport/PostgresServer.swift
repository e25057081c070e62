import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL 15 server (Debian's `postgresql` package) for a test class: a fresh
/// cluster in a temporary directory, listening on 127.0.0.1 at a free port, trust
/// authentication for the `postgres` user. PostgreSQL refuses to run as root, so the cluster
/// belongs to the `postgres` user and its programs run through `runuser`.
public final class PostgresServer: @unchecked Sendable {
    public static let binaries = "/usr/lib/postgresql/15/bin"
    public static let user = "postgres"

    public let port: Int
    public let directory: TemporaryDirectory
    /// The cluster's data directory (also where its Unix socket goes).
    public let dataDirectory: String
    /// TLS for clients (`ssl=on`), nil: plain TCP only.
    public let tls: TLS?
    /// The addresses it listens on (Linux routes all of 127.0.0.0/8 to the loopback, so a test
    /// can reach one server by an address its certificate does not name).
    public let listenAddresses: [String]
    private var process: ManagedProcess?

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// initdb, then the server; returns once it accepts connections.
    public static func start(tls: TLS? = nil, listenAddresses: [String] = ["127.0.0.1"]) async throws -> PostgresServer {
        let server = try PostgresServer(tls: tls, listenAddresses: listenAddresses)
        try await server.initialize()
        try server.installTLS()
        try await server.start()
        return server
    }

    /// The blocking twin of `start()`, for class-level setUp (a server started there lives
    /// until its test class finishes).
    public static func startBlocking(tls: TLS? = nil, listenAddresses: [String] = ["127.0.0.1"]) throws -> PostgresServer {
        let server = try PostgresServer(tls: tls, listenAddresses: listenAddresses)
        try FileManager.default.createDirectory(atPath: server.dataDirectory, withIntermediateDirectories: true)
        try server.chown(server.directory.path)
        try server.chown(server.dataDirectory)
        let initdb = try ManagedProcess("runuser", server.initdbArguments)
        let status = try initdb.waitForExitBlocking(timeout: .seconds(60))
        guard status.succeeded else { throw Failure(description: "initdb failed: \(status)\n\(initdb.output)") }
        try server.installTLS()
        let process = try server.launch()
        try waitUntilBlocking(timeout: .seconds(60), "PostgreSQL to accept connections on port \(server.port)",
                              details: { process.output }) {
            if server.isReady(process) { return true }
            guard process.isRunning else { throw Failure(description: "postgres exited\n\(process.output)") }
            return false
        }
        return server
    }

    private init(tls: TLS?, listenAddresses: [String]) throws {
        self.tls = tls
        self.listenAddresses = listenAddresses
        guard FileManager.default.isExecutableFile(atPath: "\(Self.binaries)/postgres") else {
            throw Failure(description: "\(Self.binaries)/postgres not found: install Debian's postgresql package (make deps)")
        }
        port = try FreePort.next()
        directory = try TemporaryDirectory(prefix: "postgres")
        dataDirectory = directory.file("data")
    }

    /// A URL for `database` (postgres://postgres@127.0.0.1:PORT/DATABASE), as `fleet.url` takes it.
    public func url(database: String) -> String { "postgres://\(Self.user)@127.0.0.1:\(port)/\(database)" }

    private func initialize() async throws {
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        try chown(directory.path)
        try chown(dataDirectory)
        let initdb = try ManagedProcess("runuser", initdbArguments)
        let result = try await initdb.commandResult(timeout: .seconds(60))
        guard result.status.succeeded else { throw Failure(description: "initdb failed: \(result)") }
    }

    private var initdbArguments: [String] {
        ["-u", Self.user, "--", "\(Self.binaries)/initdb", "-D", dataDirectory, "-A", "trust", "-U", Self.user, "--no-sync"]
    }

    /// Starts the server on its port (again, after `stop()`: same cluster, same data).
    public func start() async throws {
        let process = try launch()
        try await waitUntil(timeout: .seconds(60), "PostgreSQL to accept connections on port \(port)",
                            details: { process.output }) {
            if self.isReady(process) { return true }
            guard process.isRunning else { throw Failure(description: "postgres exited\n\(process.output)") }
            return false
        }
    }

    private func launch() throws -> ManagedProcess {
        // fsync off: a test cluster's data need not survive a crash of the machine, and the
        // 2-core CI machine is shared. runuser stays as the parent of postgres, in one process
        // group: signals go to the group.
        let process = try ManagedProcess("runuser", [
            "-u", Self.user, "--", "\(Self.binaries)/postgres", "-D", dataDirectory, "-p", "\(port)", "-k", dataDirectory,
            "-c", "listen_addresses=\(listenAddresses.joined(separator: ","))", "-c", "fsync=off", "-c", "max_connections=100",
        ] + tlsArguments)
        process.killProcessGroupAtExit()
        self.process = process
        return process
    }

    private func isReady(_ process: ManagedProcess) -> Bool {
        process.stderr.contains("database system is ready to accept connections")
    }

    /// A fast shutdown (SIGINT: sessions are ended, nothing waits for clients), then the whole
    /// process group is gone; SIGKILL after a grace period.
    public func stop() async {
        guard let process else { return }
        self.process = nil
        process.signalProcessGroup(SIGINT)
        if (try? await waitUntil(timeout: .seconds(10), "PostgreSQL to shut down", { process.processGroupIsGone })) == nil {
            await process.terminateProcessGroup()
        } else {
            _ = try? await process.waitForExit(timeout: .seconds(5))
        }
    }

    /// The blocking twin of `stop()`, for class-level tearDown.
    public func stopBlocking() {
        guard let process else { return }
        self.process = nil
        process.signalProcessGroup(SIGINT)
        if (try? waitUntilBlocking(timeout: .seconds(10), "PostgreSQL to shut down", { process.processGroupIsGone })) == nil {
            process.terminateProcessGroupBlocking()
        } else {
            _ = try? process.waitForExitBlocking(timeout: .seconds(5))
        }
    }

    public var isRunning: Bool { process?.isRunning ?? false }

    /// Creates a database (one per test keeps tests apart on one server).
    public func createDatabase(_ name: String) async throws {
        let createdb = try ManagedProcess("runuser", ["-u", Self.user, "--", "\(Self.binaries)/createdb",
                                                      "-h", "127.0.0.1", "-p", "\(port)", name])
        let result = try await createdb.commandResult(timeout: .seconds(30))
        guard result.status.succeeded else { throw Failure(description: "createdb \(name) failed: \(result)") }
    }

    /// Runs `sql` with psql in `database`; returns its unaligned, tuples-only output.
    @discardableResult
    public func psql(_ sql: String, database: String) async throws -> String {
        let psql = try ManagedProcess("runuser", ["-u", Self.user, "--", "\(Self.binaries)/psql", "-h", "127.0.0.1",
                                                  "-p", "\(port)", "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        let result = try await psql.commandResult(timeout: .seconds(30))
        guard result.status.succeeded else { throw Failure(description: "psql \(sql) failed: \(result)") }
        return result.stdout
    }

    /// Stops the server and removes the cluster.
    public func remove() async {
        await stop()
        directory.remove()
    }

    func chown(_ path: String) throws {
        guard let entry = getpwnam(Self.user) else {
            throw Failure(description: "no user \(Self.user): install Debian's postgresql package (make deps)")
        }
        guard Glibc.chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
            throw POSIXFailure("chown \(path)", errno)
        }
    }
}
