import Logging
import NIOCore
import NIOPosix
import StapleGateProxy
import StapleGateServer
import TestSupport
import XCTest

/// The readiness probe of the brokers: a real connect to each real socket, its answer kept for a
/// while so that frequent scrapes do not each open a connection, and recorded in the brokers'
/// shared state.
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

    // MARK: Several brokers

    func testReadyWhileOneOfSeveralBrokersAnswersAndEachIsReported() async throws {
        let listening = try ListeningSocket()
        defer { listening.close() }
        let nobody = UpstreamConfiguration.Endpoint.tcp(host: "127.0.0.1", port: try FreePort.next())
        let up = UpstreamConfiguration.Endpoint.tcp(host: "127.0.0.1", port: listening.port)
        let upstream = UpstreamConfiguration(brokers: [nobody, up])
        let health = BrokerHealth(logger: Logger(label: "test"))
        health.track(upstream.brokers)
        let probe = UpstreamProbe(currentUpstream: { upstream }, health: health, group: group, maximumAge: .zero)

        let report = await probe.report()
        XCTAssertNil(report.failure, "one broker answers")
        XCTAssertEqual(report.brokers.map(\.broker), [nobody, up], "in configuration order")
        XCTAssertEqual(report.brokers.map(\.up), [false, true])
        XCTAssertEqual(report.brokers[0].lastError, "Connection refused")
        XCTAssertEqual(health.plan(for: upstream, hashKey: "x").brokers, [up, nobody], "the probe marked it down for sessions too")

        listening.close()
        let none = await probe.report()
        let failure = try XCTUnwrap(none.failure)
        XCTAssertEqual(failure, "no broker reachable: \(nobody): Connection refused; \(up): Connection refused")
        XCTAssertEqual(none.brokers.map(\.up), [false, false])
    }

    func testAnAnsweringProbeBringsABrokerMarkedDownBackBeforeItsDownTimeIsOver() async throws {
        let listening = try ListeningSocket()
        defer { listening.close() }
        let broker = UpstreamConfiguration.Endpoint.tcp(host: "127.0.0.1", port: listening.port)
        let upstream = UpstreamConfiguration(brokers: [broker], downTime: .seconds(3600))
        let health = BrokerHealth(logger: Logger(label: "test"))
        health.track([broker])
        health.record(broker, failure: BrokerConnectFailure(result: .refused, reason: "Connection refused"), downTime: .seconds(3600))
        XCTAssertEqual(health.statuses(of: [broker]).map(\.up), [false])

        let probe = UpstreamProbe(currentUpstream: { upstream }, health: health, group: group)
        let report = await probe.report()
        XCTAssertNil(report.failure)
        XCTAssertEqual(report.brokers.map(\.up), [true])
        XCTAssertEqual(report.brokers.first?.lastError, "Connection refused", "kept after it is back")
    }
}
