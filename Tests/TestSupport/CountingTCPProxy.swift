import Foundation
import NIOCore
import NIOPosix

/// A TCP forwarder on 127.0.0.1 (a port the kernel picks) in front of another local port, which
/// counts the connections it accepts. Put in front of an `openssl ocsp` responder, it tells a
/// test how many OCSP requests a client made (each is one HTTP/1.1 exchange with
/// `Connection: close`, so one TCP connection) and how many were open at once.
///
/// Bytes are forwarded unchanged in both directions. When one side finishes sending, the other
/// side's output is shut after what was already forwarded has been written; when one side is
/// closed outright, the other is closed after the same flush. Everything a connection does
/// happens on its channel's event loop; only the counters and switches are shared (under a lock).
///
/// The switches (`responseDelay`, `refuseAll`) may be changed while it runs; each connection
/// takes their values when it is accepted.
public final class CountingTCPProxy: @unchecked Sendable {
    public let port: Int
    public let targetPort: Int
    public var url: String { "http://127.0.0.1:\(port)" }

    private let shared: Shared

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Listens on 127.0.0.1:`port` (0: one the kernel picks) and forwards every accepted
    /// connection to 127.0.0.1:`targetPort`.
    public static func start(forwardingTo targetPort: Int, port: Int = 0) async throws -> CountingTCPProxy {
        let shared = Shared()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            // No reads before the upstream connection exists: nothing has to be buffered.
            .childChannelOption(ChannelOptions.autoRead, value: false)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                let admission = shared.admit(channel)
                return channel.eventLoop.makeCompletedFuture {
                    let handlers = channel.pipeline.syncOperations
                    switch admission {
                    case .refuse:
                        try handlers.addHandler(RefusingHandler())
                    case let .forward(delay, awaitingAnswer):
                        let front = ForwardingHalf(holdingFirstBytesFor: nil)
                        try handlers.addHandler(front)
                        try handlers.addHandler(UpstreamConnector(targetPort: targetPort, responseDelay: delay,
                                                                  front: front, awaitingAnswer: awaitingAnswer, shared: shared))
                    }
                }
            }
        let server = try await bootstrap.bind(host: "127.0.0.1", port: port).get()
        guard let port = server.localAddress?.port else {
            try? await server.close()
            throw Failure(description: "the proxy's listening socket has no port")
        }
        shared.setServer(server)
        return CountingTCPProxy(port: port, targetPort: targetPort, shared: shared)
    }

    private init(port: Int, targetPort: Int, shared: Shared) {
        self.port = port
        self.targetPort = targetPort
        self.shared = shared
    }

    // MARK: Counters

    /// Connections accepted since the start (or the last `resetCounts()`), refused ones included.
    public var connectionsAccepted: Int { shared.withLock { $0.accepted } }

    /// Accepted connections not closed yet.
    public var connectionsInFlight: Int { shared.withLock { $0.inFlight } }

    /// The most connections that were in flight at once since the start (or the last `resetCounts()`).
    public var maximumInFlight: Int { shared.withLock { $0.maximumInFlight } }

    /// Forwarded connections whose answer has not started back to the client yet. Unlike
    /// `connectionsInFlight`, this never counts more than the client really has outstanding: it
    /// drops before the first byte of the answer is forwarded, so before the client can know its
    /// request is answered and start the next one (a close, by contrast, reaches this count an
    /// event-loop turn after the client has moved on).
    public var requestsAwaitingAnswer: Int { shared.withLock { $0.awaitingAnswer } }

    /// The most `requestsAwaitingAnswer` at once since the start (or the last `resetCounts()`).
    public var maximumAwaitingAnswer: Int { shared.withLock { $0.maximumAwaitingAnswer } }

    /// Zeroes `connectionsAccepted`, `maximumInFlight` and `maximumAwaitingAnswer` (connections
    /// still open stay counted in `connectionsInFlight`).
    public func resetCounts() {
        shared.withLock {
            $0.accepted = 0
            $0.maximumInFlight = 0
            $0.maximumAwaitingAnswer = 0
        }
    }

    // MARK: Switches

    /// How long the upstream's response bytes are held before the first of them is forwarded
    /// (the rest follow in order). Zero forwards at once.
    public var responseDelay: Duration {
        get { shared.withLock { $0.responseDelay } }
        set { shared.withLock { $0.responseDelay = newValue } }
    }

    /// Closes accepted connections at once, without connecting upstream. They are still counted.
    public var refuseAll: Bool {
        get { shared.withLock { $0.refuseAll } }
        set { shared.withLock { $0.refuseAll = newValue } }
    }

    // MARK: Stopping

    /// Closes the listening socket and every open connection (both sides), and waits until they
    /// are closed. Calling it again does nothing.
    public func stop() async {
        let (server, channels) = shared.stop()
        server?.close(promise: nil)
        for channel in channels { channel.close(promise: nil) }
        try? await server?.closeFuture.get()
        for channel in channels { try? await channel.closeFuture.get() }
    }
}

// MARK: - Shared state

extension CountingTCPProxy {
    fileprivate struct State {
        var accepted = 0
        var inFlight = 0
        var maximumInFlight = 0
        var awaitingAnswer = 0
        var maximumAwaitingAnswer = 0
        var responseDelay: Duration = .zero
        var refuseAll = false
        var stopped = false
        var server: Channel?
        var openChannels: [ObjectIdentifier: Channel] = [:]
    }

    fileprivate enum Admission {
        case refuse
        case forward(responseDelay: TimeAmount?, awaitingAnswer: AwaitedAnswer)
    }

    /// One forwarded connection's place in `awaitingAnswer`, given up once: when the answer's
    /// first bytes are forwarded, or when the connection closes without one. Touched on the
    /// connection's event loop only (both its channels share it).
    fileprivate final class AwaitedAnswer {
        private var shared: Shared?

        init(_ shared: Shared) {
            self.shared = shared
        }

        func settle() {
            guard let shared else { return }
            self.shared = nil
            shared.withLock { $0.awaitingAnswer -= 1 }
        }
    }

    /// The counters, switches and open channels, shared by the event loops and the test.
    fileprivate final class Shared: @unchecked Sendable {
        private let lock = NSLock()
        private var state = State()

        func withLock<T>(_ body: (inout State) -> T) -> T {
            lock.lock()
            defer { lock.unlock() }
            return body(&state)
        }

        func setServer(_ server: Channel) {
            withLock { $0.server = server }
        }

        /// Counts an accepted connection and decides, from the switches, what becomes of it.
        func admit(_ channel: Channel) -> Admission {
            let admission: Admission = withLock { state in
                state.accepted += 1
                state.inFlight += 1
                state.maximumInFlight = max(state.maximumInFlight, state.inFlight)
                // Once stopping, a connection that slipped in is refused, so needs no tracking.
                guard !state.refuseAll, !state.stopped else { return .refuse }
                state.openChannels[ObjectIdentifier(channel)] = channel
                state.awaitingAnswer += 1
                state.maximumAwaitingAnswer = max(state.maximumAwaitingAnswer, state.awaitingAnswer)
                return .forward(responseDelay: state.responseDelay > .zero ? TimeAmount(state.responseDelay) : nil,
                                awaitingAnswer: AwaitedAnswer(self))
            }
            channel.closeFuture.assumeIsolated().whenComplete { _ in
                if case let .forward(_, awaitingAnswer) = admission { awaitingAnswer.settle() }
                self.withLock { state in
                    state.inFlight -= 1
                    state.openChannels[ObjectIdentifier(channel)] = nil
                }
            }
            return admission
        }

        /// Remembers an upstream channel until it closes, so `stop()` can close it; false (and
        /// nothing remembered) once the proxy is stopping.
        func track(upstream channel: Channel) -> Bool {
            let tracked = withLock { state -> Bool in
                guard !state.stopped else { return false }
                state.openChannels[ObjectIdentifier(channel)] = channel
                return true
            }
            guard tracked else { return false }
            channel.closeFuture.whenComplete { _ in
                self.withLock { $0.openChannels[ObjectIdentifier(channel)] = nil }
            }
            return true
        }

        /// Marks the proxy stopped and hands over what is left to close (nothing the second time).
        func stop() -> (server: Channel?, channels: [Channel]) {
            withLock { state in
                state.stopped = true
                let server = state.server
                let channels = Array(state.openChannels.values)
                state.server = nil
                state.openChannels = [:]
                return (server, channels)
            }
        }
    }
}

// MARK: - Per-connection handlers (each lives on its channel's event loop)

/// Closes the connection as soon as it is active.
private final class RefusingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        context.close(promise: nil)
    }
}

/// In the accepted channel: once it is active, connects to the target on the same event loop,
/// joins the two channels with a pair of `ForwardingHalf`s and starts reading both.
private final class UpstreamConnector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let targetPort: Int
    private let responseDelay: TimeAmount?
    private let front: ForwardingHalf
    private let awaitingAnswer: CountingTCPProxy.AwaitedAnswer
    private let shared: CountingTCPProxy.Shared

    init(targetPort: Int, responseDelay: TimeAmount?, front: ForwardingHalf,
         awaitingAnswer: CountingTCPProxy.AwaitedAnswer, shared: CountingTCPProxy.Shared) {
        self.targetPort = targetPort
        self.responseDelay = responseDelay
        self.front = front
        self.awaitingAnswer = awaitingAnswer
        self.shared = shared
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        let frontChannel = context.channel
        let front = self.front
        let responseDelay = self.responseDelay
        let awaitingAnswer = self.awaitingAnswer
        let shared = self.shared

        ClientBootstrap(group: context.eventLoop)
            .channelOption(ChannelOptions.autoRead, value: false)
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: targetPort)
            .assumeIsolated()
            .whenComplete { result in
                guard case let .success(upstreamChannel) = result else {
                    frontChannel.close(promise: nil)
                    return
                }
                guard frontChannel.isActive, shared.track(upstream: upstreamChannel) else {
                    upstreamChannel.close(promise: nil)
                    frontChannel.close(promise: nil)
                    return
                }
                do {
                    let upstream = ForwardingHalf(holdingFirstBytesFor: responseDelay, beforeForwardingData: awaitingAnswer.settle)
                    try upstreamChannel.pipeline.syncOperations.addHandler(upstream)
                    ForwardingHalf.join(front, upstream)
                    guard let frontOptions = frontChannel.syncOptions, let upstreamOptions = upstreamChannel.syncOptions else {
                        throw ChannelError.operationUnsupported
                    }
                    try upstreamOptions.setOption(ChannelOptions.autoRead, value: true)
                    try frontOptions.setOption(ChannelOptions.autoRead, value: true)
                } catch {
                    upstreamChannel.close(promise: nil)
                    frontChannel.close(promise: nil)
                }
            }
    }
}

/// One side of a forwarded connection. What its channel reads goes to the partner's channel,
/// optionally held back for a while from the first byte on (the upstream side does this to
/// delay responses). Reads are only passed on while the partner's channel is writable.
private final class ForwardingHalf: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What this side's channel tells the partner, in order.
    private enum Event {
        case data(ByteBuffer)
        case flush
        case inputEnded
        case closed
    }

    private enum Hold {
        /// Holding is wanted; nothing has arrived yet.
        case waitingForFirstBytes(TimeAmount)
        /// The first bytes arrived; everything is queued until the timer fires.
        case holding([Event], Scheduled<Void>)
        case passingThrough
    }

    private var partner: ForwardingHalf?
    private var context: ChannelHandlerContext?
    private var hold: Hold
    private var inputClosed = false
    private var outputClosed = false
    private var readRequestedWhilePartnerBlocked = false
    /// The last write handed to this channel: closing waits for it, so nothing is cut off.
    private var lastWrite: EventLoopFuture<Void>?
    /// Called before each piece of data goes to the partner.
    private let beforeForwardingData: (() -> Void)?

    init(holdingFirstBytesFor delay: TimeAmount?, beforeForwardingData: (() -> Void)? = nil) {
        hold = delay.map { .waitingForFirstBytes($0) } ?? .passingThrough
        self.beforeForwardingData = beforeForwardingData
    }

    static func join(_ first: ForwardingHalf, _ second: ForwardingHalf) {
        first.partner = second
        second.partner = first
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Towards the partner

    private func send(_ event: Event) {
        switch hold {
        case .passingThrough:
            deliver(event)
        case let .holding(queued, timer):
            hold = .holding(queued + [event], timer)
        case let .waitingForFirstBytes(delay):
            guard case .data = event, let context else {
                deliver(event)
                return
            }
            let timer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
                releaseHeldEvents()
            }
            hold = .holding([event], timer)
        }
    }

    private func releaseHeldEvents() {
        guard case let .holding(queued, _) = hold else { return }
        hold = .passingThrough
        for event in queued { deliver(event) }
    }

    private func deliver(_ event: Event) {
        guard let partner else { return }
        switch event {
        case let .data(buffer):
            beforeForwardingData?()
            partner.partnerWrite(buffer)
        case .flush: partner.partnerFlush()
        case .inputEnded: partner.partnerInputEnded()
        case .closed:
            self.partner = nil
            partner.partnerClosed()
        }
    }

    // MARK: Called by the partner

    private func partnerWrite(_ buffer: ByteBuffer) {
        guard let context, !outputClosed else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(buffer), promise: promise)
        lastWrite = promise.futureResult
    }

    private func partnerFlush() {
        context?.flush()
    }

    /// The partner finished sending: once what it sent is written, shut this side's output.
    private func partnerInputEnded() {
        guard let context, !outputClosed else { return }
        outputClosed = true
        context.flush()
        afterPendingWrites { [self] in
            guard let context = self.context else { return }
            context.close(mode: inputClosed ? .all : .output, promise: nil)
        }
    }

    /// The partner is gone: nothing held for it matters any more; once what it sent is written,
    /// close this side.
    private func partnerClosed() {
        partner = nil
        if case let .holding(_, timer) = hold {
            timer.cancel()
            hold = .passingThrough
        }
        guard let context else { return }
        context.flush()
        afterPendingWrites { [self] in
            self.context?.close(promise: nil)
        }
    }

    private func partnerWritabilityChanged(isWritable: Bool) {
        if isWritable, readRequestedWhilePartnerBlocked {
            readRequestedWhilePartnerBlocked = false
            context?.read()
        }
    }

    private func afterPendingWrites(_ body: @escaping () -> Void) {
        guard let lastWrite else {
            body()
            return
        }
        lastWrite.assumeIsolated().whenComplete { _ in body() }
    }

    // MARK: Own channel

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        send(.data(unwrapInboundIn(data)))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        send(.flush)
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            send(.inputEnded)
            if outputClosed { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        send(.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        partner?.partnerWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? true {
            context.read()
        } else {
            readRequestedWhilePartnerBlocked = true
        }
    }
}
