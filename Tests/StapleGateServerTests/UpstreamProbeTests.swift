import NIOCore
import NIOPosix
import StapleGateProxy
import StapleGateServer
import TestSupport
import XCTest

/// The readiness probe of the broker: a real connect to a real socket, its answer kept for a
/// while so that frequent scrapes do not each open a connection.
final class UpstreamProbeTests: XCTestCase {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    override func tearDown() async throws {
        try await group.shutdownGracefully()
    }

    func testAListeningBrokerIsReachable() async throws {
        let broker = try ListeningSocket()
        defer { broker.close() }
        let probe = UpstreamProbe(endpoint: .tcp(host: "127.0.0.1", port: broker.port), group: group)
        let failure = await probe.failure()
        XCTAssertNil(failure)
    }

    func testNothingListeningIsAFailureNamingTheEndpoint() async throws {
        let port = try FreePort.next()
        let probe = UpstreamProbe(endpoint: .tcp(host: "127.0.0.1", port: port), group: group)
        let answer = await probe.failure()
        let failure = try XCTUnwrap(answer)
        XCTAssertTrue(failure.contains("127.0.0.1:\(port)"), failure)
        let socket = UpstreamProbe(endpoint: .unixSocket(path: "/nonexistent/mosquitto.sock"), group: group)
        let socketAnswer = await socket.failure()
        let socketFailure = try XCTUnwrap(socketAnswer)
        XCTAssertTrue(socketFailure.contains("unix:/nonexistent/mosquitto.sock"), socketFailure)
    }

    func testTheAnswerIsKeptForItsMaximumAgeOnly() async throws {
        let broker = try ListeningSocket()
        let endpoint = UpstreamConfiguration.Endpoint.tcp(host: "127.0.0.1", port: broker.port)
        let cached = UpstreamProbe(endpoint: endpoint, group: group, maximumAge: .seconds(60))
        let fresh = UpstreamProbe(endpoint: endpoint, group: group, maximumAge: .zero)
        let cachedFirst = await cached.failure()
        let freshFirst = await fresh.failure()
        XCTAssertNil(cachedFirst)
        XCTAssertNil(freshFirst)
        broker.close()
        let cachedAfter = await cached.failure()
        let freshAfter = await fresh.failure()
        XCTAssertNil(cachedAfter, "still the kept answer")
        XCTAssertNotNil(freshAfter, "asked again")
    }
}
