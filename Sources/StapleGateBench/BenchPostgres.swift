import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The PostgreSQL 15 the fleet figures need (Debian's `postgresql` package): a fresh cluster in
/// the bench's work folder, on 127.0.0.1 at a free port, trust authentication for `postgres`,
/// stopped with the other children (at the end, on an error, on Ctrl-C). PostgreSQL refuses to
/// run as root, so as root the cluster belongs to the `postgres` user and runs under runuser.
final class BenchPostgres {
    static let binaries = "/usr/lib/postgresql/15/bin"
    static let user = "postgres"
    static let database = "postgres"

    /// Nil when PostgreSQL 15 is installed, else why the fleet figures are skipped.
    static var missing: String? {
        guard FileManager.default.isExecutableFile(atPath: "\(binaries)/postgres") else {
            return "PostgreSQL 15 is not installed (\(binaries)/postgres; Debian package postgresql, `make deps` installs it)"
        }
        if getuid() == 0, getpwnam(user) == nil { return "there is no user \(user) to run PostgreSQL as (Debian package postgresql)" }
        return nil
    }

    let port: Int
    let dataDirectory: String
    private let process: ChildProcess
    private let work: String
    private static var asRoot: Bool { getuid() == 0 }

    var url: String { "postgres://\(Self.user)@127.0.0.1:\(port)/\(Self.database)" }

    /// initdb, then the server; returns once it accepts connections.
    init(work: String, cpus: String?) throws {
        self.work = work
        dataDirectory = try Self.clusterFolder(work: work)
        let initdb = try ChildProcess("initdb", Self.command("initdb"), Self.arguments("initdb", [
            "-D", dataDirectory, "-A", "trust", "-U", Self.user, "--no-sync",
        ]), logPath: "\(work)/postgres-initdb.log")
        guard initdb.waitForExit(timeout: 120) == 0 else { throw BenchFailure("initdb failed; \(initdb.logPath):\n\(initdb.logTail())") }

        port = try LoopbackPort.free()
        // fsync off: the bench's data need not survive a crash, and the disk is not what is measured.
        process = try ChildProcess("postgres", Self.command("postgres"), Self.arguments("postgres", [
            "-D", dataDirectory, "-p", String(port), "-k", dataDirectory, "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "max_connections=100",
        ]), logPath: "\(work)/postgres.log", cpus: cpus)
        let runner = process.pid
        let postmasterFile = "\(dataDirectory)/postmaster.pid"
        process.signalStop = { signal in
            // SIGINT is PostgreSQL's fast shutdown (sessions ended, nothing waits for clients).
            let postmaster = (try? String(contentsOfFile: postmasterFile, encoding: .utf8))?
                .split(separator: "\n").first.flatMap { Int32($0) }
            if let postmaster { kill(postmaster, signal == SIGKILL ? SIGKILL : SIGINT) }
            if postmaster == nil || signal == SIGKILL { kill(runner, signal) }
        }
        do {
            try waitUntilReady()
        } catch {
            process.stop(grace: 10)
            throw error
        }
    }

    /// Stops the server and removes the cluster (its data are no result; its log stays in `work`).
    func stop() {
        process.stop(grace: 10)
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }

    /// The postmaster and its backends (the gateways' connections), for their CPU.
    var pids: [Int32] {
        guard let text = try? String(contentsOfFile: "\(dataDirectory)/postmaster.pid", encoding: .utf8),
              let postmaster = text.split(separator: "\n").first.flatMap({ Int32($0) }) else { return [] }
        return ProcessStats.processTree(postmaster)
    }

    /// Runs `sql` with psql; returns its unaligned, tuples-only output, trimmed.
    func query(_ sql: String, label: String) throws -> String {
        let output = "\(work)/psql-\(label).out"
        let psql = try ChildProcess("psql", Self.command("psql"), Self.arguments("psql", [
            "-h", "127.0.0.1", "-p", String(port), "-d", Self.database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        ]), logPath: "\(work)/psql-\(label).log", stdoutPath: output)
        guard psql.waitForExit(timeout: 30) == 0 else { throw BenchFailure("psql \(sql) failed; \(psql.logPath):\n\(psql.logTail())") }
        return ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// An integer `sql` returns.
    func count(_ sql: String, label: String) throws -> Int {
        let text = try query(sql, label: label)
        guard let value = Int(text) else { throw BenchFailure("psql \(sql) returned '\(text)', not a number") }
        return value
    }

    private func waitUntilReady(timeout: Double = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !((try? String(contentsOfFile: process.logPath, encoding: .utf8))?
            .contains("database system is ready to accept connections") ?? false) {
            guard process.isRunning, Date() < deadline else {
                throw BenchFailure("PostgreSQL did not start; \(process.logPath):\n\(process.logTail())")
            }
            usleep(50_000)
        }
    }

    /// `work`/postgres, owned by `postgres` when running as root. Every folder above it must be
    /// searchable by that user: when one is not, a folder in /tmp is used instead (and said).
    private static func clusterFolder(work: String) throws -> String {
        var folder = "\(work)/postgres"
        if asRoot, !searchableByOthers(above: folder) {
            folder = FileManager.default.temporaryDirectory.appendingPathComponent("staplegate-bench-postgres-\(getpid())").path
            _ = FileManager.default.createFile(atPath: "\(work)/postgres-cluster-path.txt",
                                               contents: Data("the cluster is in \(folder): a folder above \(work) is not searchable by \(user)\n".utf8))
        }
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        if asRoot {
            guard let entry = getpwnam(user) else { throw BenchFailure("no user \(user): install Debian's postgresql package") }
            guard chown(folder, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
                throw BenchFailure("chown \(user) \(folder): \(String(cString: strerror(errno)))")
            }
        }
        chmod(folder, 0o700)
        return folder
    }

    private static func searchableByOthers(above path: String) -> Bool {
        var folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        while folder.path != "/" {
            var info = stat()
            guard stat(folder.path, &info) == 0, info.st_mode & S_IXOTH != 0 else { return false }
            folder = folder.deletingLastPathComponent()
        }
        return true
    }

    /// As root through runuser (its own user), else the binary itself.
    private static func command(_ program: String) -> String { asRoot ? "runuser" : "\(binaries)/\(program)" }

    private static func arguments(_ program: String, _ arguments: [String]) -> [String] {
        asRoot ? ["-u", user, "--", "\(binaries)/\(program)"] + arguments : arguments
    }
}
