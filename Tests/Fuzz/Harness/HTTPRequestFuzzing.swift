import Dispatch
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
@testable import StapleGateServer
import StapleGateTLS

/// The bytes a client sends the control socket or the admin listener: decoded by the same
/// pipeline the servers configure, turned into a `ControlRequest` as `HTTPRouteHandler` does,
/// and answered by the real routes. Every request gets an answer with a real status.
enum HTTPRequestFuzzing {
    /// `ControlRoutes` of a gateway without device OCSP, traces or reloads: every route answers
    /// from the request alone, so nothing outside the process is touched.
    static func control(_ bytes: UnsafeRawBufferPointer) {
        for request in requests(in: bytes) {
            let response = blocking { await controlRoutes.handle(request) }
            invariant((200...599).contains(response.status), "answered \(response.status)")
        }
    }

    /// `AdminRoutes` with an admin token the input does not know: the probes answer, everything
    /// else must be refused with 401 before any of it is looked at.
    static func admin(_ bytes: UnsafeRawBufferPointer) {
        for request in requests(in: bytes) {
            // /readyz reports the serving generation's staples and probes the broker: state of a
            // running gateway, not of the request, whose method and path go through the same
            // dispatch as every other route here.
            if request.path == "/readyz" { continue }
            let response = blocking { await adminRoutes.handle(request) }
            if !AdminRoutes.probes.contains(request.path) {
                invariant(response.status == 401, "\(request.method) \(request.path) answered \(response.status) without the token")
            }
        }
    }

    private static let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    private static let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private static let controlRoutes = ControlRoutes(
        monitor: SessionRevocationMonitor(checker: nil, sessions: LiveSessions(logger: logger), logger: logger))
    private static let adminRoutes = AdminRoutes(
        isAcceptingDevices: { true },
        upstream: UpstreamProbe(endpoint: .tcp(host: "127.0.0.1", port: 1), group: eventLoops),
        generation: { fatalError("only /readyz and authorised routes read the generation") },
        traceStore: nil, eventLoops: eventLoops,
        token: { AccessToken("fuzz-token-the-input-cannot-know-0123456789") }, logger: logger,
        metricsText: { fatalError("/metrics answered without the token") })

    /// The requests the server pipeline decodes from `bytes` (delivered in two pieces).
    private static func requests(in bytes: UnsafeRawBufferPointer) -> [ControlRequest] {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        let collector = RequestCollector()
        do {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline()
            try channel.pipeline.syncOperations.addHandler(collector)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9883)).wait()
        } catch {
            fatalError("cannot set up the HTTP pipeline: \(error)")
        }
        let all = Array(bytes)
        let split = all.count / 2
        for piece in [all[..<split], all[split...]] where !piece.isEmpty && channel.isActive {
            _ = try? channel.writeInbound(ByteBuffer(bytes: piece))
        }
        return collector.requests
    }

    private static func blocking(_ work: @escaping @Sendable () async -> ControlResponse) -> ControlResponse {
        let done = DispatchSemaphore(value: 0)
        let box = ResponseBox()
        Task {
            box.response = await work()
            done.signal()
        }
        done.wait()
        return box.response!
    }
}

private final class ResponseBox: @unchecked Sendable {
    var response: ControlResponse?
}

/// What `HTTPRouteHandler` builds from a decoded request, kept instead of answered.
private final class RequestCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    var requests: [ControlRequest] = []
    private var head: HTTPRequestHead?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(requestHead): head = requestHead
        case .body: break
        case .end:
            if let head { requests.append(ControlRequest(head: head)) }
            head = nil
        }
    }
}
