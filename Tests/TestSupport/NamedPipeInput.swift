import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A FIFO a child process reads as its standard input while the test writes into it, byte by
/// byte, whenever it likes: `ManagedProcess(..., input: .file(pipe.path))`.
///
/// The test's end is opened read-write, so that opening it never waits for a reader, the
/// child's open of the reading end never waits for a writer, and the child sees end-of-file
/// only when `close()` is called (or the test's end goes away).
public final class NamedPipeInput: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var fd: Int32

    /// Creates the FIFO `name` in `directory`.
    public init(in directory: TemporaryDirectory, name: String = "stdin.fifo") throws {
        path = directory.file(name)
        guard mkfifo(path, 0o600) == 0 else { throw POSIXFailure("mkfifo \(path)", errno) }
        // O_CLOEXEC: the child must not inherit our end, or it would never see end-of-file.
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXFailure("open \(path)", errno) }
        self.fd = fd
    }

    deinit { close() }

    /// Writes all of `bytes` (a FIFO takes 64 KiB before a write would wait for the reader).
    public func write(_ bytes: [UInt8]) throws {
        try lock.withLock {
            guard fd >= 0 else { throw POSIXFailure("write \(path) after close", EBADF) }
            var sent = 0
            while sent < bytes.count {
                let result = bytes[sent...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if result < 0 {
                    if errno == EINTR { continue }
                    throw POSIXFailure("write \(path)", errno)
                }
                sent += result
            }
        }
    }

    /// Ends the child's input. Idempotent.
    public func close() {
        lock.withLock {
            if fd >= 0 {
                Glibc.close(fd)
                fd = -1
            }
        }
    }
}
