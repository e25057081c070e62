import Foundation
import TestSupport
import XCTest

/// The gateway reaches Mosquitto over a Unix domain socket (the broker has no TCP listener at all).
final class UnixSocketUpstreamTests: GatewayTestCase {
    override class var brokerHasTCPListener: Bool { false }
    override class var brokerHasUnixSocketListener: Bool { true }

    func testDevicePublishesToBrokerOverUnixSocket() async throws {
        let socketPath = try XCTUnwrap(broker.unixSocketPath)
        let gateway = try await startGateway(upstream: .unixSocket(path: socketPath))
        let topic = uniqueTopic("unix")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-3", topic: topic, message: "over a unix socket")

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["over a unix socket"])
        try await gateway.log.waitFor("connected to broker unix:\(socketPath)", where: { $0.metadata["device"] == "device-3" })
    }

    /// Negative counterpart: a socket path nobody listens on makes the broker unreachable.
    func testMissingSocketMakesBrokerUnreachable() async throws {
        let missing = try makeTemporaryDirectory().file("nobody-listens-here.sock")
        let gateway = try await startGateway(upstream: .unixSocket(path: missing))

        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-3",
                                            topic: uniqueTopic("unix/missing"), message: "lost")

        XCTAssertNotEqual(result.status, .exited(0), "\(result)")
        let unreachable = try await gateway.log.waitFor("broker unreachable")
        XCTAssertTrue(unreachable.message.contains("unix:\(missing)"), "\(unreachable)")
    }
}
