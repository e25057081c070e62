import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import StapleGateConfig

/// The admin HTTP listener (`admin` in the config): probes and monitoring over TCP, answered by
/// `AdminRoutes`. Put it in the service group before the gateway: services stop in reverse
/// order, so it still answers (/readyz: 503) while the gateway drains.
public final class AdminServer: Service, Sendable {
    private let configuration: AdminConfiguration
    private let group: EventLoopGroup
    private let logger: Logger
    private let routes: AdminRoutes

    public init(configuration: AdminConfiguration, group: EventLoopGroup, logger: Logger, routes: AdminRoutes) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.routes = routes
    }

    public func run() async throws {
        let routes = self.routes
        let channel: Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { [logger] channel in
                    AcceptFailures.install(on: channel, listener: "admin", logger: logger)
                }
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(HTTPRouteHandler(route: { await routes.handle($0) }))
                    }
                }
                .bind(host: configuration.address, port: configuration.port).get()
        } catch {
            // Devices matter more than probes: the gateway serves them anyway, and the probes'
            // failure to connect is what tells the operator (as does this line).
            logger.error("cannot open the admin listener on \(configuration.address):\(configuration.port): \(error); /healthz, /readyz and /metrics are unavailable")
            try? await gracefulShutdown()
            return
        }
        // Tests read the port from this line when the config asks for port 0.
        // No colon after the address: tests take the port from after the line's last one.
        let access = configuration.token != nil ? "bearer token required, but for /healthz and /readyz"
            : (configuration.allowUnauthenticated ? "no authentication (admin.allow_unauthenticated)" : "no authentication")
        logger.notice("admin listening on \(channel.localAddress?.displayText ?? "?") (\(access))")
        try? await gracefulShutdown()
        try? await channel.close()
    }
}
