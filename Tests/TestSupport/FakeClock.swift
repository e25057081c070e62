import Foundation

/// A wall clock the test moves under running processes: libfaketime preloaded (Debian package
/// faketime), reading the offset from a file the test rewrites, re-read at every clock read
/// (`FAKETIME_NO_CACHE`; with the default cache a jump took up to 2 s to be seen), so the
/// gateway's clock jumps without a restart, at the moment the file changes.
///
/// Only CLOCK_REALTIME moves (`DONT_FAKE_MONOTONIC`), as when NTP steps the clock or a paused
/// VM resumes: the monotonic clock, which NIO's timers and `Task.sleep` run on, never jumps.
public final class FakeClock: @unchecked Sendable {
    public let file: String
    private let library: String
    private let lock = NSLock()
    private var currentOffset: Int = 0

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Starts at the real time; the file lives in `directory`.
    public init(in directory: TemporaryDirectory) throws {
        guard let library = Self.libfaketime else {
            throw Failure(description: "libfaketime.so.1 not found (Debian package faketime / libfaketime)")
        }
        self.library = library
        file = directory.file("faketime-offset")
        try write(0)
    }

    /// What a process started with it needs in its environment.
    public var environment: [String: String] {
        var environment = [
            "LD_PRELOAD": library, "FAKETIME_TIMESTAMP_FILE": file, "FAKETIME_NO_CACHE": "1", "DONT_FAKE_MONOTONIC": "1",
            // Without it libfaketime's constructor setenv()s its shared-memory names, which moves
            // `environ` off the initial stack, where the Swift runtime looks for argv: a Swift
            // program then sees no arguments at all. Names that do not exist make it skip that
            // (the shared memory only serves options these tests do not use).
            "FAKETIME_SHARED": "/staplegate-test-no-sem /staplegate-test-no-shm",
        ]
        // `make test-tsan` / `test-asan`: the sanitized binary would hang before main. The
        // sanitizer's allocator, on the first allocation of each size class, reads the monotonic
        // clock through clock_gettime() while it holds that class's lock (to time returning memory
        // to the OS); libfaketime's clock_gettime(), called before its own constructor ran,
        // initialises itself with dlsym(), whose failed lookups malloc(): the same lock again,
        // a deadlock in futex_wait (libfaketime prints "Unexpected recursive calls to
        // clock_gettime() without proper initialization" and nothing more happens). With that
        // release turned off the allocator never reads the clock. Not a slowdown: no deadline helps.
        // (Seen with TSan; ASan's allocator is the same sanitizer_common code.)
        let inherited = ProcessInfo.processInfo.environment
        for variable in ["TSAN_OPTIONS", "ASAN_OPTIONS"] where inherited[variable] != nil {
            environment[variable] = inherited[variable]! + " allocator_release_to_os_interval_ms=-1"
        }
        return environment
    }

    /// Seconds the processes' clock is ahead of the real one (negative: behind).
    public var offset: Int { lock.withLock { currentOffset } }

    /// What the processes read as the time now.
    public var now: Date { Date().addingTimeInterval(TimeInterval(offset)) }

    /// Moves every process's clock to `seconds` from the real time, within about a second
    /// (libfaketime's cache): from then on they read `now`.
    public func jump(toOffset seconds: Int) throws {
        try write(seconds)
    }

    private func write(_ seconds: Int) throws {
        // Renamed into place: a process never reads a half-written offset.
        let staged = file + ".new"
        try "\(seconds >= 0 ? "+" : "")\(seconds)\n".write(toFile: staged, atomically: false, encoding: .utf8)
        guard rename(staged, file) == 0 else { throw Failure(description: "rename \(staged): errno \(errno)") }
        lock.withLock { currentOffset = seconds }
    }

    /// Where Debian (any architecture) and a source install put the library.
    public static var libfaketime: String? {
        var candidates = ["/usr/local/lib/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"]
        if let triplets = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib") {
            candidates += triplets.filter { $0.hasSuffix("-linux-gnu") }.map { "/usr/lib/\($0)/faketime/libfaketime.so.1" }
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }
}
