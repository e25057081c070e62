import Foundation
@testable import StapleGateFleet
@testable import StapleGateTrace
import TestSupport
import XCTest

/// What the gateway and `staplegate trace` rely on from any `TraceStore` and its reader,
/// checked through the protocols against both implementations: the SQLite file and PostgreSQL.
final class TraceStoreContractTests: FleetTraceTestCase {
    func testEventsRoundTripAndAreQueriedBySinceAndLimit() async throws {
        try await forEachTraceStore { store, kind, _ in
            let first = event(.ocspCheck, at: 0, connection: UInt64.max, failure: true, summary: "certificate revoked",
                              details: ["ocsp.status": "revoked", "ocsp.responder": "http://ocsp.example/\"quoted\"", "ü": "☃"])
            store.record(first)
            for second in 1..<10 {
                store.record(event(at: Double(second), connection: UInt64(second)))
                store.record(event(device: "device-2", at: Double(second) + 0.5))
            }
            store.flush()
            XCTAssertEqual(store.droppedEvents, 0, kind)
            XCTAssertEqual(writtenMetric(), 19, kind)
            let reader = try store.reader()

            let all = try await reader.events(device: "device-1")
            assertSame(Array(all.prefix(1)), [first], kind)
            XCTAssertEqual(all.map(\.connectionID), [UInt64.max] + Array(1..<10), kind)
            XCTAssertEqual(all.map(\.instance), Array(repeating: kind == "postgres" ? "gw-a" : nil, count: 10), kind)
            let since = try await reader.events(device: "device-1", since: now.addingTimeInterval(6))
            XCTAssertEqual(since.map(\.connectionID), [6, 7, 8, 9], kind)
            // The limit keeps the newest, still listed oldest first.
            let newest = try await reader.events(device: "device-1", since: nil, limit: 3)
            XCTAssertEqual(newest.map(\.connectionID), [7, 8, 9], kind)
            let nobody = try await reader.events(device: "nobody")
            XCTAssertEqual(nobody, [], kind)
            metrics = .init()
        }
    }

    func testFailuresAndDevicesAreListedAcrossDevices() async throws {
        try await forEachTraceStore { store, kind, _ in
            store.record(event(.tlsFailed, device: nil, at: 1, failure: true, summary: "no certificate"))
            store.record(event(.connect, device: "device-1", at: 2))
            store.record(event(.admission, device: "device-2", at: 3, failure: true, summary: "client id mismatch"))
            store.record(event(.ocspCheck, device: "device-1", at: 4, failure: true, summary: "revoked"))
            store.flush()
            let reader = try store.reader()

            let failures = try await reader.failures()
            XCTAssertEqual(failures.map(\.summary), ["no certificate", "client id mismatch", "revoked"], kind)
            let recent = try await reader.failures(since: now.addingTimeInterval(2), limit: 1)
            XCTAssertEqual(recent.map(\.summary), ["revoked"], kind)
            let devices = try await reader.devices(since: nil)
            XCTAssertEqual(devices.map(\.device), ["device-1", "device-2"], kind)
            XCTAssertEqual(devices.map(\.events), [2, 1], kind)
            XCTAssertEqual(devices.map(\.failures), [1, 1], kind)
            let lately = try await reader.devices(since: now.addingTimeInterval(3.5))
            XCTAssertEqual(lately.map(\.device), ["device-1"], kind)
        }
    }

    /// `--follow`: each event stored after the follower was placed comes once, other devices'
    /// never, and what the first listing showed not again.
    func testAFollowerReturnsEachNewEventOnce() async throws {
        try await forEachTraceStore { store, kind, _ in
            store.record(event(at: 0, summary: "before"))
            store.flush()
            let reader = try store.reader()
            let follower = try await reader.follower(device: "device-1")
            let shown = try await reader.events(device: "device-1")
            follower.markShown(shown)
            let nothingYet = try await follower.next()
            XCTAssertEqual(nothingYet, [], kind)

            store.record(event(at: 1, summary: "second"))
            store.record(event(device: "device-2", at: 1, summary: "other device"))
            store.record(event(at: 2, summary: "third"))
            store.flush()
            let next = try await follower.next()
            XCTAssertEqual(next.map(\.summary), ["second", "third"], kind)
            let again = try await follower.next()
            XCTAssertEqual(again, [], "\(kind): nothing twice")
            store.record(event(at: 3, summary: "fourth"))
            store.flush()
            let last = try await follower.next()
            XCTAssertEqual(last.map(\.summary), ["fourth"], kind)
        }
    }

    func testMessageTraceSwitchesExpireAndSurviveAReopen() async throws {
        try await forEachTraceStore { store, kind, reopen in
            let hour = now.addingTimeInterval(3600)
            store.enableMessageTrace(device: "device-1", until: hour)
            store.enableMessageTrace(device: "device-2", until: hour)
            store.enableMessageTrace(device: "device-3", until: now.addingTimeInterval(-1))
            store.disableMessageTrace(device: "device-2")

            XCTAssertEqual(store.messageTraceUntil(device: "device-1", now: now), hour, kind)
            XCTAssertNil(store.messageTraceUntil(device: "device-1", now: hour), "\(kind): over at `until`")
            XCTAssertNil(store.messageTraceUntil(device: "device-2", now: now), "\(kind): disabled")
            XCTAssertNil(store.messageTraceUntil(device: "device-3", now: now), "\(kind): already over")
            XCTAssertNil(store.messageTraceUntil(device: "unknown", now: now), kind)
            XCTAssertEqual(store.messageTraces(now: now), ["device-1": hour], kind)
            store.flush()

            let reopened = try reopen()
            try await waitUntil(timeout: .seconds(10), "\(kind): the switches read back") {
                reopened.messageTraces(now: now) == ["device-1": hour]
            }
            XCTAssertNil(reopened.messageTraceUntil(device: "device-2", now: now), kind)
        }
    }

    func testPruningByAgeDeletesOldEventsAndKeepsNewOnes() async throws {
        let day = 24.0 * 3600
        try await forEachTraceStore(retention: .seconds(24 * 3600)) { store, kind, _ in
            for second in [-3 * day, -2 * day, -day - 1] { store.record(event(at: second, summary: "old")) }
            for second in [-day + 60, -3600, 0] { store.record(event(at: second, summary: "new")) }
            store.flush()
            XCTAssertTrue(try store.prune(now: now), kind)
            let left = try await store.reader().events(device: "device-1")
            XCTAssertEqual(left.map(\.summary), ["new", "new", "new"], kind)
        }
    }

    /// Random text, so that PostgreSQL's compression cannot shrink it below the cap.
    func testPruningBySizeDeletesTheOldestUntilUnderTheCap() async throws {
        let summary = { (0..<56).map { _ in UUID().uuidString }.joined() }  // ~2 kB
        let limit: Int64 = 512 * 1024
        try await forEachTraceStore(maximumBytes: limit) { store, kind, _ in
            for index in 0..<1000 { store.record(event(at: Double(index), connection: UInt64(index), summary: summary())) }
            store.flush()
            XCTAssertEqual(store.droppedEvents, 0, kind)
            XCTAssertTrue(try store.prune(now: now), kind)

            let left = try await store.reader().events(device: "device-1", since: nil, limit: 10_000)
            XCTAssertGreaterThan(left.count, 50, kind)
            XCTAssertLessThan(left.count, 300, "\(kind): 2 MB of events under a 512 kB cap")
            // The newest are kept, without gaps.
            XCTAssertEqual(left.map(\.connectionID), Array((1000 - UInt64(left.count))..<1000), kind)
        }
    }
}
