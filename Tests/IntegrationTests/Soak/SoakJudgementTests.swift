import NIOCore
import XCTest

/// The soak's verdicts without a gateway: each criterion passes what it should and catches what
/// it is there to catch (the negative case for each).
final class SoakJudgementTests: XCTestCase {
    func testAFlatSeriesPassesAndAGrowingOneFails() {
        let flat = (0..<100).map { (Double($0), 100 + Double($0 % 3)) }
        XCTAssertTrue(SoakFlatness.judge(flat, after: 20).isFlat)
        // Growing 0.5 % a sample after warm-up: 40 % over the run.
        let leaking = (0..<100).map { (Double($0), 100 * (1 + 0.005 * Double($0))) }
        let judged = SoakFlatness.judge(leaking, after: 20)
        XCTAssertFalse(judged.isFlat)
        XCTAssertEqual(judged.windowMeans.count, 5)
        XCTAssertGreaterThan(judged.spread, 0.10)
        // The warm-up's climb is not judged.
        let warming = (0..<100).map { (Double($0), $0 < 20 ? Double($0) * 5 : 100) }
        XCTAssertTrue(SoakFlatness.judge(warming, after: 20).isFlat)
        XCTAssertFalse(SoakFlatness.judge([], after: 0).isFlat, "no samples prove nothing")
    }

    func testARevokedDeviceAdmittedAfterTheRecheckIsCaughtButNotOneBefore() {
        var ledger = SoakLedger()
        ledger.revocationVisible["soak-9"] = 50
        ledger.admissions = [
            .init(device: "soak-9", connectStarted: 40, admitted: 41, closed: 50.5),  // closed by the recheck
            .init(device: "soak-9", connectStarted: 51, admitted: 52, closed: 60),  // must not happen
            .init(device: "soak-1", connectStarted: 51, admitted: 52, closed: nil),  // a good device
        ]
        XCTAssertEqual(ledger.revokedAdmitted.map(\.connectStarted), [51])
        XCTAssertEqual(ledger.revokedSessionsKept(now: 100).map(\.connectStarted), [],
                       "the session begun before the recheck was closed within the grace")
        ledger.admissions[0].closed = 80
        XCTAssertEqual(ledger.revokedSessionsKept(now: 100).map(\.connectStarted), [40], "kept 30 s past the recheck")
    }

    func testAGoodDeviceRefusedOnlyCountsAgainstTheRunWhileTheResponderIsUp() {
        var ledger = SoakLedger()
        ledger.responderDown = [100...103]
        ledger.revokedAtCA["soak-9"] = 200
        ledger.failures = [
            .init(device: "soak-1", at: 101, reason: "refused: responder down"),
            .init(device: "soak-1", at: 140, reason: "refused: failure cached"),  // within the failure cache + margin
            .init(device: "soak-1", at: 300, reason: "closed: connection closed by the gateway"),
            .init(device: "soak-9", at: 201, reason: "refused: alert certificate revoked"),
            .init(device: "soak-2", at: 102, reason: "stuck: no PUBACK in 30 s"),
        ]
        XCTAssertEqual(ledger.unexplainedFailures.map(\.at), [300, 102], "the cut with the responder up, and anything stuck")
    }

    func testLossAndDuplicatesAreJudgedAgainstWhatWasAcknowledgedAndResent() {
        var ledger = SoakLedger()
        ledger.published = ["soak-1": [1, 2, 3, 4], "soak-2": [1]]
        ledger.acknowledged = ["soak-1": [1, 2, 3], "soak-2": [1]]
        ledger.resent = ["soak-1": [3]]
        let received = SoakLedger.parseReceived("""
            soak/soak-1 1
            soak/soak-1 3
            soak/soak-1 3
            soak/soak-1 4
            soak/soak-1 4
            soak/soak-2 7
            not a soak line

            """)
        XCTAssertEqual(ledger.lost(received: received), ["soak-1": [2], "soak-2": [1]])
        XCTAssertEqual(ledger.unexplainedDuplicates(received: received), ["soak-1": [4]], "3 was sent again; 4 was not")
        XCTAssertEqual(ledger.unknownMessages(received: received), 1, "soak-2 never sent 7")
    }

    func testThePlanSpreadsItsEventsAndRefusesBadSettingsByName() throws {
        let plan = try SoakPlan.fromEnvironment([:], repository: "/repo")
        XCTAssertEqual(plan.minutes, 2)
        XCTAssertEqual(plan.devices, 2000)
        XCTAssertEqual(plan.reportDirectory, "/repo/.build/soak")
        XCTAssertEqual(plan.revokedNames.count, 20)
        XCTAssertEqual(plan.reloads, [30, 60, 90])
        XCTAssertEqual(plan.sessionCacheSize, 2000)
        XCTAssertTrue(plan.revocations.allSatisfy { at in
            plan.responderRestarts.allSatisfy { !((($0 - 2)...($0 + plan.responderDownSeconds + 2)) ~= at) }
        }, "no revocation while the responder is down: \(plan.revocations)")
        let hour = try SoakPlan.fromEnvironment(["SOAK_MINUTES": "60", "SOAK_REPORT_DIR": "/tmp/x"], repository: "/repo")
        XCTAssertEqual(hour.reloads.count, 11, "every 5 minutes")
        XCTAssertNil(hour.sessionCacheSize, "an hour runs the default")
        XCTAssertEqual(hour.reportDirectory, "/tmp/x")
        XCTAssertThrowsError(try SoakPlan.fromEnvironment(["SOAK_MINUTES": "an hour"], repository: "/")) { error in
            XCTAssertTrue("\(error)".hasPrefix("SOAK_MINUTES=an hour: must be a number"), "\(error)")
        }
        XCTAssertThrowsError(try SoakPlan.fromEnvironment(["SOAK_DEVICES": "12.5"], repository: "/")) { error in
            XCTAssertTrue("\(error)".contains("SOAK_DEVICES"), "\(error)")
        }
    }

    func testTheDevicesPacketsAreWhatMQTTSays() {
        XCTAssertEqual(SequencedPublisher.remainingLength(127), [0x7F])
        XCTAssertEqual(SequencedPublisher.remainingLength(128), [0x80, 0x01])
        XCTAssertEqual(SoakMQTT.publish(topic: "a", packetID: 258, payload: "7"), [0x32, 0x06, 0x00, 0x01, 0x61, 0x01, 0x02, 0x37])
        var buffer = ByteBuffer(bytes: [0x20, 0x02, 0x00, 0x00, 0x40, 0x02, 0x01, 0x02, 0x40, 0x02])
        XCTAssertEqual(SoakMQTT.nextPacket(&buffer), .connack(returnCode: 0))
        XCTAssertEqual(SoakMQTT.nextPacket(&buffer), .puback(packetID: 258))
        XCTAssertNil(SoakMQTT.nextPacket(&buffer), "half a PUBACK waits for the rest")
        buffer.writeBytes([0x00, 0x05])
        XCTAssertEqual(SoakMQTT.nextPacket(&buffer), .puback(packetID: 5))
    }
}
