import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP socket that listens on 127.0.0.1 (a port the kernel picks) and never accepts: it holds
/// the port, so that a server asked to listen there cannot. Closed by `close()` or on deinit.
public final class ListeningSocket: @unchecked Sendable {
    public let port: Int
    private let lock = NSLock()
    private var fd: Int32

    /// - Parameter backlog: the accept queue `listen` is given (Linux holds one connection more).
    public init(backlog: Int32 = 1) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXFailure("socket", errno) }
        var address = sockaddr_in.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw POSIXFailure("bind/listen 127.0.0.1:0", code)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else {
            let code = errno
            Glibc.close(fd)
            throw POSIXFailure("getsockname", code)
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close() }

    public func close() {
        lock.withLock {
            if fd >= 0 {
                Glibc.close(fd)
                fd = -1
            }
        }
    }
}
