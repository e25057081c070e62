#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// A request to the running gateway's control socket.
public struct ControlRequest: Sendable {
    public let method: String
    public let path: String
    public let query: [String: String]
}

public struct ControlResponse: Sendable {
    public let status: Int
    /// JSON.
    public let body: [UInt8]

    public static func json<Value: Encodable>(_ value: Value, status: Int = 200) -> ControlResponse {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return ControlResponse(status: status, body: Array((try? encoder.encode(value)) ?? Data("null".utf8)))
    }

    public static func error(_ message: String, status: Int) -> ControlResponse {
        json(["error": message], status: status)
    }
}

/// HTTP/1.1 on a Unix socket in the state directory (`control.sock`, mode 0600): how
/// `staplegate ocsp recheck` and `staplegate ocsp cache` reach the running gateway. File
/// permissions decide who may use it, and no port is opened. `curl --unix-socket` works too.
public final class ControlSocket: Service, Sendable {
    public typealias Handler = @Sendable (ControlRequest) async -> ControlResponse

    public let path: String
    private let group: EventLoopGroup
    private let handler: Handler
    private let logger: Logger

    public init(path: String, group: EventLoopGroup, logger: Logger, handler: @escaping Handler) {
        self.path = path
        self.group = group
        self.handler = handler
        self.logger = logger
    }

    public func run() async throws {
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                 withIntermediateDirectories: true)
        // A socket file left by a gateway that did not exit cleanly would make bind fail.
        unlink(path)
        let handler = self.handler
        let channel: Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(ControlRequestHandler(handler: handler))
                    }
                }
                .bind(unixDomainSocketPath: path).get()
        } catch {
            logger.error("cannot open the control socket \(path): \(error); `staplegate ocsp recheck` will not reach this gateway")
            try? await gracefulShutdown()
            return
        }
        chmod(path, 0o600)
        logger.debug("control socket open", metadata: ["path": "\(path)"])
        try? await gracefulShutdown()
        try? await channel.close()
        unlink(path)
    }
}

/// One request per connection: collects it, runs the handler off the event loop, answers, closes.
private final class ControlRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let handler: ControlSocket.Handler
    private var head: HTTPRequestHead?

    init(handler: @escaping ControlSocket.Handler) {
        self.handler = handler
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(requestHead): head = requestHead
        case .body: break  // no route takes a body
        case .end:
            guard let head else { return }
            self.head = nil
            let components = URLComponents(string: head.uri)
            var query: [String: String] = [:]
            for item in components?.queryItems ?? [] { query[item.name] = item.value ?? "" }
            let request = ControlRequest(method: head.method.rawValue, path: components?.path ?? head.uri, query: query)
            let handler = self.handler
            let eventLoop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: eventLoop)
            Task {
                let response = await handler(request)
                eventLoop.execute {
                    let (this, context) = bound.value
                    this.send(response, context: context)
                }
            }
        }
    }

    private func send(_ response: ControlResponse, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
