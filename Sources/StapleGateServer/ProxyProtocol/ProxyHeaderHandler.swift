import Logging
import NIOCore
import StapleGateProxyProtocol
import StapleGateTLS

/// First in the pipeline of a gateway behind a balancer (`listen.proxy_protocol`): reads the
/// PROXY header before any TLS, so that the device's own address is known to everything after
/// it. It refuses a connection from outside `trusted_proxies`, one whose first bytes are not a
/// valid header, and one without a complete header by the deadline; it closes a v2 LOCAL
/// connection (a balancer's health check) quietly. With a PROXY header it hands the connection
/// on (`handOver` builds the rest of the pipeline after it) and leaves, passing on the bytes
/// that came after the header (the ClientHello).
final class ProxyHeaderHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum State {
        case awaitingHeader(received: ByteBuffer?)
        /// Handed over: what followed the header, passed on when the handler leaves.
        case handedOver(rest: ByteBuffer)
        case refused
    }

    private var parser: ProxyHeaderParser
    private let trusted: TrustedProxies
    private let timeout: TimeAmount
    private let refusals: ProxyProtocolRefusals
    private let handOver: (ProxyHeader, ChannelHandlerContext) throws -> Void
    private var state = State.awaitingHeader(received: nil)
    private var deadline: Scheduled<Void>?

    init(accepting versions: ProxyHeaderParser.AcceptedVersions, trusted: TrustedProxies, timeout: TimeAmount,
         refusals: ProxyProtocolRefusals, handOver: @escaping (ProxyHeader, ChannelHandlerContext) throws -> Void) {
        parser = ProxyHeaderParser(accepting: versions)
        self.trusted = trusted
        self.timeout = timeout
        self.refusals = refusals
        self.handOver = handOver
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case let .awaitingHeader(received) = state else { return }
        var buffer = unwrapInboundIn(data)
        if var earlier = received {
            earlier.writeBuffer(&buffer)
            buffer = earlier
        }
        let header: ProxyHeader?
        do { header = try parser.parse(&buffer) } catch {
            refuse(.badHeader, "\(error)", context: context)
            return
        }
        guard let header else {
            state = .awaitingHeader(received: buffer)
            return
        }
        deadline?.cancel()
        guard header.command == .proxy else {
            // A balancer's health check: it proved the gateway answers; nothing to serve.
            refusals.healthCheck()
            state = .refused
            context.close(promise: nil)
            return
        }
        state = .handedOver(rest: buffer)
        do {
            try handOver(header, context)
        } catch {
            state = .refused
            context.close(promise: nil)
            return
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if case let .handedOver(rest) = state, rest.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(rest))
            state = .handedOver(rest: context.channel.allocator.buffer(capacity: 0))
        }
        context.leavePipeline(removalToken: removalToken)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        context.fireChannelInactive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard deadline == nil, case .awaitingHeader = state else { return }
        guard let remote = context.channel.remoteAddress else {
            // Gone before it was served (a balancer's health check closes with a reset): there
            // is nobody to refuse, and nothing worth a warning.
            state = .refused
            context.close(promise: nil)
            return
        }
        guard trusted.contains(remote) else {
            refuse(.untrustedSource, "\(peer(context)) is not in listen.trusted_proxies, but listen.proxy_protocol expects a balancer", context: context)
            return
        }
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            refuse(.timeout, "no complete PROXY protocol header within \(HandshakeDeadlineHandler.describe(timeout))", context: context)
        }
    }

    private func refuse(_ reason: ProxyProtocolRefusals.Reason, _ detail: String, context: ChannelHandlerContext) {
        guard case .awaitingHeader = state else { return }
        state = .refused
        deadline?.cancel()
        refusals.refused(reason, peer: peer(context), detail: detail)
        context.close(promise: nil)
    }

    private func peer(_ context: ChannelHandlerContext) -> String {
        context.channel.remoteAddress?.displayText ?? "?"
    }
}
