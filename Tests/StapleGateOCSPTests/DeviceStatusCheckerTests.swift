import Foundation
import Logging
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOPosix
@testable import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// The device checker's decisions: verdicts per CA policy, the cache in front of the responder,
/// one request per certificate however many devices ask at once, and resumption only for a
/// fresh "good". Answers are real `openssl ocsp` responses served by a fake HTTP responder.
final class DeviceStatusCheckerTests: OCSPFixtureTestCase {
    private var responders: [FakeHTTPResponder] = []

    override func tearDown() async throws {
        for responder in responders { await responder.stop() }
        responders = []
    }

    /// device-1's chain as the TLS engine hands it over: leaf, issuing CA, root.
    private func chain(_ device: String = "device-1") throws -> [X509Certificate] {
        [try fixture.certificate(device), try fixture.certificate("issuing-ca"), try fixture.certificate("root-ca")]
    }

    private func responder(answering body: [UInt8]) throws -> FakeHTTPResponder {
        let responder = try FakeHTTPResponder(.reply(FakeHTTPResponder.response(body: body), close: true))
        responders.append(responder)
        return responder
    }

    private func checker(_ responder: FakeHTTPResponder?, metrics: TestMetrics = TestMetrics(),
                         _ adjust: (inout DeviceOCSPConfiguration) -> Void = { _ in }) throws -> DeviceStatusChecker {
        var configuration = DeviceOCSPConfiguration()
        configuration.defaultPolicy.responderOverride = responder.map { "http://127.0.0.1:\($0.port)/" }
        configuration.defaultPolicy.fetch.timeout = .seconds(1)
        adjust(&configuration)
        return DeviceStatusChecker(configuration: configuration, deviceCAs: [try fixture.certificate("issuing-ca")],
                                   client: OCSPHTTPClient(group: MultiThreadedEventLoopGroup.singleton),
                                   cache: OCSPStatusCache(capacity: 100), logger: Logger(label: "test"),
                                   metricsFactory: metrics)
    }

    func testAGoodAnswerAdmitsAndIsServedFromTheCacheAfterwards() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let checker = try checker(responder)

        XCTAssertNil(checker.immediateVerdict(for: try chain()), "nothing cached yet: the responder must be asked")
        let first = await checker.verdict(for: try chain())
        guard case let .accept(note) = first else { return XCTFail("\(first)") }
        XCTAssertTrue(note.hasPrefix("OCSP good (from http://127.0.0.1:\(responder.port)/"), note)

        guard case let .accept(cachedNote)? = checker.immediateVerdict(for: try chain()) else { return XCTFail("not cached") }
        XCTAssertTrue(cachedNote.hasPrefix("OCSP good (cached until "), cachedNote)
        XCTAssertEqual(responder.requests.count, 1)
    }

    func testLookupsCacheUseAndLatencyAreCounted() async throws {
        let metrics = TestMetrics()
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let checker = try checker(responder, metrics: metrics)

        XCTAssertNil(checker.immediateVerdict(for: try chain()))
        _ = await checker.verdict(for: try chain())
        _ = checker.immediateVerdict(for: try chain())

        XCTAssertEqual(try metrics.expectCounter("staplegate_device_ocsp_cache_misses_total").totalValue, 1)
        XCTAssertEqual(try metrics.expectCounter("staplegate_device_ocsp_cache_hits_total").totalValue, 1)
        XCTAssertEqual(metrics.counterTotal(label: "staplegate_device_ocsp_lookups_total", dimensions: [("result", "good")]), 2)
        XCTAssertEqual(try metrics.expectTimer("staplegate_device_ocsp_responder_latency_seconds").values.count, 1)
        XCTAssertEqual(try metrics.expectGauge("staplegate_device_ocsp_cache_entries").lastValue, 1)
        XCTAssertEqual(try metrics.expectGauge("staplegate_device_ocsp_requests_in_flight").lastValue, 0)
    }

    func testConcurrentChecksOfOneCertificateShareOneRequest() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let checker = try checker(responder)
        let chain = try chain()

        let verdicts = await withTaskGroup(of: DeviceCertificateVerdict.self) { group in
            for _ in 0..<50 { group.addTask { await checker.verdict(for: chain) } }
            return await group.reduce(into: []) { $0.append($1) }
        }

        XCTAssertEqual(verdicts.count, 50)
        XCTAssertTrue(verdicts.allSatisfy { if case .accept = $0 { true } else { false } })
        XCTAssertEqual(responder.requests.count, 1)
    }

    func testRevokedIsRefusedWithTimeAndReason() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-revoked")))
        let verdict = try await checker(responder).verdict(for: try chain("device-revoked"))
        guard case let .reject(.revoked, reason) = verdict else { return XCTFail("\(verdict)") }
        XCTAssertTrue(reason.hasPrefix("device certificate revoked at "), reason)
        XCTAssertTrue(reason.contains("reason keyCompromise"), reason)
    }

    func testUnknownFollowsThePolicy() async throws {
        // The responder's database without device-1: it answers "unknown".
        let request = try fixture.request("device-1")
        let index = try String(contentsOfFile: fixture.pki.path("index.txt"), encoding: .utf8)
        let rows = index.split(separator: "\n").filter { !$0.uppercased().contains("\t\(request.certID.serialHex)\t") }
        let unknown = try fixture.respond(to: request, index: rows.joined(separator: "\n") + "\n")

        let refused = try await checker(responder(answering: unknown)).verdict(for: try chain())
        guard case let .reject(.statusUnknown, reason) = refused else { return XCTFail("\(refused)") }
        XCTAssertTrue(reason.contains("does not know the device certificate"), reason)

        let allowed = try await checker(responder(answering: unknown)) { $0.defaultPolicy.unknown = .allow }.verdict(for: try chain())
        guard case let .accept(note) = allowed else { return XCTFail("\(allowed)") }
        XCTAssertTrue(note.contains("status unknown, allowed by policy"), note)
    }

    func testAFailureFollowsThePolicyAndIsRememberedBriefly() async throws {
        let garbage = try responder(answering: Array("not DER".utf8))
        let hardFail = try checker(garbage)

        let refused = await hardFail.verdict(for: try chain())
        guard case let .reject(.statusUnavailable, reason) = refused else { return XCTFail("\(refused)") }
        XCTAssertTrue(reason.contains("OCSP check of the device certificate failed: not an OCSP response"), reason)
        // Remembered for failure_cache_lifetime: the next device is answered without a request.
        guard case .reject(.statusUnavailable, _)? = hardFail.immediateVerdict(for: try chain()) else { return XCTFail("not cached") }
        XCTAssertEqual(garbage.requests.count, 1)

        let softFail = try checker(garbage) {
            $0.defaultPolicy.unreachable = .allow
            $0.failureCacheLifetime = .zero
        }
        guard case let .accept(note) = await softFail.verdict(for: try chain()) else { return XCTFail("soft-fail refused") }
        XCTAssertTrue(note.contains("allowed by policy (soft-fail)"), note)
        XCTAssertNil(softFail.immediateVerdict(for: try chain()), "with no failure lifetime nothing is remembered")
    }

    func testACertificateWithoutResponderFollowsThePolicy() async throws {
        let refused = try await checker(nil).verdict(for: try chain("device-noaia"))
        guard case .reject(.noResponder, _) = refused else { return XCTFail("\(refused)") }
        let allowed = try await checker(nil) { $0.defaultPolicy.noResponder = .allow }.verdict(for: try chain("device-noaia"))
        guard case .accept = allowed else { return XCTFail("\(allowed)") }
    }

    func testChecksSwitchedOffAdmitWithoutAsking() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-revoked")))
        let checker = try checker(responder) { $0.defaultPolicy.enabled = false }
        XCTAssertEqual(checker.immediateVerdict(for: try chain("device-revoked")), .accept(note: "OCSP check off for this CA"))
        XCTAssertEqual(responder.requests.count, 0)
    }

    func testAPerCAOverrideAppliesToThatCAsDevices() async throws {
        let issuing = try fixture.certificate("issuing-ca")
        let checker = try checker(nil) {
            var off = $0.defaultPolicy
            off.enabled = false
            $0.overrides = [.init(caFingerprint: issuing.sha256Fingerprint, caSubject: issuing.subject, policy: off)]
        }
        XCTAssertEqual(checker.immediateVerdict(for: try chain("device-noaia")), .accept(note: "OCSP check off for this CA"))
    }

    func testChainScopeNotesAnIntermediateWithoutResponder() async throws {
        // The demo issuing CA has no AIA OCSP URL: skipped and noted, never a failure. (device-1's
        // own AIA responder is not running here; soft-fail lets the verdict show both notes.)
        let verdict = try await checker(nil) {
            $0.defaultPolicy.scope = .chain
            $0.defaultPolicy.unreachable = .allow
        }.verdict(for: try chain())
        guard case let .accept(note) = verdict else { return XCTFail("\(verdict)") }
        XCTAssertTrue(note.contains("intermediate CN=StapleGate Demo Issuing CA names no OCSP responder: not checked"), note)
        XCTAssertTrue(note.contains("device certificate: no OCSP answer"), note)
    }

    func testOnlyAFreshGoodStatusAllowsResumption() async throws {
        let good = try checker(responder(answering: fixture.respond(to: fixture.request("device-1"))))
        let device = try fixture.certificate("device-1")
        XCTAssertFalse(good.allowsResumption(of: device), "nothing cached: full handshake")
        _ = await good.verdict(for: try chain())
        XCTAssertTrue(good.allowsResumption(of: device))

        let revoked = try checker(responder(answering: fixture.respond(to: fixture.request("device-revoked"))))
        _ = await revoked.verdict(for: try chain("device-revoked"))
        XCTAssertFalse(revoked.allowsResumption(of: try fixture.certificate("device-revoked")))
    }

    func testARecheckAsksAgainWhateverIsCached() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let checker = try checker(responder)
        _ = await checker.verdict(for: try chain())
        let recheck = await checker.recheck(try fixture.certificate("device-1"))
        let rechecked = try XCTUnwrap(recheck)
        guard case .accept = rechecked.verdict else { return XCTFail("\(rechecked.verdict)") }
        XCTAssertEqual(rechecked.status?.outcome, .good)
        XCTAssertEqual(responder.requests.count, 2)
    }

    func testAnswersRecordTheDeviceIdentityForTheLeafOnly() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let checker = try checker(responder) { $0.defaultPolicy.scope = .leaf }
        _ = await checker.verdict(for: try chain())
        let entry = try XCTUnwrap(checker.cache.entries().first)
        XCTAssertEqual(entry.identity, "device-1", "the CN, the default identity")
        XCTAssertEqual(entry.subject, try fixture.certificate("device-1").subject)
    }

    /// A device that is not connected is known by its cache entry alone: the recheck rebuilds
    /// the request from the CertID and the issuer found among the known CAs, and caches the
    /// new answer (here: revoked, where good was cached).
    func testARecheckOfACacheEntryAsksAboutItsCertIDAndCachesTheAnswer() async throws {
        let good = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let checker = try checker(good)
        _ = await checker.verdict(for: try chain())
        let entry = try XCTUnwrap(checker.cache.entries().first)

        let recheck = await checker.recheck(entry: entry)
        let rechecked = try XCTUnwrap(recheck)
        guard case .accept = rechecked.verdict else { return XCTFail("\(rechecked.verdict)") }
        XCTAssertEqual(good.requests.count, 2, "asked again although the cached answer was fresh")
        XCTAssertEqual(rechecked.status?.certID, entry.certID)
        XCTAssertEqual(rechecked.status?.identity, "device-1", "the entry's identity is kept")
        XCTAssertGreaterThan(try XCTUnwrap(rechecked.status?.checkedAt), entry.checkedAt)
    }

    func testARecheckOfAnEntryWhoseIssuerIsUnknownAsksNothing() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let checker = try checker(responder)
        _ = await checker.verdict(for: try chain())
        var entry = try XCTUnwrap(checker.cache.entries().first)
        entry.certID = CertID(issuerNameHash: [UInt8](repeating: 7, count: 20), issuerKeyHash: [UInt8](repeating: 8, count: 20),
                              serialNumber: entry.certID.serialNumber)
        let recheck = await checker.recheck(entry: entry)
        XCTAssertNil(recheck)
        XCTAssertEqual(responder.requests.count, 1)
    }

    func testARecheckOfAnEntryUnderAPolicyWithChecksOffAsksNothing() async throws {
        let responder = try responder(answering: fixture.respond(to: fixture.request("device-1")))
        let entry = try await {
            let checker = try checker(responder)
            _ = await checker.verdict(for: try chain())
            return try XCTUnwrap(checker.cache.entries().first)
        }()
        let off = try checker(responder) { $0.defaultPolicy.enabled = false }
        let recheck = await off.recheck(entry: entry)
        let rechecked = try XCTUnwrap(recheck)
        guard case .checksOff = rechecked.asked else { return XCTFail("\(rechecked.asked)") }
        XCTAssertEqual(responder.requests.count, 1)
    }
}

final class OCSPRequestLimiterTests: XCTestCase {
    func testNoMoreThanTheMaximumRunAtOnceAndAllFinish() async {
        let limiter = OCSPRequestLimiter(maximum: 3)
        let running = NIOLockedValueBox((now: 0, peak: 0))
        let finished = await withTaskGroup(of: Int.self) { group in
            for index in 0..<20 {
                group.addTask {
                    await limiter.run {
                        running.withLockedValue { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                        try? await Task.sleep(for: .milliseconds(5))
                        running.withLockedValue { $0.now -= 1 }
                        return index
                    }
                }
            }
            return await group.reduce(into: [Int]()) { $0.append($1) }
        }
        XCTAssertEqual(finished.sorted(), Array(0..<20))
        XCTAssertEqual(running.withLockedValue { $0.peak }, 3)
        XCTAssertEqual(limiter.inFlight, 0)
        XCTAssertEqual(limiter.queued, 0)
    }
}
