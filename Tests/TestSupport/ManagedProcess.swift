import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How a process ended.
public enum ProcessExit: Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var succeeded: Bool { self == .exited(0) }
    public var description: String {
        switch self {
        case let .exited(code): return "exit \(code)"
        case let .signaled(signal): return "killed by signal \(signal)"
        }
    }
}

/// A real child process (found on PATH) whose output is captured continuously, which is
/// terminated at the end of the test that started it at the latest (see `ProcessRegistry`).
public final class ManagedProcess: @unchecked Sendable, CustomStringConvertible {
    public enum Input {
        /// Reads /dev/null: end-of-file right away.
        case null
        /// Reads the file.
        case file(String)
        /// A pipe the test keeps open until `closeInput()`.
        case pipe
    }

    public let executable: String
    public let arguments: [String]
    public let stdout = OutputBuffer()
    public let stderr = OutputBuffer()
    public let pid: Int32
    private let process: Process
    private let inputPipe: Pipe?
    private let lock = NSLock()
    private var exit: ProcessExit?

    /// Launches `executable` (a name looked up on PATH, or a path) right away.
    public init(_ executable: String, _ arguments: [String], input: Input = .null,
                environment: [String: String]? = nil, currentDirectory: String? = nil) throws {
        let path = try Self.resolve(executable)
        self.executable = executable
        self.arguments = arguments
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }

        var inputToClose: FileHandle?
        switch input {
        case .null:
            inputPipe = nil
            process.standardInput = FileHandle.nullDevice
        case let .file(inputPath):
            guard let handle = FileHandle(forReadingAtPath: inputPath) else {
                throw LaunchError(command: executable, reason: "cannot open \(inputPath) as its input")
            }
            inputPipe = nil
            inputToClose = handle
            process.standardInput = handle
        case .pipe:
            let pipe = Pipe()
            inputPipe = pipe
            process.standardInput = pipe
        }
        let outPipe = Pipe()
        let errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        self.process = process

        let exitBox = ExitBox()
        process.terminationHandler = { finished in
            exitBox.set(finished.terminationReason == .uncaughtSignal
                ? .signaled(finished.terminationStatus) : .exited(finished.terminationStatus))
        }
        do {
            try SpawnThread.shared.run { try process.run() }
        } catch {
            throw LaunchError(command: executable, reason: "\(error)")
        }
        try? inputToClose?.close()
        if let inputPipe { try? inputPipe.fileHandleForReading.close() }
        self.pid = process.processIdentifier
        self.exitBox = exitBox
        Self.startReader(outPipe, into: stdout, name: "\(executable)-out")
        Self.startReader(errPipe, into: stderr, name: "\(executable)-err")
        ProcessRegistry.register(self)
    }

    private let exitBox: ExitBox

    public var description: String { "\(executable) (pid \(pid))" }
    public var commandLine: String { ([executable] + arguments).joined(separator: " ") }

    /// How it ended, once it has.
    public var exitStatus: ProcessExit? { exitBox.get() }
    public var isRunning: Bool { exitBox.get() == nil }

    /// Both outputs, for failure messages.
    public var output: String { "stdout:\n\(stdout.text)\nstderr:\n\(stderr.text)" }

    /// Ends the input the process reads (only with `.pipe`).
    public func closeInput() {
        try? inputPipe?.fileHandleForWriting.close()
    }

    public func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    private var isFinished: Bool { !isRunning && stdout.isClosed && stderr.isClosed }

    /// Waits until the process has exited and its output is fully read.
    @discardableResult
    public func waitForExit(timeout: Duration) async throws -> ProcessExit {
        try await waitUntil(timeout: timeout, "\(self) to exit (\(commandLine))", details: { self.output }) {
            self.isFinished
        }
        ProcessRegistry.unregister(self)
        return exitStatus!
    }

    @discardableResult
    public func waitForExitBlocking(timeout: Duration) throws -> ProcessExit {
        try waitUntilBlocking(timeout: timeout, "\(self) to exit (\(commandLine))", details: { self.output }) {
            self.isFinished
        }
        ProcessRegistry.unregister(self)
        return exitStatus!
    }

    /// Waits until `text` appears on stdout or stderr; fails early if the process exits first.
    public func waitForOutput(_ text: String, timeout: Duration) async throws {
        try await waitUntil(timeout: timeout, "\"\(text)\" in the output of \(commandLine)", details: { self.output }) {
            if self.stdout.contains(text) || self.stderr.contains(text) { return true }
            if self.isFinished {
                throw LaunchError(command: self.commandLine,
                                  reason: "exited (\(self.exitStatus!)) without printing \"\(text)\"\n\(self.output)")
            }
            return false
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`; returns once it is gone.
    public func terminate(grace: Duration = .seconds(3)) async {
        signal(SIGTERM)
        if (try? await waitForExit(timeout: grace)) == nil {
            signal(SIGKILL)
            _ = try? await waitForExit(timeout: .seconds(5))
        }
        closeInput()
        ProcessRegistry.unregister(self)
    }

    public func terminateBlocking(grace: Duration = .seconds(3)) {
        signal(SIGTERM)
        if (try? waitForExitBlocking(timeout: grace)) == nil {
            signal(SIGKILL)
            _ = try? waitForExitBlocking(timeout: .seconds(5))
        }
        closeInput()
        ProcessRegistry.unregister(self)
    }

    // MARK: Plumbing

    public struct LaunchError: Error, CustomStringConvertible {
        public let command: String
        public let reason: String
        public var description: String { "\(command): \(reason)" }

        public init(command: String, reason: String) {
            self.command = command
            self.reason = reason
        }
    }

    private final class ExitBox: @unchecked Sendable {
        private let lock = NSLock()
        private var value: ProcessExit?
        func set(_ exit: ProcessExit) { lock.lock(); value = exit; lock.unlock() }
        func get() -> ProcessExit? { lock.lock(); defer { lock.unlock() }; return value }
    }

    /// One thread per stream doing blocking reads: simple, and immune to run-loop subtleties.
    private static func startReader(_ pipe: Pipe, into buffer: OutputBuffer, name: String) {
        let handle = pipe.fileHandleForReading
        let thread = Thread {
            let fd = handle.fileDescriptor
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    buffer.append(Data(chunk[0..<count]))
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            try? handle.close()
            buffer.markClosed()
        }
        thread.name = name
        thread.stackSize = 256 * 1024
        thread.start()
    }

    /// Children inherit the signal mask of the thread that spawns them, and Swift concurrency
    /// (dispatch) threads block nearly every signal: a child spawned there would ignore SIGTERM.
    /// So every child is spawned from this one thread, whose mask is empty.
    private final class SpawnThread: @unchecked Sendable {
        static let shared = SpawnThread()
        private let condition = NSCondition()
        private var jobs: [() -> Void] = []

        private init() {
            let thread = Thread { [unowned self] in
                var none = sigset_t()
                sigemptyset(&none)
                pthread_sigmask(SIG_SETMASK, &none, nil)
                while true {
                    condition.lock()
                    while jobs.isEmpty { condition.wait() }
                    let job = jobs.removeFirst()
                    condition.unlock()
                    job()
                }
            }
            thread.name = "ManagedProcess spawner"
            thread.start()
        }

        func run(_ body: @escaping () throws -> Void) throws {
            let done = DispatchSemaphore(value: 0)
            var failure: Error?
            condition.lock()
            jobs.append {
                do { try body() } catch { failure = error }
                done.signal()
            }
            condition.signal()
            condition.unlock()
            done.wait()
            if let failure { throw failure }
        }
    }

    static func resolve(_ executable: String) throws -> String {
        if executable.contains("/") { return executable }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        // Root's PATH usually has the sbin folders; other users' may not (mosquitto lives there).
        for directory in path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
            let candidate = directory + "/" + executable
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw LaunchError(command: executable, reason: "not found on PATH (\(path))")
    }
}
