import Foundation
import NIOCore
import NIOPosix

/// A tiny misbehaving "OCSP responder" on 127.0.0.1 (a port the kernel picks): it reads one
/// whole HTTP request per connection (head, then Content-Length bytes of body), records it, and
/// answers with exactly the bytes it was given — or not at all. Every connection it accepted
/// is closed by `stop()`.
final class FakeHTTPResponder: @unchecked Sendable {
    enum Behaviour {
        /// Sends `bytes` once the request is in, then closes the connection (`close`) or keeps
        /// it open without sending anything more (`hold`).
        case reply([UInt8], close: Bool)
        /// Accepts and never sends a byte.
        case silent
        /// Closes the connection as soon as the request is in, without answering.
        case hangUp
    }

    let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let serverChannel: Channel
    private let recorder: Recorder

    init(_ behaviour: Behaviour, host: String = "127.0.0.1") throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let recorder = Recorder()
        do {
            serverChannel = try ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ConnectionHandler(behaviour: behaviour, recorder: recorder))
                    }
                }
                .bind(host: host, port: 0)
                .wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
        self.group = group
        self.recorder = recorder
        port = serverChannel.localAddress?.port ?? 0
    }

    /// Every complete request received so far (head and body, as sent).
    var requests: [[UInt8]] { recorder.snapshot().requests }
    /// How many connections the client has closed (end-of-file or reset seen by the server).
    var connectionsClosedByClient: Int { recorder.snapshot().closedByPeer }
    var connectionsAccepted: Int { recorder.snapshot().accepted }

    func stop() async {
        try? await serverChannel.close()
        try? await group.shutdownGracefully()  // closes every accepted connection too
    }

    // MARK: Canned responses

    static func response(status: String = "200 OK", contentType: String? = "application/ocsp-response",
                         body: [UInt8], contentLength: Int? = nil, version: String = "HTTP/1.1") -> [UInt8] {
        var head = "\(version) \(status)\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        head += "Content-Length: \(contentLength ?? body.count)\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// A chunked response of `body` in chunks of `chunkSize`, with the final zero chunk unless `complete` is false.
    static func chunkedResponse(body: [UInt8], chunkSize: Int = 1000, complete: Bool = true) -> [UInt8] {
        var bytes = Array("HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        var offset = 0
        while offset < body.count {
            let chunk = body[offset..<min(offset + chunkSize, body.count)]
            bytes += Array("\(String(chunk.count, radix: 16))\r\n".utf8) + chunk + Array("\r\n".utf8)
            offset += chunk.count
        }
        if complete { bytes += Array("0\r\n\r\n".utf8) }
        return bytes
    }

    // MARK: Plumbing

    private final class Recorder: @unchecked Sendable {
        struct Snapshot {
            var requests: [[UInt8]] = []
            var accepted = 0
            var closedByPeer = 0
        }
        private let lock = NSLock()
        private var value = Snapshot()
        func update(_ body: (inout Snapshot) -> Void) { lock.lock(); body(&value); lock.unlock() }
        func snapshot() -> Snapshot { lock.lock(); defer { lock.unlock() }; return value }
    }

    private final class ConnectionHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        private enum State { case readingRequest, answered }

        private let behaviour: Behaviour
        private let recorder: Recorder
        private var received: [UInt8] = []
        private var state = State.readingRequest
        private var closedByUs = false

        init(behaviour: Behaviour, recorder: Recorder) {
            self.behaviour = behaviour
            self.recorder = recorder
        }

        func channelActive(context: ChannelHandlerContext) {
            recorder.update { $0.accepted += 1 }
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .readingRequest = state else { return }
            var buffer = unwrapInboundIn(data)
            received += buffer.readBytes(length: buffer.readableBytes) ?? []
            guard let requestLength = Self.completeRequestLength(received) else { return }
            state = .answered
            recorder.update { $0.requests.append(Array(self.received.prefix(requestLength))) }
            switch behaviour {
            case let .reply(bytes, close):
                var out = context.channel.allocator.buffer(capacity: bytes.count)
                out.writeBytes(bytes)
                let written = context.writeAndFlush(wrapOutboundOut(out))
                if close {
                    closedByUs = true
                    written.whenComplete { _ in context.close(promise: nil) }
                }
            case .silent:
                break
            case .hangUp:
                closedByUs = true
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            if !closedByUs { recorder.update { $0.closedByPeer += 1 } }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)  // a reset by the client: counted in channelInactive
        }

        /// The length of the request once the head and its Content-Length bytes of body are in.
        static func completeRequestLength(_ bytes: [UInt8]) -> Int? {
            let separator = Array("\r\n\r\n".utf8)
            guard bytes.count >= 4,
                  let headEnd = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<$0 + 4]) == separator })
            else { return nil }
            let head = String(decoding: bytes[..<headEnd], as: UTF8.self)
            var bodyLength = 0
            for line in head.split(separator: "\r\n") {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2, parts[0].lowercased() == "content-length" {
                    bodyLength = Int(parts[1].trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
            let total = headEnd + 4 + bodyLength
            return bytes.count >= total ? total : nil
        }
    }
}
