import Foundation
import MetricsTestKit
import StapleGateOCSP
@testable import StapleGateServer
import XCTest

/// What `staplegate ocsp recheck` prints and how it exits, from the report alone: each line
/// claims exactly what its fields record, and nothing when nothing was done.
final class RecheckReportTests: XCTestCase {
    private let until = Date(timeIntervalSince1970: 1_800_000_000)  // 2027-01-15T08:00:00Z

    private func recheck(_ answer: CertificateRecheck.Answer, refused: Bool = false, closed: Int = 0,
                         kept: Int = 0) -> CertificateRecheck {
        CertificateRecheck(serial: "5B1F03A2", device: "dev-1", subject: "CN=dev-1", responder: "http://ocsp.example",
                           answer: answer, refused: refused, verdict: "v", sessionsClosed: closed, sessionsKept: kept,
                           cachedAnswerDropped: false)
    }

    func testARevokedAnswerSaysWhenWhyAndWhatWasClosed() {
        var revoked = recheck(.revoked, refused: true, closed: 0)
        revoked.revokedAt = Date(timeIntervalSince1970: 1_799_999_000)
        revoked.revocationReason = "keyCompromise"
        revoked.cachedUntil = until
        XCTAssertEqual(revoked.summary,
                       "revoked at 2027-01-15T07:43:20Z, keyCompromise: cached until 2027-01-15T08:00:00Z; 0 sessions closed")
        revoked.sessionsClosed = 2
        revoked.sessionAddresses = ["203.0.113.7:51234", "[2001:db8::1]:40000"]
        XCTAssertTrue(revoked.summary.hasSuffix("; 2 sessions closed (from 203.0.113.7:51234, [2001:db8::1]:40000)"), revoked.summary)
        let report = RecheckReport(target: "device dev-1", certificates: [revoked])
        XCTAssertEqual(report.outcome, .refused)
        XCTAssertEqual(report.lines, ["5B1F03A2  dev-1  \(revoked.summary)"])
    }

    /// In a fleet, each other gateway's closures are listed under the certificate they
    /// belong to, and only there.
    func testSessionsClosedByOtherGatewaysAreListedPerGateway() {
        let revoked = recheck(.revoked, refused: true, closed: 1)
        let report = RecheckReport(target: "device dev-1", certificates: [revoked], elsewhere: [
            FleetSessionsClosed(instance: "gw-b", serial: "5B1F03A2", closed: 1, addresses: ["203.0.113.7:51234"]),
            FleetSessionsClosed(instance: "gw-c", serial: "5B1F03A2", closed: 0, addresses: []),
            FleetSessionsClosed(instance: "gw-c", serial: "0000AA", closed: 3, addresses: []),
        ])
        XCTAssertEqual(report.lines, [
            "5B1F03A2  dev-1  \(revoked.summary)",
            "    on gw-b: 1 session closed (from 203.0.113.7:51234)",
            "    on gw-c: 0 sessions closed",
        ])
    }

    func testAGoodAnswerKeepsSessions() {
        var good = recheck(.good, kept: 1)
        good.cachedUntil = until
        XCTAssertEqual(good.summary, "good: cached until 2027-01-15T08:00:00Z; 1 session kept")
        XCTAssertEqual(RecheckReport(target: "device dev-1", certificates: [good]).outcome, .accepted)
    }

    func testNoAnswerSaysTheOldAnswerWasDroppedAndWhatNewConnectionsGet() {
        var down = recheck(.unavailable, refused: true, kept: 1)
        down.failure = "cannot connect to the responder: connection refused"
        down.cachedAnswerDropped = true
        XCTAssertEqual(down.summary, "no answer from http://ocsp.example (cannot connect to the responder: connection refused): "
            + "the cached answer was dropped; new connections are refused until the responder answers (unreachable: reject); "
            + "1 session kept")
        XCTAssertEqual(RecheckReport(target: "device dev-1", certificates: [down]).outcome, .incomplete,
                       "a refusal by hard-fail is not a refusal of the certificate")
        down.refused = false
        XCTAssertTrue(down.summary.contains("new connections are admitted without an answer (unreachable: allow)"), down.summary)
    }

    func testAnUnknownCAIsSaidAndNothingElseClaimed() {
        var unknownCA = recheck(.issuerUnknown)
        unknownCA.responder = nil
        unknownCA.cachedAnswerDropped = true
        XCTAssertTrue(unknownCA.summary.hasPrefix("its issuing CA is not known to this gateway"), unknownCA.summary)
        XCTAssertTrue(unknownCA.summary.hasSuffix(": the cached answer was dropped, so its next connect asks the responder; 0 sessions closed"),
                      unknownCA.summary)
        XCTAssertEqual(RecheckReport(target: "serial 5B1F03A2", certificates: [unknownCA]).outcome, .incomplete)
    }

    func testTheWorstCertificateDecidesTheOutcome() {
        let report = RecheckReport(target: "device dev-1", certificates: [
            recheck(.good), recheck(.unavailable), recheck(.revoked, refused: true),
        ])
        XCTAssertEqual(report.outcome, .refused)
        XCTAssertEqual(RecheckReport(target: "device dev-1", certificates: [recheck(.good), recheck(.notChecked)]).outcome,
                       .accepted)
    }

    func testNothingKnownClaimsNoAction() {
        let report = RecheckReport(target: "device dev-9", certificates: [])
        XCTAssertEqual(report.outcome, .nothingKnown)
        XCTAssertEqual(report.lines, [
            "the gateway knows nothing about device dev-9: no cached OCSP status and no connected session; nothing was done",
        ])
    }

    func testRechecksAreCountedByTriggerAndAnswerFromZero() throws {
        let metrics = TestMetrics()
        let recorder = RecheckRecorder(traceStore: nil, factory: metrics)
        for trigger in ["operator", "expiry"] {
            for answer in CertificateRecheck.Answer.allCases {
                let counter = try metrics.expectCounter("staplegate_ocsp_rechecks_total",
                                                        [("trigger", trigger), ("answer", answer.rawValue)])
                XCTAssertEqual(counter.totalValue, 0)
            }
        }
        recorder.record(recheck(.revoked, refused: true, closed: 2), trigger: .operator)
        recorder.record(recheck(.good, kept: 1), trigger: .expiry)
        XCTAssertEqual(try metrics.expectCounter("staplegate_ocsp_rechecks_total",
                                                 [("trigger", "operator"), ("answer", "revoked")]).totalValue, 1)
        XCTAssertEqual(try metrics.expectCounter("staplegate_ocsp_rechecks_total",
                                                 [("trigger", "expiry"), ("answer", "good")]).totalValue, 1)
        XCTAssertEqual(try metrics.expectCounter("staplegate_ocsp_recheck_sessions_closed_total",
                                                 [("trigger", "operator")]).totalValue, 2)
        XCTAssertEqual(try metrics.expectCounter("staplegate_ocsp_recheck_sessions_closed_total",
                                                 [("trigger", "expiry")]).totalValue, 0)
    }
}
