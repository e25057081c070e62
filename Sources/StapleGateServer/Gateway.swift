import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import StapleGateConfig
import StapleGateProxy
import StapleGateProxyProtocol
import StapleGateOCSP
import StapleGateTLS
import StapleGateTrace

/// The listener that accepts devices and builds each connection's pipeline:
/// (PROXY header, behind a balancer) → TLS → handshake deadline → admission → (proxy, once admitted).
public final class Gateway: Service, Sendable {
    private let group: EventLoopGroup
    private let ownsGroup: Bool
    private let logger: Logger
    private let state = NIOLockedValueBox(ListenerState())
    /// What new connections are built from; a reload swaps it (see `adopt`).
    private let generation: NIOLockedValueBox<GatewayGeneration>
    /// Sessions admitted to the broker, by certificate (for rechecks of live sessions).
    public let liveSessions: LiveSessions
    /// Each broker's state (up, or marked down and why), shared by every session and readiness;
    /// kept across reloads.
    public let brokerHealth: BrokerHealth
    /// Where per-device trace events go; nil: not traced.
    private let traceStore: (any TraceStore)?
    /// Told READY=1 once devices can connect and STOPPING=1 when the drain begins.
    private let systemd: SystemdNotifier?
    private let metrics: GatewayMetrics
    /// Connections refused for the PROXY protocol (`listen.proxy_protocol`), counted and logged.
    private let proxyRefusals: ProxyProtocolRefusals
    /// Failed and timed-out handshakes' log lines: one by one, then a summary during a flood.
    private let handshakeFailureLog: HandshakeFailureLog
    /// `listen.max_handshakes` (as at start); nil: no limit.
    private let handshakeSlots: HandshakeSlots?
    /// Whether the listener accepts: closed while the handshake slots are full or accepts back off.
    private let listenerGate = ListenerReadGate()
    /// `listen.per_source_connection_rate` (as at start); nil: no limit.
    private let sourceRateLimit: SourceRateLimit?

    private struct ListenerState {
        var channel: Channel?
        /// Set when SIGTERM starts the drain: the listener is closed and stays closed.
        var draining = false
        var nextConnectionID: UInt64 = 1
        /// Open device connections, so that the drain can wait for them and close the rest.
        var connections: [ObjectIdentifier: Channel] = [:]
    }

    public struct StartError: Error, CustomStringConvertible {
        public let address: String
        public let underlying: Error
        public var description: String { "cannot listen on \(address): \(underlying)" }
    }

    /// - Parameter group: the event loops to run on; by default one per core, owned and shut
    ///   down by the gateway.
    public init(generation: GatewayGeneration, group: EventLoopGroup? = nil, logger: Logger,
                liveSessions: LiveSessions? = nil, traceStore: (any TraceStore)? = nil,
                systemd: SystemdNotifier? = nil, metrics: GatewayMetrics = GatewayMetrics()) {
        self.generation = NIOLockedValueBox(generation)
        self.metrics = metrics
        self.systemd = systemd
        // By default capped as the configuration says (listen.max_sessions).
        self.liveSessions = liveSessions ?? LiveSessions(
            capacity: SessionCapacity.resolve(generation.configuration.listen.maxSessions, logger: logger), logger: logger)
        self.liveSessions.widenAdmissionWindow(to: generation.configuration.admissionWindow)
        self.traceStore = traceStore
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: UsableCores.count)
        self.ownsGroup = group == nil
        self.logger = logger
        proxyRefusals = ProxyProtocolRefusals(logger: logger)
        handshakeFailureLog = HandshakeFailureLog(summaryLogger: logger)
        let listen = generation.configuration.listen
        handshakeSlots = listen.maxHandshakes > 0
            ? HandshakeSlots(limit: listen.maxHandshakes, backlog: listen.backlog, gate: listenerGate, logger: logger,
                             factory: metrics.factory) : nil
        sourceRateLimit = listen.perSourceConnectionRate > 0
            ? SourceRateLimit(rate: listen.perSourceConnectionRate, logger: logger, factory: metrics.factory) : nil
        brokerHealth = BrokerHealth(logger: logger, factory: metrics.factory)
        brokerHealth.track(generation.configuration.upstream.brokers)
    }

    /// A gateway without device checks or stapling.
    public convenience init(configuration: GatewayConfiguration, serverContext: ServerContext,
                            group: EventLoopGroup? = nil, logger: Logger, liveSessions: LiveSessions? = nil,
                            traceStore: (any TraceStore)? = nil) {
        self.init(generation: GatewayGeneration(configuration: configuration, serverContext: serverContext),
                  group: group, logger: logger, liveSessions: liveSessions, traceStore: traceStore)
    }

    /// The configuration new connections follow (the latest one reloaded).
    public var configuration: GatewayConfiguration { currentGeneration.configuration }

    public var currentGeneration: GatewayGeneration { generation.withLockedValue { $0 } }

    /// From the next accepted connection on, connections are built from `next`; those already
    /// open keep what they were accepted with.
    public func adopt(_ next: GatewayGeneration) {
        // Brokers first: a session built from the new generation finds its brokers tracked.
        brokerHealth.track(next.configuration.upstream.brokers)
        generation.withLockedValue { $0 = next }
        liveSessions.widenAdmissionWindow(to: next.configuration.admissionWindow)
    }

    /// The address devices connect to, once started.
    public var localAddress: SocketAddress? { state.withLockedValue { $0.channel?.localAddress } }

    /// Listening and not draining: what readiness reports.
    public var isAcceptingDevices: Bool { state.withLockedValue { $0.channel != nil && !$0.draining } }

    /// Device connections open now (handshaking, admitting or proxying).
    public var openConnectionCount: Int { state.withLockedValue { $0.connections.count } }

    /// Binds the listener. Returns the bound address (useful with port 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let listen = configuration.listen
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Int32(listen.backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Out of descriptors, the listener backs off instead of spinning on accept(), and says so.
            .serverChannelInitializer { [listenerGate, logger, metrics] channel in
                AcceptFailures.install(on: channel, listener: "device", gate: listenerGate, logger: logger, factory: metrics.factory)
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: SessionReceiveBuffers.allocator)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try self.setUpConnection(channel) }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: listen.address, port: listen.port).get()
        } catch {
            throw StartError(address: "\(listen.address):\(listen.port)", underlying: error)
        }
        state.withLockedValue { $0.channel = channel }
        let address = channel.localAddress!
        logger.notice("listening for devices", metadata: [
            "listen": "\(address.displayText)", "upstream": "\(configuration.upstream.summary)",
            "event_loops": "\(Array(group.makeIterator()).count)",
        ])
        return address
    }

    /// Service entry point: listens until graceful shutdown is requested, then drains.
    public func run() async throws {
        if localAddress == nil { try await start() }
        await cancelWhenGracefulShutdown { await self.announceReady() }
        try? await gracefulShutdown()
        // Graceful shutdown (SIGTERM) drains; cancellation (SIGINT, Ctrl-C at a terminal) means
        // now, so open sessions are closed at once.
        await drain(gracePeriod: Task.isCancelled ? .zero : configuration.listen.drainGracePeriod)
        if ownsGroup { try await group.shutdownGracefully() }
        logger.notice("stopped")
    }

    /// READY=1 once devices can be served: at once, or, under a strict staple policy, once the
    /// staple is held (systemd then sees the start fail by its timeout if it never is).
    private func announceReady() async {
        var waiting: String?
        while let reason = currentGeneration.refusalReason() {
            if waiting != reason {
                waiting = reason
                logger.warning("not ready: \(reason)")
                systemd?.notify("STATUS=waiting: \(reason)")
            }
            do { try await Task.sleep(for: .milliseconds(200)) } catch { return }
        }
        let listening = localAddress?.displayText ?? "?"
        systemd?.notify("READY=1\nSTATUS=listening for devices on \(listening)")
    }

    /// SIGTERM: stop accepting (readiness drops first), let open sessions finish for
    /// `gracePeriod`, then close the rest.
    public func drain(gracePeriod: Duration) async {
        let (listener, open) = state.withLockedValue { state -> (Channel?, [Channel]) in
            state.draining = true
            defer { state.channel = nil }
            return (state.channel, Array(state.connections.values))
        }
        systemd?.notify("STOPPING=1\nSTATUS=draining \(open.count) connections")
        try? await listener?.close()
        if !open.isEmpty {
            logger.notice("draining: the listener is closed; \(open.count) connections may finish within \(gracePeriod)")
            // Whichever comes first: every connection closed, or the grace period over.
            let loop = group.any()
            let over = loop.makePromise(of: Void.self)
            let deadline = loop.scheduleTask(in: TimeAmount(gracePeriod)) { over.succeed() }
            EventLoopFuture.andAllComplete(open.map(\.closeFuture), on: loop).whenComplete { _ in
                deadline.cancel()
                over.succeed()
            }
            try? await over.futureResult.get()
        }
        let remaining = state.withLockedValue { Array($0.connections.values) }
        if !remaining.isEmpty {
            logger.notice("drain grace period over: closing \(remaining.count) connections still open")
        }
        let closed = remaining.map { connection in connection.close().recover { _ in } }
        try? await EventLoopFuture.andAllComplete(closed, on: group.any()).get()
    }

    /// Stops at once: no grace period (tests, and callers that manage their own shutdown).
    public func stop() async throws {
        await drain(gracePeriod: .zero)
        if ownsGroup { try await group.shutdownGracefully() }
        logger.notice("stopped")
    }

    private func setUpConnection(_ channel: Channel) throws {
        let accepted = state.withLockedValue { state -> UInt64? in
            // Accepted just as the drain closed the listener: not served.
            guard !state.draining else { return nil }
            defer { state.nextConnectionID += 1 }
            return state.nextConnectionID
        }
        guard let id = accepted else {
            channel.close(promise: nil)
            return
        }
        let generation = currentGeneration
        let configuration = generation.configuration
        let peer = channel.remoteAddress?.displayText ?? "?"
        metrics.connectionAccepted(channel)
        if let refusal = generation.refusalReason() {
            logger.warning("refusing device connection: \(refusal)", metadata: ["conn": "\(id)", "remote": "\(peer)"])
            ConnectionTracer(store: traceStore, connectionID: id, remoteAddress: peer)
                .record(.accepted, "connection refused before TLS: \(refusal)", failure: true)
            channel.close(promise: nil)
            return
        }
        // Behind a balancer every connection comes from it: the device's address is in the header.
        if configuration.listen.proxyProtocol == nil, let limit = sourceRateLimit, let source = channel.remoteAddress?.ipAddress,
           !limit.admits(source) {
            channel.close(promise: nil)
            return
        }
        track(channel, id: id)
        // Held from accept to the end of the handshake, or to the close if that comes first.
        let slot = handshakeSlots?.take()
        if let slot { channel.closeFuture.whenComplete { _ in slot.release() } }
        // Only the broker's PROXY header needs them: not worked out per connection otherwise.
        let device = configuration.upstream.sendsProxyProtocol
            ? Endpoints(device: ProxyEndpoint(channel.remoteAddress), gateway: ProxyEndpoint(channel.localAddress))
            : Endpoints(device: nil, gateway: nil)
        guard let versions = configuration.listen.proxyProtocol else {
            return try startDeviceSession(channel, id: id, generation: generation, remote: peer, endpoints: device, slot: slot)
        }
        // Behind a balancer the device's address comes in the PROXY header: the rest of the
        // pipeline (and every log line and trace event naming the device) waits for it.
        try channel.pipeline.syncOperations.addHandler(ProxyHeaderHandler(
            accepting: versions, trusted: configuration.listen.trustedProxies,
            timeout: TimeAmount(configuration.tls.handshakeTimeout), refusals: proxyRefusals
        ) { [self] header, context in
            if let limit = sourceRateLimit, let source = header.source.flatMap(SourceRateLimit.address) ?? context.channel.remoteAddress?.ipAddress,
               !limit.admits(source) {
                context.close(promise: nil)
                return
            }
            let endpoints = Endpoints(device: header.source, gateway: header.destination ?? device.gateway)
            try startDeviceSession(context.channel, id: id, generation: generation,
                                   remote: header.source?.description ?? peer, endpoints: endpoints, slot: slot)
        })
    }

    /// Where a device connected from and to, as the broker's PROXY header says it.
    private struct Endpoints {
        let device: ProxyEndpoint?
        let gateway: ProxyEndpoint?
    }

    /// Keeps `channel` among the open connections (for the drain) until it closes.
    private func track(_ channel: Channel, id: UInt64) {
        let opened = NIODeadline.now()
        let key = ObjectIdentifier(channel)
        state.withLockedValue { $0.connections[key] = channel }
        channel.closeFuture.whenComplete { [state, logger] _ in
            state.withLockedValue { _ = $0.connections.removeValue(forKey: key) }
            logger.debug("connection closed", metadata: [
                "conn": "\(id)", "duration_s": "\(Double((NIODeadline.now() - opened).nanoseconds) / 1e9)",
            ])
        }
    }

    /// TLS → handshake deadline → admission, for a device at `remote` (its own address, also
    /// behind a balancer).
    private func startDeviceSession(_ channel: Channel, id: UInt64, generation: GatewayGeneration, remote: String,
                                    endpoints: Endpoints, slot: HandshakeSlots.Slot?) throws {
        let configuration = generation.configuration
        var connectionLogger = logger
        connectionLogger[metadataKey: "conn"] = "\(id)"
        connectionLogger[metadataKey: "remote"] = "\(remote)"
        connectionLogger.debug("device connection accepted")
        let tracer = ConnectionTracer(store: traceStore, connectionID: id, remoteAddress: remote)
        let traceStore = self.traceStore
        var settings = MQTTAdmissionHandler.Settings(
            upstream: configuration.upstream, brokers: brokerHealth, admission: configuration.admission, liveSessions: liveSessions,
            messageTraceUntil: { identity in traceStore?.messageTraceUntil(device: identity) }, proxyMetrics: metrics.proxy)
        if configuration.upstream.sendsProxyProtocol {
            settings.upstreamPreamble = { identity, handshake in
                UpstreamProxyHeader.bytes(device: endpoints.device, gateway: endpoints.gateway, identity: identity,
                                          handshake: handshake)
            }
        }
        var handlers: [ChannelHandler] = [OpenSSLServerHandler(context: generation.serverContext, logger: connectionLogger,
                                                                   failureLog: handshakeFailureLog),
                                          HandshakeMetricsHandler(metrics: metrics)]
        if let slot { handlers.append(HandshakeSlotHandler(slot: slot)) }
        // Untraced gateways keep the data path one handler shorter.
        if traceStore != nil {
            handlers.append(SessionTraceHandler(tracer: tracer, identitySource: configuration.admission.identity))
        }
        handlers.append(HandshakeDeadlineHandler(timeout: TimeAmount(configuration.tls.handshakeTimeout), logger: connectionLogger,
                                                 failureLog: handshakeFailureLog))
        handlers.append(MQTTAdmissionHandler(settings: settings, tracer: tracer, logger: connectionLogger))
        try channel.pipeline.syncOperations.addHandlers(handlers)
    }
}

extension GatewayConfiguration {
    /// The longest from a device certificate's judgment (in the handshake) to its session's
    /// registration: what a recheck's bar must cover (`LiveSessions.bar`).
    var admissionWindow: Duration { tls.handshakeTimeout + admission.connectTimeout }
}
