import Foundation
@testable import StapleGateOCSP
import XCTest

/// The refresh and serving rules, with the clock and the jitter injected so each rule is exact.
final class StapleScheduleTests: XCTestCase {
    private let start = Date(timeIntervalSince1970: 1_800_000_000)
    private let timing = StapleSchedule.Timing(maximumInterval: .seconds(3600), minimumRetryDelay: .seconds(5),
                                               maximumRetryDelay: .seconds(600), jitter: 0.1)
    private let certID = CertID(issuerNameHash: [1], issuerKeyHash: [2], serialNumber: [3])

    private func response(_ status: OCSPCertStatus = .good, thisUpdate: TimeInterval = 0, validFor: TimeInterval? = 7200) -> VerifiedOCSPResponse {
        let issued = start + thisUpdate
        return VerifiedOCSPResponse(der: [0x30, UInt8(truncatingIfNeeded: Int(thisUpdate))], certID: certID, status: status,
                                    thisUpdate: issued, nextUpdate: validFor.map { issued + $0 }, producedAt: issued,
                                    responderID: "CN=test")
    }

    /// A staple another gateway fetched (the fleet's table) is held when newer than ours, and
    /// our own retry schedule and failure count stay: we still have to reach the responder.
    func testAnAdoptedStapleIsHeldWhenNewerAndTheRetryScheduleStays() {
        var schedule = StapleSchedule(timing: timing, now: start)
        schedule.recordFailure("responder down", now: start, jitterDraw: 0)
        let retry = schedule.nextRefresh
        schedule.adopt(response(thisUpdate: 60))
        XCTAssertEqual(schedule.servable(at: start + 61)?.thisUpdate, start + 60)
        XCTAssertEqual(schedule.nextRefresh, retry)
        XCTAssertEqual(schedule.consecutiveFailures, 1)
        schedule.adopt(response(thisUpdate: 30))
        XCTAssertEqual(schedule.held?.thisUpdate, start + 60, "an older staple does not replace a newer one")
        schedule.adopt(response(.unknown, thisUpdate: 90))
        XCTAssertEqual(schedule.held?.thisUpdate, start + 60, "unknown is never held")
        schedule.adopt(response(thisUpdate: 120))
        XCTAssertEqual(schedule.held?.thisUpdate, start + 120)
    }

    func testANewScheduleIsDueAtOnceAndServesNothing() {
        let schedule = StapleSchedule(timing: timing, now: start)
        XCTAssertEqual(schedule.nextRefresh, start)
        XCTAssertNil(schedule.servable(at: start))
    }

    func testRefreshIsPlannedAtHalfTheValidityWindowWithJitter() {
        var schedule = StapleSchedule(timing: timing, now: start)
        // 40-minute window: half is 20 minutes, inside the one-hour maximum.
        schedule.record(response(validFor: 2400), now: start, jitterDraw: 0)
        XCTAssertEqual(schedule.nextRefresh, start + 1200)
        schedule.record(response(validFor: 2400), now: start, jitterDraw: 1)
        XCTAssertEqual(schedule.nextRefresh, start + 1320, "+10 % jitter")
        schedule.record(response(validFor: 2400), now: start, jitterDraw: -1)
        XCTAssertEqual(schedule.nextRefresh, start + 1080, "-10 % jitter")
    }

    func testTheMaximumIntervalCapsLongWindowsAndAppliesWithoutNextUpdate() {
        var schedule = StapleSchedule(timing: timing, now: start)
        schedule.record(response(validFor: 7 * 86400), now: start, jitterDraw: 0)
        XCTAssertEqual(schedule.nextRefresh, start + 3600)
        schedule.record(response(validFor: nil), now: start, jitterDraw: 0)
        XCTAssertEqual(schedule.nextRefresh, start + 3600)
        XCTAssertNotNil(schedule.servable(at: start + 86400 * 30), "no nextUpdate: served until replaced")
    }

    func testAVeryShortWindowDoesNotMakeUsHammerTheResponder() {
        var schedule = StapleSchedule(timing: timing, now: start)
        schedule.record(response(validFor: 4), now: start, jitterDraw: 0)
        XCTAssertEqual(schedule.nextRefresh, start + 5, "never sooner than the retry floor")
    }

    func testFailuresBackOffExponentiallyUpToTheCapAndKeepTheLastGoodStaple() {
        var schedule = StapleSchedule(timing: timing, now: start)
        let good = response(validFor: 7200)
        schedule.record(good, now: start, jitterDraw: 0)
        var now = start + 3600
        var delays: [TimeInterval] = []
        for _ in 0..<10 {
            schedule.recordFailure("responder timed out after 5 s", now: now, jitterDraw: 0)
            delays.append(schedule.nextRefresh.timeIntervalSince(now))
            now = schedule.nextRefresh
        }
        XCTAssertEqual(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600])
        XCTAssertEqual(schedule.consecutiveFailures, 10)
        XCTAssertEqual(schedule.lastOutcome, .failed("responder timed out after 5 s"))
        XCTAssertEqual(schedule.servable(at: start + 7199)?.der, good.der, "the last good staple is kept while in date")
    }

    func testAStapleIsNeverServedPastItsNextUpdate() {
        var schedule = StapleSchedule(timing: timing, now: start)
        schedule.record(response(validFor: 600), now: start, jitterDraw: 0)
        XCTAssertNotNil(schedule.servable(at: start + 599))
        XCTAssertEqual(schedule.servableUntil(now: start), start + 600)
        XCTAssertNil(schedule.servable(at: start + 600))
        XCTAssertNil(schedule.servableUntil(now: start + 600))
    }

    func testAClockSteppedBackBehindTheLastFetchCallsForARefreshOnce() {
        var schedule = StapleSchedule(timing: timing, now: start)
        XCTAssertFalse(schedule.clockSteppedBack(now: start - 600), "nothing fetched yet: nothing to compare with")
        schedule.record(response(thisUpdate: 600), now: start + 600, jitterDraw: 0)
        XCTAssertFalse(schedule.clockSteppedBack(now: start + 700), "time going on")
        XCTAssertFalse(schedule.clockSteppedBack(now: start + 599.5), "NTP-sized slew is not a step")
        XCTAssertTrue(schedule.clockSteppedBack(now: start + 5), "ten minutes back")
        // Fetched again on the stepped clock: not again.
        schedule.record(response(thisUpdate: 5), now: start + 5, jitterDraw: 0)
        XCTAssertFalse(schedule.clockSteppedBack(now: start + 6))
        // A failed fetch counts as the attempt too: no loop while the responder is down.
        XCTAssertTrue(schedule.clockSteppedBack(now: start - 100))
        schedule.recordFailure("connection refused", now: start - 100, jitterDraw: 0)
        XCTAssertFalse(schedule.clockSteppedBack(now: start - 99))
    }

    func testASuccessAfterFailuresResetsTheBackoff() {
        var schedule = StapleSchedule(timing: timing, now: start)
        schedule.recordFailure("connection refused", now: start, jitterDraw: 0)
        schedule.recordFailure("connection refused", now: start + 5, jitterDraw: 0)
        schedule.record(response(thisUpdate: 15), now: start + 15, jitterDraw: 0)
        XCTAssertEqual(schedule.consecutiveFailures, 0)
        schedule.recordFailure("connection refused", now: start + 20, jitterDraw: 0)
        XCTAssertEqual(schedule.nextRefresh, start + 25, "backoff starts again from the floor")
    }

    func testRevokedIsServedButUnknownIsNot() {
        var schedule = StapleSchedule(timing: timing, now: start)
        let good = response(.good)
        schedule.record(good, now: start, jitterDraw: 0)
        schedule.record(response(.unknown, thisUpdate: 10), now: start + 10, jitterDraw: 0)
        XCTAssertEqual(schedule.lastOutcome, .notStapledUnknown)
        XCTAssertEqual(schedule.servable(at: start + 10)?.der, good.der, "unknown does not replace the good staple")
        XCTAssertEqual(schedule.nextRefresh, start + 15, "unknown is retried like a failure")

        let revoked = response(.revoked(at: start, reason: .keyCompromise), thisUpdate: 20)
        schedule.record(revoked, now: start + 20, jitterDraw: 0)
        XCTAssertEqual(schedule.servable(at: start + 20)?.der, revoked.der, "revoked is the truth and is stapled")
    }

    func testAPersistedStapleIsServedAtOnceAndRefreshedOnItsOwnSchedule() {
        let persisted = response(thisUpdate: -600, validFor: 2400)
        let schedule = StapleSchedule(timing: timing, now: start, persisted: persisted)
        XCTAssertEqual(schedule.servable(at: start)?.der, persisted.der)
        XCTAssertEqual(schedule.nextRefresh, start + 600, "half of its window from its thisUpdate")
    }
}
