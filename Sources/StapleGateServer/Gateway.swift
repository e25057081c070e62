import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import StapleGateConfig
import StapleGateProxy
import StapleGateOCSP
import StapleGateTLS
import StapleGateTrace

/// The listener that accepts devices and builds each connection's pipeline:
/// TLS → handshake deadline → admission → (proxy, once admitted).
public final class Gateway: Service, Sendable {
    public let configuration: GatewayConfiguration
    private let serverContext: ServerContext
    private let group: EventLoopGroup
    private let ownsGroup: Bool
    private let logger: Logger
    private let state = NIOLockedValueBox(ListenerState())
    /// Asked for every accepted connection: a reason to refuse it before any TLS work (e.g. a
    /// strict stapling policy with no valid staple held), or nil to go ahead.
    private let admissionGate: @Sendable () -> String?
    /// Sessions admitted to the broker, by certificate (for rechecks of live sessions).
    public let liveSessions: LiveSessions
    /// Where per-device trace events go; nil: not traced.
    private let traceStore: TraceStore?
    /// The device-status cache's entry for a certificate, for the OCSP details of traces.
    private let deviceStatus: (@Sendable (X509Certificate) -> CachedOCSPStatus?)?
    /// Told READY=1 once devices can connect and STOPPING=1 when the drain begins.
    private let systemd: SystemdNotifier?

    private struct ListenerState {
        var channel: Channel?
        var nextConnectionID: UInt64 = 1
        /// Open device connections, so that stop() can close them.
        var connections: [ObjectIdentifier: Channel] = [:]
    }

    public struct StartError: Error, CustomStringConvertible {
        public let address: String
        public let underlying: Error
        public var description: String { "cannot listen on \(address): \(underlying)" }
    }

    /// - Parameter group: the event loops to run on; by default one per core, owned and shut
    ///   down by the gateway.
    public init(configuration: GatewayConfiguration, serverContext: ServerContext,
                group: EventLoopGroup? = nil, logger: Logger,
                admissionGate: @escaping @Sendable () -> String? = { nil }, liveSessions: LiveSessions? = nil,
                traceStore: TraceStore? = nil, deviceStatus: (@Sendable (X509Certificate) -> CachedOCSPStatus?)? = nil,
                systemd: SystemdNotifier? = nil) {
        self.deviceStatus = deviceStatus
        self.systemd = systemd
        self.configuration = configuration
        self.admissionGate = admissionGate
        // By default capped as the configuration says (listen.max_sessions).
        self.liveSessions = liveSessions ?? LiveSessions(
            capacity: SessionCapacity.resolve(configuration.listen.maxSessions, logger: logger), logger: logger)
        self.traceStore = traceStore
        self.serverContext = serverContext
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        self.ownsGroup = group == nil
        self.logger = logger
    }

    public convenience init(loaded: LoadedConfiguration, group: EventLoopGroup? = nil, logger: Logger,
                            admissionGate: @escaping @Sendable () -> String? = { nil }) {
        self.init(configuration: loaded.configuration, serverContext: loaded.serverContext, group: group,
                  logger: logger, admissionGate: admissionGate)
    }

    /// The address devices connect to, once started.
    public var localAddress: SocketAddress? { state.withLockedValue { $0.channel?.localAddress } }

    /// Binds the listener. Returns the bound address (useful with port 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let listen = configuration.listen
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Int32(listen.backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
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
            "listen": "\(address.displayText)", "upstream": "\(configuration.upstream.endpoint)",
        ])
        systemd?.notify("READY=1\nSTATUS=listening for devices on \(address.displayText)")
        return address
    }

    /// Service entry point: listens until graceful shutdown is requested, then stops.
    public func run() async throws {
        if localAddress == nil { try await start() }
        try? await gracefulShutdown()
        systemd?.notify("STOPPING=1")
        try await stop()
    }

    /// Stops accepting and closes every connection.
    public func stop() async throws {
        let channel = state.withLockedValue { state -> Channel? in
            defer { state.channel = nil }
            return state.channel
        }
        try? await channel?.close()
        let open = state.withLockedValue { Array($0.connections.values) }
        let closed = open.map { connection in connection.close().recover { _ in } }
        try? await EventLoopFuture.andAllComplete(closed, on: group.any()).get()
        if ownsGroup { try await group.shutdownGracefully() }
        logger.notice("stopped")
    }

    private func setUpConnection(_ channel: Channel) throws {
        let id = state.withLockedValue { state -> UInt64 in
            defer { state.nextConnectionID += 1 }
            return state.nextConnectionID
        }
        var connectionLogger = logger
        let remote = channel.remoteAddress?.displayText ?? "?"
        connectionLogger[metadataKey: "conn"] = "\(id)"
        connectionLogger[metadataKey: "remote"] = "\(remote)"
        let tracer = ConnectionTracer(store: traceStore, connectionID: id, remoteAddress: remote)
        if let refusal = admissionGate() {
            connectionLogger.warning("refusing device connection: \(refusal)")
            tracer.record(.accepted, "connection refused before TLS: \(refusal)", failure: true)
            channel.close(promise: nil)
            return
        }
        connectionLogger.debug("device connection accepted")
        let opened = NIODeadline.now()
        let closedLogger = connectionLogger
        let key = ObjectIdentifier(channel)
        state.withLockedValue { $0.connections[key] = channel }
        channel.closeFuture.whenComplete { [state] _ in
            state.withLockedValue { _ = $0.connections.removeValue(forKey: key) }
            closedLogger.debug("connection closed", metadata: [
                "duration_s": "\(Double((NIODeadline.now() - opened).nanoseconds) / 1e9)",
            ])
        }
        let traceStore = self.traceStore
        let settings = MQTTAdmissionHandler.Settings(
            upstream: configuration.upstream, admission: configuration.admission, liveSessions: liveSessions,
            messageTraceUntil: { identity in traceStore?.messageTraceUntil(device: identity) })
        var handlers: [ChannelHandler] = [try OpenSSLServerHandler(context: serverContext, logger: connectionLogger)]
        // Untraced gateways keep the data path one handler shorter.
        if traceStore != nil {
            handlers.append(SessionTraceHandler(tracer: tracer, identitySource: configuration.admission.identity,
                                                deviceStatus: deviceStatus))
        }
        handlers.append(HandshakeDeadlineHandler(timeout: TimeAmount(configuration.tls.handshakeTimeout), logger: connectionLogger))
        handlers.append(MQTTAdmissionHandler(settings: settings, tracer: tracer, logger: connectionLogger))
        try channel.pipeline.syncOperations.addHandlers(handlers)
    }
}
