import Foundation
import GRDB
@testable import StapleGateTrace
import TestSupport
import XCTest

/// Events written through `SQLiteTraceStore` and read back through `SQLiteTraceReader`, as the gateway and
/// `staplegate trace` do (two connections on one WAL file).
final class TraceStoreTests: TraceStoreTestCase {
    func testEventsRoundTripWithTheirDetails() throws {
        let store = try makeStore()
        let events = [
            event(.accepted, device: nil, at: 0, connection: UInt64.max, summary: "TCP connection from 10.0.0.7:51234"),
            event(.tlsHandshake, at: 0.25, connection: UInt64.max, details: ["tls.version": "TLSv1.3", "tls.resumed": "no"]),
            event(.ocspCheck, at: 0.5, connection: UInt64.max, failure: true, summary: "certificate revoked",
                  details: ["ocsp.status": "revoked", "ocsp.responder": "http://ocsp.example/\"quoted\"", "ü": "☃"]),
        ]
        events.forEach(store.record)
        store.flush()

        let stored = try reader().events(device: "device-1")
        assertSame(stored, Array(events.dropFirst()))
        XCTAssertEqual(writtenMetric(), 3)
        XCTAssertEqual(store.droppedEvents, 0)
        // Ids grow in the order events were recorded.
        XCTAssertEqual(stored.compactMap(\.id), stored.compactMap(\.id).sorted())
    }

    /// The store writes times through SQLite (its DateFormatter-free path), and they must be the
    /// very text GRDB writes for a Date: older rows, retention's cutoffs and the readers' bounds
    /// are GRDB's, and SQLite compares them as text.
    func testTimesAreStoredAsTheTextGRDBWritesForADate() throws {
        let store = try makeStore()
        let time = Date(timeIntervalSince1970: 1_796_540_508.125)
        var probe = event(summary: "probe")
        probe.time = time
        store.record(probe)
        store.flush()
        let stored = try DatabaseQueue(path: storePath).read { db in
            try String.fetchOne(db, sql: "SELECT time FROM trace_event WHERE summary = 'probe'")
        }
        XCTAssertEqual(stored, String.fromDatabaseValue(time.databaseValue))
        XCTAssertEqual(stored, "2026-12-06 07:01:48.125")
        XCTAssertEqual(try reader().events(device: "device-1").first?.time, time)
    }

    /// The writer lets events gather before writing them; a reader in the same process (the
    /// admin listener) awaits `written()` first and so sees an event recorded a moment ago.
    func testWrittenMakesWhatWasJustRecordedReadable() async throws {
        let store = try makeStore()
        store.record(event(summary: "just now"))
        await store.written()
        let events = try await reader().events(device: "device-1")
        XCTAssertEqual(events.map(\.summary), ["just now"])
        XCTAssertEqual(store.queuedEvents, 0)
    }

    func testPerDeviceQueriesHonourSinceAndKeepTheNewestWithinTheLimit() throws {
        let store = try makeStore()
        for second in 0..<10 {
            store.record(event(at: Double(second), connection: UInt64(second)))
            store.record(event(device: "device-2", at: Double(second) + 0.5))
        }
        store.flush()
        let reader = try reader()

        XCTAssertEqual(try reader.events(device: "device-1").map(\.connectionID), Array(0..<10))
        XCTAssertEqual(try reader.events(device: "device-1", since: now.addingTimeInterval(6)).map(\.connectionID),
                       [6, 7, 8, 9])
        // The limit keeps the newest, still listed oldest first.
        XCTAssertEqual(try reader.events(device: "device-1", limit: 3).map(\.connectionID), [7, 8, 9])
        XCTAssertEqual(try reader.events(device: "device-1", since: now.addingTimeInterval(2), limit: 2)
            .map(\.connectionID), [8, 9])
        XCTAssertEqual(try reader.events(device: "nobody"), [])
    }

    func testFailuresAreListedAcrossDevicesNewestLast() throws {
        let store = try makeStore()
        store.record(event(.tlsFailed, device: nil, at: 1, failure: true, summary: "no certificate"))
        store.record(event(.connect, device: "device-1", at: 2))
        store.record(event(.admission, device: "device-2", at: 3, failure: true, summary: "client id mismatch"))
        store.record(event(.ocspCheck, device: "device-1", at: 4, failure: true, summary: "revoked"))
        store.flush()
        let reader = try reader()

        XCTAssertEqual(try reader.failures().map(\.summary), ["no certificate", "client id mismatch", "revoked"])
        XCTAssertEqual(try reader.failures(since: now.addingTimeInterval(2)).map(\.summary), ["client id mismatch", "revoked"])
        XCTAssertEqual(try reader.failures(limit: 1).map(\.summary), ["revoked"])

        let devices = try reader.devices()
        XCTAssertEqual(devices.map(\.device), ["device-1", "device-2"])
        XCTAssertEqual(devices.map(\.events), [2, 1])
        XCTAssertEqual(devices.map(\.failures), [1, 1])
        XCTAssertEqual(try reader.devices(since: now.addingTimeInterval(3.5)).map(\.device), ["device-1"])
    }

    /// The failures' index holds failures only (an insert per event less for the writer), and
    /// `trace --failures` still reads through it rather than scanning every event.
    func testFailuresAreIndexedAloneAndReadThroughTheirIndex() throws {
        let store = try makeStore()
        store.record(event(.connect, device: "device-1", at: 1))
        store.flush()
        let queue = try DatabaseQueue(path: storePath)
        let indexes = try queue.read { db in try String.fetchAll(db, sql: "SELECT name FROM pragma_index_list('trace_event')") }
        XCTAssertTrue(indexes.contains("trace_event_failures"), "\(indexes)")
        XCTAssertFalse(indexes.contains("index_trace_event_on_is_failure_time"), "the index of every event's failure flag is back: \(indexes)")
        let plan = try queue.read { db in
            try Row.fetchAll(db, sql: """
                EXPLAIN QUERY PLAN SELECT * FROM (SELECT * FROM trace_event WHERE is_failure = 1 AND time >= ? ORDER BY time DESC, id DESC LIMIT ?)
                ORDER BY time, id
                """, arguments: [now, 10]).map { $0["detail"] as String }
        }
        XCTAssertTrue(plan.contains { $0.contains("USING INDEX trace_event_failures") }, "\(plan)")
    }

    /// A store written by a version with the old index is migrated when opened: the old index
    /// goes, its events stay, and failures are listed as before.
    func testAStoreWithTheOldFailureIndexIsMigrated() throws {
        let store = try makeStore()
        store.record(event(.admission, device: "device-2", at: 1, failure: true, summary: "client id mismatch"))
        store.flush()
        // Back to the old layout: the old index, and the migration not yet applied.
        try DatabaseQueue(path: storePath).write { db in
            try db.execute(sql: """
                DROP INDEX trace_event_failures;
                CREATE INDEX index_trace_event_on_is_failure_time ON trace_event(is_failure, time);
                DELETE FROM grdb_migrations WHERE identifier = 'trace-failures-partial-index';
                """)
        }
        _ = try makeStore()
        let indexes = try DatabaseQueue(path: storePath).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM pragma_index_list('trace_event')")
        }
        XCTAssertEqual(Set(indexes).intersection(["trace_event_failures", "index_trace_event_on_is_failure_time"]), ["trace_event_failures"])
        XCTAssertEqual(try reader().failures().map(\.summary), ["client id mismatch"])
    }

    /// `trace DEVICE --follow`: poll with the id of the last event shown.
    func testPollingAfterAnIDSeesOnlyNewerEvents() throws {
        let store = try makeStore()
        let reader = try reader()
        store.record(event(at: 0, summary: "first"))
        store.flush()
        let first = try reader.events(device: "device-1")
        let lastID = try XCTUnwrap(first.last?.id)
        XCTAssertEqual(try reader.events(device: "device-1", afterID: lastID), [])

        store.record(event(at: 1, summary: "second"))
        store.record(event(device: "device-2", at: 1, summary: "other device"))
        store.record(event(at: 2, summary: "third"))
        store.flush()
        let next = try reader.events(device: "device-1", afterID: lastID)
        XCTAssertEqual(next.map(\.summary), ["second", "third"])
        XCTAssertEqual(try reader.events(device: "device-1", afterID: lastID, limit: 1).map(\.summary), ["second"])
        XCTAssertEqual(try reader.events(device: "device-1", afterID: try XCTUnwrap(next.last?.id)), [])
    }

    func testMessageTraceSwitchesExpireAndSurviveReopening() throws {
        var store: SQLiteTraceStore? = try makeStore()
        let hour = now.addingTimeInterval(3600)
        store?.enableMessageTrace(device: "device-1", until: hour)
        store?.enableMessageTrace(device: "device-2", until: hour)
        store?.enableMessageTrace(device: "device-3", until: now.addingTimeInterval(-1))
        store?.disableMessageTrace(device: "device-2")

        XCTAssertEqual(store?.messageTraceUntil(device: "device-1", now: now), hour)
        XCTAssertNil(store?.messageTraceUntil(device: "device-1", now: hour), "over at `until`")
        XCTAssertNil(store?.messageTraceUntil(device: "device-2", now: now), "disabled")
        XCTAssertNil(store?.messageTraceUntil(device: "device-3", now: now), "already over")
        XCTAssertNil(store?.messageTraceUntil(device: "unknown", now: now))
        XCTAssertEqual(store?.messageTraces(now: now), ["device-1": hour])

        store?.flush()
        store = nil
        let reopened = try makeStore()
        XCTAssertEqual(reopened.messageTraceUntil(device: "device-1", now: now), hour)
        XCTAssertNil(reopened.messageTraceUntil(device: "device-2", now: now))
        XCTAssertNil(reopened.messageTraceUntil(device: "device-3", now: now))

        // Re-enabling moves the end; disabling is persisted too.
        let later = now.addingTimeInterval(7200)
        reopened.enableMessageTrace(device: "device-1", until: later)
        reopened.enableMessageTrace(device: "device-4", until: later)
        reopened.disableMessageTrace(device: "device-4")
        reopened.flush()
        let again = try makeStore()
        XCTAssertEqual(again.messageTraces(now: now), ["device-1": later])
    }

    func testErrorsNameTheFile() throws {
        let folder = try state.subdirectory("trace.sqlite")
        XCTAssertThrowsError(try makeStore()) { error in
            XCTAssertTrue("\(error)".hasPrefix("cannot open the trace store \(folder): "), "\(error)")
        }
        let missing = state.file("missing.sqlite")
        XCTAssertThrowsError(try SQLiteTraceStore.openForReading(path: missing)) { error in
            XCTAssertTrue("\(error)".hasPrefix("cannot open the trace store \(missing): "), "\(error)")
        }
    }

    func testTheStoreCreatesItsFolder() throws {
        let path = state.file("state/nested/trace.sqlite")
        let store = try SQLiteTraceStore(path: path, logger: .recording(into: log), metricsFactory: metrics)
        store.record(event())
        store.flush()
        XCTAssertEqual(try SQLiteTraceStore.openForReading(path: path).events(device: "device-1").count, 1)
    }
}
