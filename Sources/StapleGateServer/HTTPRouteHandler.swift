import Foundation
import NIOCore
import NIOHTTP1

/// A request to one of the gateway's HTTP endpoints: the control socket or the admin listener.
public struct ControlRequest: Sendable {
    public let method: String
    /// Percent-decoded.
    public let path: String
    public let query: [String: String]
    /// The `Authorization` header, when the request had one.
    public let authorization: String?

    public init(method: String, path: String, query: [String: String] = [:], authorization: String? = nil) {
        self.method = method
        self.path = path
        self.query = query
        self.authorization = authorization
    }
}

extension ControlRequest {
    /// The request as routes see it: the path percent-decoded, the query as names and values
    /// (a repeated name keeps its last value).
    init(head: HTTPRequestHead) {
        let components = URLComponents(string: head.uri)
        var query: [String: String] = [:]
        for item in components?.queryItems ?? [] { query[item.name] = item.value ?? "" }
        self.init(method: head.method.rawValue, path: components?.path ?? head.uri, query: query,
                  authorization: head.headers.first(name: "authorization"))
    }
}

public struct ControlResponse: Sendable {
    public let status: Int
    public let body: [UInt8]
    public let contentType: String
    /// Further headers, e.g. `Allow` on a 405.
    public let headers: [(String, String)]

    public init(status: Int, body: [UInt8], contentType: String = "application/json", headers: [(String, String)] = []) {
        self.status = status
        self.body = body
        self.contentType = contentType
        self.headers = headers
    }

    public static func json<Value: Encodable>(_ value: Value, status: Int = 200) -> ControlResponse {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return ControlResponse(status: status, body: Array((try? encoder.encode(value)) ?? Data("null".utf8)))
    }

    public static func error(_ message: String, status: Int) -> ControlResponse {
        json(["error": message], status: status)
    }

    public static func text(_ text: String, status: Int = 200) -> ControlResponse {
        ControlResponse(status: status, body: Array(text.utf8), contentType: "text/plain; charset=utf-8")
    }
}

/// HTTP/1.1 on an accepted connection, for small request/response endpoints: collects one
/// request, runs the route handler off the event loop, answers and closes. The pipeline needs
/// `configureHTTPServerPipeline()` before it.
final class HTTPRouteHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    typealias Route = @Sendable (ControlRequest) async -> ControlResponse

    private let route: Route
    private var head: HTTPRequestHead?

    init(route: @escaping Route) {
        self.route = route
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(requestHead): head = requestHead
        case .body: break  // no route takes a body
        case .end:
            guard let head else { return }
            self.head = nil
            let request = ControlRequest(head: head)
            let route = self.route
            let eventLoop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: eventLoop)
            Task {
                let response = await route(request)
                eventLoop.execute {
                    let (this, context) = bound.value
                    this.send(response, context: context)
                }
            }
        }
    }

    private func send(_ response: ControlResponse, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        headers.add(name: "Connection", value: "close")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
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
