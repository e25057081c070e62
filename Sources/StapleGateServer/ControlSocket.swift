#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

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
                .serverChannelInitializer { [logger] channel in
                    AcceptFailures.install(on: channel, listener: "control", logger: logger)
                }
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(HTTPRouteHandler(route: handler))
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
