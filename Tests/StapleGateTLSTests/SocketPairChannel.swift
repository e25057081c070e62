import Foundation
import NIOCore
import NIOPosix
import TestSupport

/// A server channel on a real one-thread event loop, fed through one end of a socketpair whose
/// other end the test holds.
///
/// Why not `NIOAsyncTestingChannel`: its loop is a serial DispatchQueue, whose work items run on
/// whichever pool thread is free. A handshake paused in an OpenSSL async job must be resumed on
/// the thread that paused it (the job's fibre returns to that thread's stack), so a verdict or a
/// close delivered on another thread jumped into garbage. A NIO event loop is one thread, as in
/// production.
final class SocketPairChannel {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    /// The test's end: non-blocking.
    private var peer: Int32

    init(handlers: [ChannelHandler]) async throws {
        // Made on the test's thread, added on the loop's, used only there from then on.
        let handlers = UncheckedHandlers(handlers: handlers)
        var ends: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        peer = ends[1]
        _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandlers(handlers.handlers) }
                }
                .withConnectedSocket(ends[0]).get()
        } catch {
            close(ends[0])
            close(peer)
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Closes both ends and stops the loop.
    func finish() async {
        closePeer()
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// The device goes away: its end closes, the server's read sees end-of-stream.
    func closePeer() {
        guard peer >= 0 else { return }
        close(peer)
        peer = -1
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(peer, $0.baseAddress, $0.count) }
            if written > 0 { offset += written; continue }
            if errno == EAGAIN || errno == EINTR { try waitFor(Int16(POLLOUT), timeout: .seconds(5)); continue }
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
    }

    enum Received: Equatable { case bytes([UInt8]), nothingYet, endOfStream }

    /// What the server has sent, waiting up to `timeout` for the first byte.
    func receive(timeout: Duration) throws -> Received {
        if timeout > .zero, try !waitFor(Int16(POLLIN), timeout: timeout, throwing: false) { return .nothingYet }
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = read(peer, &buffer, buffer.count)
            if count > 0 { collected += buffer.prefix(count); continue }
            if count == 0 { return collected.isEmpty ? .endOfStream : .bytes(collected) }
            if errno == EINTR { continue }
            if errno == EAGAIN { return collected.isEmpty ? .nothingYet : .bytes(collected) }
            if errno == ECONNRESET { return collected.isEmpty ? .endOfStream : .bytes(collected) }
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
    }

    @discardableResult
    private func waitFor(_ event: Int16, timeout: Duration, throwing: Bool = true) throws -> Bool {
        var descriptor = pollfd(fd: peer, events: event, revents: 0)
        let ready = poll(&descriptor, 1, Int32(timeout.seconds * 1000))
        if ready > 0 { return true }
        if throwing { throw WaitTimeoutError(what: "the socket to be ready", timeout: timeout) }
        return false
    }
}

private struct UncheckedHandlers: @unchecked Sendable {
    let handlers: [ChannelHandler]
}
