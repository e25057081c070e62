import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A bare TCP client for speaking "not TLS" (or nothing at all) to the gateway.
public final class RawTCPClient: @unchecked Sendable {
    private var fd: Int32
    /// When the connection was established.
    public let connectedAt: ContinuousClock.Instant

    /// `source`: the loopback address to connect from (such as "127.0.0.2", to come from an
    /// address a test's gateway treats differently); the kernel's choice when nil.
    public init(port: Int, host: String = "127.0.0.1", source: String? = nil) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXFailure("socket", errno) }
        if let source {
            var local = sockaddr_in.loopback(port: 0)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                let code = errno
                close(fd)
                throw POSIXFailure("bind \(source)", code)
            }
        }
        var address = sockaddr_in.loopback(port: port)
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw POSIXFailure("connect 127.0.0.1:\(port)", code)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        self.fd = fd
        connectedAt = .now
    }

    deinit { closeSocket() }

    public func send(_ text: String) throws {
        try send(bytes: Array(text.utf8))
    }

    public func send(bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let result = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if result < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw POSIXFailure("send", errno)
            }
            sent += result
        }
    }

    public enum Closure: Equatable {
        /// The peer closed (end-of-file).
        case endOfFile
        /// The peer reset the connection (closed with unread data).
        case reset
    }

    /// What the peer sent until it closed the connection, and how it closed it.
    public struct ClosedConnection {
        public let received: [UInt8]
        public let closure: Closure
        /// From `connectedAt` to the moment the closure was seen.
        public let afterConnecting: Duration
    }

    /// Reads (polling every 20 ms) until the peer closes; throws if it is still open at the deadline.
    public func waitForClose(timeout: Duration) async throws -> ClosedConnection {
        var received: [UInt8] = []
        var closure: Closure?
        try await waitUntil(timeout: timeout, "the gateway to close the connection",
                            details: { "received \(received.count) bytes" }) {
            var chunk = [UInt8](repeating: 0, count: 4096)
            while closure == nil {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count > 0 {
                    received += chunk[0..<count]
                } else if count == 0 {
                    closure = .endOfFile
                } else if errno == EAGAIN || errno == EWOULDBLOCK {
                    return false
                } else if errno == EINTR {
                    continue
                } else {
                    closure = .reset
                }
            }
            return true
        }
        return ClosedConnection(received: received, closure: closure!, afterConnecting: connectedAt.duration(to: .now))
    }

    /// True while the peer has neither closed nor reset (reads nothing; data is left queued).
    public var isOpen: Bool {
        var byte: UInt8 = 0
        let count = recv(fd, &byte, 1, Int32(MSG_PEEK))
        if count == 0 { return false }
        if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
        return true
    }

    public func closeSocket() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }
}
