import Logging
import Metrics
import NIOCore
@testable import StapleGateServer
import XCTest

/// The token bucket per source address behind `listen.per_source_connection_rate`.
final class SourceRateLimitUnitTests: XCTestCase {
    private func limit(_ rate: Int) -> SourceRateLimit {
        SourceRateLimit(rate: rate, logger: Logger(label: "test"), factory: NOOPMetricsHandler.instance)
    }

    func testABurstOfTheRateIsAdmittedThenOneATokenRefills() {
        let limit = limit(3)
        let start = NIODeadline.now()
        XCTAssertEqual((0..<5).map { _ in limit.admits("192.0.2.1", now: start) }, [true, true, true, false, false])
        // A token is a third of a second.
        XCTAssertFalse(limit.admits("192.0.2.1", now: start + .milliseconds(300)))
        XCTAssertTrue(limit.admits("192.0.2.1", now: start + .milliseconds(340)))
        XCTAssertFalse(limit.admits("192.0.2.1", now: start + .milliseconds(350)))
        // Never more than the rate banked, however long the source was quiet.
        let later = start + .seconds(60)
        XCTAssertEqual((0..<4).map { _ in limit.admits("192.0.2.1", now: later) }, [true, true, true, false])
    }

    func testEachSourceHasItsOwnBucket() {
        let limit = limit(1)
        let now = NIODeadline.now()
        XCTAssertTrue(limit.admits("192.0.2.1", now: now))
        XCTAssertFalse(limit.admits("192.0.2.1", now: now))
        XCTAssertTrue(limit.admits("192.0.2.2", now: now))
        XCTAssertTrue(limit.admits("2001:db8::1", now: now))
    }
}
