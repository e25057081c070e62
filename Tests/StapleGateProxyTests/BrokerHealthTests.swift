#if canImport(Glibc)
import Glibc
#endif
import Logging
import MetricsTestKit
import NIOCore
@testable import StapleGateProxy
import XCTest

/// The shared broker state: up → down on a failure (skipped for `down_time`), one session's
/// retry once it is over, back up on a connect; what each session's plan looks like meanwhile,
/// the per-broker metrics, and what a reload's new broker list keeps and drops.
final class BrokerHealthTests: XCTestCase {
    private let a = UpstreamConfiguration.Endpoint.tcp(host: "127.0.0.1", port: 1883)
    private let b = UpstreamConfiguration.Endpoint.tcp(host: "127.0.0.1", port: 1884)
    private let c = UpstreamConfiguration.Endpoint.unixSocket(path: "/run/mosquitto/mosquitto.sock")
    private let refused = BrokerConnectFailure(result: .refused, reason: "Connection refused")
    private var metrics: TestMetrics!
    private var health: BrokerHealth!
    private var upstream: UpstreamConfiguration!
    private let start = NIODeadline.now()

    override func setUp() {
        metrics = TestMetrics()
        health = BrokerHealth(logger: Logger(label: "test"), factory: metrics)
        upstream = UpstreamConfiguration(brokers: [a, b], balance: .failover, downTime: .seconds(10))
        health.track(upstream.brokers)
    }

    private func plan(at offset: Duration = .zero, key: String = "device-1") -> BrokerHealth.Plan {
        health.plan(for: upstream, hashKey: key, now: start + TimeAmount(offset))
    }

    private func up(_ broker: UpstreamConfiguration.Endpoint) throws -> Double? {
        try metrics.expectGauge("staplegate_upstream_broker_up", [("broker", "\(broker)")]).lastValue
    }

    func testNewBrokersStartUpWithEveryConnectResultAtZero() throws {
        XCTAssertEqual(health.statuses(of: [a, b]).map(\.up), [true, true])
        XCTAssertEqual(try up(a), 1)
        XCTAssertEqual(try up(b), 1)
        for broker in [a, b] {
            for result in BrokerConnectResult.allCases {
                let counter = try metrics.expectCounter("staplegate_upstream_connects_total",
                                                        [("broker", "\(broker)"), ("result", result.rawValue)])
                XCTAssertEqual(counter.totalValue, 0)
            }
        }
        XCTAssertEqual(plan().brokers, [a, b])
    }

    func testAFailureMarksTheBrokerDownAndPlansSkipItUntilItsDownTimeIsOver() throws {
        health.record(a, failure: refused, downTime: upstream.downTime, now: start)
        let status = try XCTUnwrap(health.statuses(of: [a]).first)
        XCTAssertFalse(status.up)
        XCTAssertEqual(status.lastError, "Connection refused")
        XCTAssertEqual(try up(a), 0)
        XCTAssertEqual(try up(b), 1)
        XCTAssertEqual(plan(at: .seconds(1)).brokers, [b, a], "skipped, but last resort")
        XCTAssertEqual(plan(at: .seconds(9)).brokers, [b, a])
        // A second failure while down keeps `since` and pushes the retry out.
        health.record(a, failure: BrokerConnectFailure(result: .timeout, reason: "connect timed out"), downTime: .seconds(10),
                      now: start + .seconds(5))
        XCTAssertEqual(health.statuses(of: [a]).first?.since, status.since)
        XCTAssertEqual(health.statuses(of: [a]).first?.lastError, "connect timed out")
        XCTAssertEqual(plan(at: .seconds(12)).brokers, [b, a], "10 s after the second failure, not the first")
    }

    func testOnceTheDownTimeIsOverOneSessionRetriesWhileTheOthersKeepSkipping() throws {
        health.record(a, failure: refused, downTime: upstream.downTime, now: start)
        let retry = plan(at: .seconds(11))
        XCTAssertEqual(retry.brokers, [a, b], "its turn again, first in list order")
        XCTAssertEqual(retry.candidates.map(\.isTrial), [true, false])
        XCTAssertEqual(health.condition(of: a), .retrying(since: health.statuses(of: [a])[0].since))
        let meanwhile = plan(at: .seconds(11))
        XCTAssertEqual(meanwhile.brokers, [b, a], "only one session retries")
        XCTAssertEqual(meanwhile.candidates.map(\.isTrial), [false, false])

        // The retry connects: up again, for everyone.
        health.record(a, failure: nil, downTime: upstream.downTime, now: start + .seconds(11))
        let status = try XCTUnwrap(health.statuses(of: [a]).first)
        XCTAssertTrue(status.up)
        XCTAssertEqual(status.lastError, "Connection refused", "the last error is kept after it is back")
        XCTAssertEqual(try up(a), 1)
        XCTAssertEqual(plan(at: .seconds(12)).brokers, [a, b])
    }

    func testARetryNeverAttemptedIsHandedToTheNextSession() throws {
        upstream = UpstreamConfiguration(brokers: [a, b], balance: .roundRobin, downTime: .seconds(10))
        health.record(b, failure: refused, downTime: upstream.downTime, now: start)
        let first = plan(at: .seconds(11))
        XCTAssertEqual(first.candidates.first { $0.broker == b }?.isTrial, true)
        // That session connected to its first broker and never tried b.
        health.release(b, now: start + .seconds(11))
        let next = plan(at: .seconds(11))
        XCTAssertEqual(next.candidates.first { $0.broker == b }?.isTrial, true, "the retry was handed on")
        XCTAssertFalse(try XCTUnwrap(health.statuses(of: [b]).first).up, "still down until a connect succeeds")
    }

    func testAFailedRetryMarksTheBrokerDownForAnotherDownTime() {
        health.record(a, failure: refused, downTime: upstream.downTime, now: start)
        _ = plan(at: .seconds(11))
        health.record(a, failure: refused, downTime: upstream.downTime, now: start + .seconds(11))
        XCTAssertEqual(plan(at: .seconds(12)).brokers, [b, a])
        XCTAssertEqual(plan(at: .seconds(20)).brokers, [b, a])
        XCTAssertEqual(plan(at: .seconds(22)).candidates.map(\.isTrial), [true, false])
    }

    func testEveryBrokerDownStillPlansThemAll() {
        health.record(a, failure: refused, downTime: upstream.downTime, now: start)
        health.record(b, failure: refused, downTime: upstream.downTime, now: start)
        XCTAssertEqual(plan(at: .seconds(1)).brokers, [a, b])
        XCTAssertEqual(health.statuses(of: [a, b]).map(\.up), [false, false])
    }

    func testRoundRobinAdvancesOncePerSession() {
        upstream = UpstreamConfiguration(brokers: [a, b], balance: .roundRobin)
        XCTAssertEqual((0..<4).map { _ in plan().brokers[0] }, [a, b, a, b])
    }

    func testAReloadKeepsTheStateOfBrokersKeptAndDropsTheMetricsOfBrokersRemoved() throws {
        health.record(a, failure: refused, downTime: upstream.downTime, now: start)
        let downSince = health.statuses(of: [a])[0].since
        health.track([a, c])
        XCTAssertEqual(health.statuses(of: [a])[0].since, downSince)
        XCTAssertFalse(health.statuses(of: [a])[0].up)
        XCTAssertEqual(try up(c), 1)
        XCTAssertThrowsError(try metrics.expectGauge("staplegate_upstream_broker_up", [("broker", "\(b)")]),
                             "the removed broker's series is gone")
        XCTAssertThrowsError(try metrics.expectCounter("staplegate_upstream_connects_total", [("broker", "\(b)"), ("result", "ok")]))
        // A session planned before the reload may still report on b: ignored.
        health.record(b, failure: refused, downTime: upstream.downTime)
        XCTAssertTrue(health.statuses(of: [b])[0].up, "untracked brokers read as up")
    }

    func testConnectFailuresAreNamedAndLabelledAsOperatorsKnowThem() {
        let timeout = BrokerConnectFailure(ChannelError.connectTimeout(.seconds(5)))
        XCTAssertEqual(timeout, BrokerConnectFailure(result: .timeout, reason: "connect timed out"))
        let refused = BrokerConnectFailure(IOError(errnoCode: ECONNREFUSED, reason: "connect"))
        XCTAssertEqual(refused, BrokerConnectFailure(result: .refused, reason: "Connection refused"))
        let noSocket = BrokerConnectFailure(IOError(errnoCode: ENOENT, reason: "connect"))
        XCTAssertEqual(noSocket, BrokerConnectFailure(result: .refused, reason: "No such file or directory"), "a Unix socket nobody made")
        let unreachable = BrokerConnectFailure(IOError(errnoCode: EHOSTUNREACH, reason: "connect"))
        XCTAssertEqual(unreachable, BrokerConnectFailure(result: .error, reason: "No route to host"))
    }
}
