import Foundation
import Logging
import NIOCore
import NIOPosix
import StapleGateConfig
import StapleGateProxy
import StapleGateServer
import StapleGateTLS

/// A real `Gateway` in this process: listening on 127.0.0.1 (a port the kernel picks), terminating
/// TLS with the demo PKI's server.pem/server.key, admitting devices of ca-chain.pem, forwarding to
/// a broker. Logs into `log`.
public final class GatewayUnderTest: @unchecked Sendable {
    public let gateway: Gateway
    public let configuration: GatewayConfiguration
    public let port: Int
    public let log: LogRecorder
    private let group: MultiThreadedEventLoopGroup
    private let lock = NSLock()
    private var stopped = false

    public static func configuration(
        pki: TestPKI, upstream: UpstreamConfiguration.Endpoint,
        handshakeTimeout: Duration = .seconds(10), connectTimeout: Duration = .seconds(5),
        idleTimeout: Duration? = .seconds(3600), serverIdentities: [String] = ["server"]
    ) -> GatewayConfiguration {
        let tls = TLSServerConfiguration(
            certificates: serverIdentities.map {
                .init(chainPath: pki.certificate($0), keyPath: pki.key($0))
            },
            deviceCABundlePath: pki.caChain,
            handshakeTimeout: handshakeTimeout)
        return GatewayConfiguration(
            listen: ListenConfiguration(address: "127.0.0.1", port: 0),
            tls: tls,
            upstream: UpstreamConfiguration(endpoint: upstream, connectTimeout: connectTimeout, idleTimeout: idleTimeout),
            logLevel: .debug)
    }

    /// Builds the server context, starts the gateway and returns once it listens.
    public static func start(
        pki: TestPKI, upstream: UpstreamConfiguration.Endpoint,
        handshakeTimeout: Duration = .seconds(10), connectTimeout: Duration = .seconds(5),
        idleTimeout: Duration? = .seconds(3600)
    ) async throws -> GatewayUnderTest {
        try await start(configuration(pki: pki, upstream: upstream, handshakeTimeout: handshakeTimeout,
                                      connectTimeout: connectTimeout, idleTimeout: idleTimeout))
    }

    public static func start(pki: TestPKI, broker: MosquittoBroker, handshakeTimeout: Duration = .seconds(10)) async throws -> GatewayUnderTest {
        try await start(pki: pki, upstream: broker.endpoint, handshakeTimeout: handshakeTimeout)
    }

    public static func start(_ configuration: GatewayConfiguration) async throws -> GatewayUnderTest {
        let log = LogRecorder()
        let context = try ServerContext(configuration: configuration.tls)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let gateway = Gateway(configuration: configuration, serverContext: context, group: group,
                              logger: .recording(into: log))
        let address: SocketAddress
        do {
            address = try await gateway.start()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        guard let port = address.port else { fatalError("the gateway listens on \(address), which has no port") }
        return GatewayUnderTest(gateway: gateway, configuration: configuration, port: port, log: log, group: group)
    }

    private init(gateway: Gateway, configuration: GatewayConfiguration, port: Int, log: LogRecorder,
                 group: MultiThreadedEventLoopGroup) {
        self.gateway = gateway
        self.configuration = configuration
        self.port = port
        self.log = log
        self.group = group
    }

    /// Where devices point their mosquitto_pub / mosquitto_sub.
    public func target(_ pki: TestPKI, device: String? = "device-1") -> MQTTTarget {
        .gateway(port: port, pki: pki, device: device)
    }

    /// Stops the gateway and its event loops (which closes any connection still open). Idempotent.
    public func stop() async throws {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        try await gateway.stop()
        try await group.shutdownGracefully()
    }
}
