import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A bench failure worth one line to the user (what failed and where its log is).
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One process the bench started: a front, the broker, the OCSP responder or a load generator.
/// Its output goes to a log file in the work folder, so a failure can point at it.
final class ChildProcess: @unchecked Sendable {
    let name: String
    let logPath: String
    private let process = Process()
    /// How to deliver `stop`'s SIGTERM and SIGKILL, when sending them to `pid` does not stop
    /// it (PostgreSQL under runuser: runuser forwards neither, so the postmaster itself gets
    /// SIGINT, a fast shutdown, then SIGKILL). Set once, right after start.
    var signalStop: (@Sendable (_ signal: Int32) -> Void)?

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// Starts `executable` (a path, or a name looked up in PATH) and registers it for cleanup.
    /// `stdoutPath`: where standard output goes (default: the log, with standard error).
    /// `cpus`: the cores it may run on (taskset's list syntax, "1" or "2,3"); it and every
    /// process it starts stay there. taskset execs the program, so `pid` is the program's.
    init(_ name: String, _ executable: String, _ arguments: [String], logPath: String, stdoutPath: String? = nil,
         stderrPipe: Pipe? = nil, cpus: String? = nil) throws {
        self.name = name
        self.logPath = logPath
        let program = try Self.resolve(executable)
        if let cpus {
            process.executableURL = URL(fileURLWithPath: try Self.resolve("taskset"))
            process.arguments = ["--cpu-list", cpus, program] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = arguments
        }
        let log = try Self.openForWriting(logPath)
        process.standardOutput = try stdoutPath.map(Self.openForWriting) ?? log
        process.standardError = stderrPipe ?? log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        ChildRegistry.shared.add(self)
    }

    /// SIGTERM, then SIGKILL after `grace` seconds (through `signalStop` if set); waits for the exit.
    func stop(grace: Double = 5) {
        defer { ChildRegistry.shared.remove(self) }
        guard process.isRunning else { return }
        let send = signalStop ?? { [pid] in _ = kill(pid, $0) }
        send(SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning { send(SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits for the exit; nil if it did not exit within `timeout` seconds (it is then killed).
    func waitForExit(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning {
            stop(grace: 1)
            return nil
        }
        process.waitUntilExit()
        ChildRegistry.shared.remove(self)
        return process.terminationStatus
    }

    /// The last lines of its log, for error messages.
    func logTail(lines: Int = 8) -> String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).map { "  | \($0)" }.joined(separator: "\n")
    }

    private static func openForWriting(_ path: String) throws -> FileHandle {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw BenchFailure("cannot write \(path)")
        }
        return handle
    }

    static func resolve(_ executable: String) throws -> String {
        if executable.contains("/") { return executable }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let folders = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        for folder in folders {
            let candidate = "\(folder)/\(executable)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw BenchFailure("\(executable) not found in PATH (run `make deps` to install the bench's Debian packages)")
    }
}

/// Every child still running, so that an error or Ctrl-C stops them all: a bench must never leave
/// a front listening behind it.
final class ChildRegistry: @unchecked Sendable {
    static let shared = ChildRegistry()
    private let lock = NSLock()
    private var children: [ObjectIdentifier: ChildProcess] = [:]
    private var signalSources: [DispatchSourceSignal] = []

    func add(_ child: ChildProcess) { lock.withLock { children[ObjectIdentifier(child)] = child } }
    func remove(_ child: ChildProcess) { _ = lock.withLock { children.removeValue(forKey: ObjectIdentifier(child)) } }

    /// Stops the newest first (load generators before fronts before the broker).
    func stopAll() {
        let running = lock.withLock { Array(children.values) }.sorted { $0.pid > $1.pid }
        for child in running { child.stop(grace: 3) }
    }

    /// Ctrl-C and SIGTERM stop every child, then exit 130 / 143.
    func stopAllOnSignals() {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("\nstaplegate-bench: interrupted; stopping every process it started\n".utf8))
                ChildRegistry.shared.stopAll()
                exit(128 + signalNumber)
            }
            source.resume()
            lock.withLock { signalSources.append(source) }
        }
    }
}

/// Loopback ports: a free one to configure, and waiting until a started process listens on it.
enum LoopbackPort {
    /// A port nothing listens on now (bound to 0 and released: the kernel does not hand it out
    /// again at once).
    static func free() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw BenchFailure("bind(127.0.0.1:0): \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// Waits until `child` listens on `port`; fails with its log if it exits first.
    static func waitUntilListening(_ port: Int, by child: ChildProcess, timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !accepts(port) {
            guard child.isRunning else {
                throw BenchFailure("\(child.name) exited before listening on port \(port); \(child.logPath):\n\(child.logTail())")
            }
            guard Date() < deadline else {
                throw BenchFailure("\(child.name) did not listen on port \(port) within \(Int(timeout)) s; \(child.logPath):\n\(child.logTail())")
            }
            usleep(50_000)
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard one (children inherit it): 5 000 sessions need
/// about 15 000 descriptors in the load generator and 10 000 in a proxying front.
func raiseOpenFilesLimit(needed: Int) -> String? {
    var limit = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return "cannot read RLIMIT_NOFILE" }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    guard limit.rlim_cur >= rlim_t(needed) else {
        return "the open-files limit is \(limit.rlim_cur) (hard \(limit.rlim_max)); \(needed) are needed for the sessions figure: "
            + "raise the hard limit (ulimit -Hn, LimitNOFILE=) or pass fewer --sessions"
    }
    return nil
}
