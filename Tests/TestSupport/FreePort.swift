import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Finds TCP ports nobody listens on, for the servers a test starts (Mosquitto, responders, the
/// gateway's listeners).
///
/// Two rules keep a port from being taken between the pick and the server's bind:
/// - never the same port twice in one test process: the kernel's own pick (bind to port 0) can
///   hand a just-closed port out again, so two servers of one test could get the same one;
/// - below the ephemeral range (`ip_local_port_range`), which the kernel uses for the local end
///   of every outgoing connection: under load a picked port there can become some client's
///   source port before the server binds it.
public enum FreePort {
    /// The next port in a sweep below the ephemeral range that a plain bind on 127.0.0.1 accepts.
    public static func next() throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        for _ in 0..<range.count {
            let port = position
            position = port + 1 == range.upperBound ? range.lowerBound : port + 1
            if try bindable(port) { return port }
        }
        throw POSIXFailure("bind (every port from \(range.lowerBound) to \(range.upperBound - 1) in use)", EADDRINUSE)
    }

    /// From 10000 (clear of the low ports system services listen on) to the ephemeral range.
    private static let range: Range<Int> = {
        let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
        return 10000..<max(ephemeralStart, 12000)
    }()

    private static let lock = NSLock()
    /// A random start: another test process on the machine sweeps elsewhere.
    private static var position = Int.random(in: range)

    /// Whether 127.0.0.1:`port` can be bound now (no listener, no connection holding it).
    private static func bindable(_ port: Int) throws -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXFailure("socket", errno) }
        defer { close(fd) }
        var address = sockaddr_in.loopback(port: port)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if bound == 0 { return true }
        if errno == EADDRINUSE || errno == EACCES { return false }
        throw POSIXFailure("bind", errno)
    }
}

/// A failed POSIX call, with its errno text.
public struct POSIXFailure: Error, CustomStringConvertible {
    public let call: String
    public let code: Int32
    public init(_ call: String, _ code: Int32) {
        self.call = call
        self.code = code
    }
    public var description: String { "\(call): \(String(cString: strerror(code))) (errno \(code))" }
}

extension sockaddr_in {
    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
