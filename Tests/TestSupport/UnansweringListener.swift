import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP port on 127.0.0.1 where connects time out, as they do to a broker that hangs or sits
/// behind a firewall that drops: it listens with the smallest accept queue, fills it with one
/// connection of its own and never accepts, so the kernel drops every later SYN.
public final class UnansweringListener: @unchecked Sendable {
    public let port: Int
    private let listener: ListeningSocket
    private let lock = NSLock()
    private var filler: Int32

    public init() throws {
        listener = try ListeningSocket(backlog: 0)
        port = listener.port
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXFailure("socket", errno) }
        var address = sockaddr_in.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            Glibc.close(fd)
            throw POSIXFailure("connect 127.0.0.1:\(port)", code)
        }
        filler = fd
    }

    deinit { close() }

    public func close() {
        lock.withLock {
            if filler >= 0 {
                Glibc.close(filler)
                filler = -1
            }
        }
        listener.close()
    }
}
