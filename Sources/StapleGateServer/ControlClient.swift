import NIOCore
import NIOHTTP1
import NIOPosix

/// Asks the running gateway through its control socket (see `ControlSocket`).
public enum ControlClient {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Sends one request and returns the status and JSON body.
    public static func send(method: HTTPMethod, target: String, socketPath: String,
                            group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> (status: Int, body: [UInt8]) {
        let promise = group.next().makePromise(of: (Int, [UInt8]).self)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                    }
                }
                .connect(unixDomainSocketPath: socketPath).get()
        } catch {
            promise.fail(error)
            throw Failure(description: "cannot reach the gateway at \(socketPath) (is it running with this state directory?): \(error)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: target)
        head.headers.add(name: "Host", value: "staplegate")
        head.headers.add(name: "Content-Length", value: "0")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let (status, body) = try await promise.futureResult.get()
        return (status, body)
    }

    private final class ResponseCollector: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        private let promise: EventLoopPromise<(Int, [UInt8])>
        private var status = 0
        private var body: [UInt8] = []

        init(promise: EventLoopPromise<(Int, [UInt8])>) {
            self.promise = promise
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case let .head(head): status = Int(head.status.code)
            case var .body(buffer): body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                promise.succeed((status, body))
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(Failure(description: "the gateway closed the control connection without answering"))
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}
