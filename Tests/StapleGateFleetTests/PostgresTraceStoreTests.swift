import Foundation
@testable import StapleGateFleet
@testable import StapleGateTrace
import TestSupport
import XCTest

/// What only the fleet's trace store does: events of several gateways in one timeline, switches
/// that apply on every gateway, retention by one gateway at a time, `--follow` that misses
/// nothing when batches commit out of order, and MQTT-safe behaviour while the database is away.
final class PostgresTraceStoreTests: FleetTraceTestCase {
    func testATimelineReadFromAThirdGatewayShowsEveryGatewaysEventsInTimeOrderWithTheirInstance() async throws {
        let gatewayA = try openPostgresTraceStore(instance: "gw-a")
        let gatewayB = try openPostgresTraceStore(instance: "gw-b")
        let gatewayC = try openPostgresTraceStore(instance: "gw-c")
        gatewayA.record(event(.accepted, at: 0, connection: 1, summary: "through A"))
        gatewayB.record(event(.accepted, at: 10, connection: 1, summary: "through B"))
        gatewayA.record(event(.disconnect, at: 5, connection: 1, summary: "A ends"))
        gatewayB.flush()
        gatewayA.flush()

        let events = try await gatewayC.reader().events(device: "device-1")
        XCTAssertEqual(events.map(\.summary), ["through A", "A ends", "through B"])
        XCTAssertEqual(events.map(\.instance), ["gw-a", "gw-a", "gw-b"])
        let lines = TraceTimeline.lines(events)
        XCTAssertTrue(lines[0].contains("  gw-a  #1  "), lines[0])
        XCTAssertTrue(lines[2].contains("  gw-b  #1  "), lines[2])
    }

    /// A NUL from a device (client id, topic) would fail the whole batch in text or jsonb.
    func testAnEventWithNULInItsTextIsStoredNotTheBatchDropped() async throws {
        let store = try openPostgresTraceStore()
        store.record(event(.connect, at: 0, summary: "client id \"a\u{0}b\"", details: ["mqtt.client_id": "a\u{0}b"]))
        store.record(event(.admission, at: 1, summary: "admitted"))
        store.flush()
        XCTAssertEqual(store.droppedEvents, 0, log.text)
        let events = try await store.reader().events(device: "device-1")
        XCTAssertEqual(events.map(\.summary), ["client id \"a\u{FFFD}b\"", "admitted"])
        XCTAssertEqual(events.first?.details, ["mqtt.client_id": "a\u{FFFD}b"])
    }

    func testAMessageTraceSwitchSetOnOneGatewayAppliesOnTheOthers() async throws {
        let gatewayA = try openPostgresTraceStore(instance: "gw-a")
        let gatewayC = try openPostgresTraceStore(instance: "gw-c")
        let until = Date().addingTimeInterval(600)
        gatewayC.enableMessageTrace(device: "device-2", until: until)
        try await waitUntil(timeout: .seconds(5), "gateway A to see the switch gateway C set") {
            gatewayA.messageTraceUntil(device: "device-2") != nil
        }
        XCTAssertEqual(try XCTUnwrap(gatewayA.messageTraceUntil(device: "device-2")).timeIntervalSince1970,
                       until.timeIntervalSince1970, accuracy: 0.001)
        XCTAssertNil(gatewayA.messageTraceUntil(device: "device-1"), "negative control: another device")

        gatewayA.disableMessageTrace(device: "device-2")
        try await waitUntil(timeout: .seconds(5), "gateway C to see the switch turned off") {
            gatewayC.messageTraceUntil(device: "device-2") == nil
        }
        // Off stays off: the refreshes that follow do not bring it back.
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertNil(gatewayA.messageTraceUntil(device: "device-2"))
        XCTAssertNil(gatewayC.messageTraceUntil(device: "device-2"))
    }

    /// Another gateway mid-pass (here: a session holding the retention lock) makes a pass skip;
    /// once it is done, the next pass runs.
    func testRetentionRunsOnOneGatewayAtATime() async throws {
        let store = try openPostgresTraceStore(retention: .seconds(3600))
        store.record(event(at: -7200, summary: "old"))
        store.record(event(at: 0, summary: "new"))
        store.flush()

        let scratch = try TemporaryDirectory(prefix: "trace-lock")
        defer { scratch.remove() }
        let input = try NamedPipeInput(in: scratch)
        let holder = try ManagedProcess("runuser", [
            "-u", PostgresServer.user, "--", "\(PostgresServer.binaries)/psql", "-h", "127.0.0.1", "-p", "\(try postgres.port)",
            "-d", database, "-v", "ON_ERROR_STOP=1",
        ], input: .file(input.path))
        defer { input.close() }
        try input.write(Array("SELECT pg_advisory_lock(\(PostgresTraceStore.pruneLock));\n".utf8))
        try await waitUntil(timeout: .seconds(10), "the other session to hold the retention lock", details: { holder.output }) {
            try await self.postgres.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                                         database: self.database).trimmingCharacters(in: .whitespacesAndNewlines) == "1"
        }
        XCTAssertFalse(try store.prune(now: now), "skipped while another holds the lock")
        let kept = try await store.reader().events(device: "device-1")
        XCTAssertEqual(kept.map(\.summary), ["old", "new"])

        input.close()
        _ = try await holder.waitForExit(timeout: .seconds(10))
        XCTAssertTrue(try store.prune(now: now))
        let left = try await store.reader().events(device: "device-1")
        XCTAssertEqual(left.map(\.summary), ["new"])
    }

    /// Without anyone calling `prune`, each gateway runs a pass every `pruneInterval`.
    func testRetentionRunsByItself() async throws {
        var tuning = fastTuning
        tuning.pruneInterval = .milliseconds(200)
        let store = try openPostgresTraceStore(retention: .seconds(3600), tuning: tuning)
        let realNow = Date()
        store.record(TraceEvent(time: realNow.addingTimeInterval(-7200), kind: .connect, device: "device-1", serial: nil,
                                connectionID: 1, remoteAddress: "", summary: "old"))
        store.record(TraceEvent(time: realNow, kind: .connect, device: "device-1", serial: nil, connectionID: 2,
                                remoteAddress: "", summary: "new"))
        store.flush()
        var left: [TraceEvent] = []
        try await waitUntil(timeout: .seconds(10), "the old event to be pruned", details: { "\(left.map(\.summary))" }) {
            left = try await store.reader().events(device: "device-1")
            return left.map(\.summary) == ["new"]
        }
    }

    /// Gateway "slow" takes id N in a transaction that commits after gateway A's N+1 was read:
    /// polling "id > last" would never show N. The follower does.
    func testFollowSeesAnEventWhoseBatchCommitsAfterANewerOneWasRead() async throws {
        let store = try openPostgresTraceStore(instance: "gw-a")
        let reader = try store.reader()
        let follower = try await reader.follower(device: "device-1")
        follower.markShown(try await reader.events(device: "device-1"))

        let scratch = try TemporaryDirectory(prefix: "trace-slow")
        defer { scratch.remove() }
        let input = try NamedPipeInput(in: scratch)
        let slow = try ManagedProcess("runuser", [
            "-u", PostgresServer.user, "--", "\(PostgresServer.binaries)/psql", "-h", "127.0.0.1", "-p", "\(try postgres.port)",
            "-d", database, "-v", "ON_ERROR_STOP=1",
        ], input: .file(input.path))
        defer { input.close() }
        try input.write(Array("""
            BEGIN;
            INSERT INTO trace_event (instance, time, kind, device, connection_id, remote_address, is_failure, summary)
            VALUES ('gw-slow', now(), 'connect', 'device-1', 7, '10.0.0.9:4000', false, 'slow batch');
            SELECT 'inserted';

            """.utf8))
        try await waitUntil(timeout: .seconds(10), "the slow batch's insert", details: { slow.output }) {
            slow.stdout.contains("inserted")
        }

        store.record(event(at: 1, summary: "fast batch"))
        store.flush()
        let first = try await follower.next()
        XCTAssertEqual(first.map(\.summary), ["fast batch"])

        try input.write(Array("COMMIT;\n".utf8))
        input.close()
        _ = try await slow.waitForExit(timeout: .seconds(10))
        let late = try await follower.next()
        XCTAssertEqual(late.map(\.summary), ["slow batch"])
        XCTAssertEqual(late.first?.instance, "gw-slow")
        XCTAssertLessThan(try XCTUnwrap(late.first?.id), try XCTUnwrap(first.first?.id),
                          "the scenario: the late event's id is below one already shown")
        let after = try await follower.next()
        XCTAssertEqual(after, [], "nothing twice")
    }

    /// The database stopped: `record` keeps returning at once, events are dropped and counted
    /// (metric, warning naming the database); started again: writes resume in the same store.
    func testWithTheDatabaseStoppedRecordNeverWaitsDropsAreCountedAndWritesResume() async throws {
        let server = try await PostgresServer.start()
        addTeardownBlock { await server.remove() }
        try await server.createDatabase("fleet")
        let settings = PostgresSettings(host: "127.0.0.1", port: server.port, user: PostgresServer.user, database: "fleet",
                                        tls: .disable)
        let store = try openPostgresTraceStore(queueCapacity: 100, settings: settings)
        store.record(event(summary: "before"))
        store.flush()
        XCTAssertEqual(writtenMetric(), 1)

        await server.stop()
        // The first batch after the stop waits for the database (writeTimeout), then fails.
        store.record(event(summary: "lost in the failing write"))
        store.flush()
        XCTAssertEqual(store.droppedEvents, 1)
        try await log.waitFor("trace store failing: ")
        let warning = try XCTUnwrap(log.entries(containing: "trace store failing: ").first).description
        XCTAssertTrue(warning.contains("1 events dropped so far: cannot write traces to the fleet database \(server.url(database: "fleet"))"),
                      warning)

        // Failing: dropped at once, not even queued.
        var slowest = Duration.zero
        for index in 0..<1000 {
            let start = ContinuousClock.now
            store.record(event(at: Double(index), summary: "while stopped"))
            slowest = max(slowest, ContinuousClock.now - start)
        }
        XCTAssertLessThan(slowest, .milliseconds(100), "record waited")
        store.flush()
        XCTAssertGreaterThanOrEqual(store.droppedEvents, 1001)
        XCTAssertEqual(droppedMetric(), Int64(store.droppedEvents))
        XCTAssertEqual(store.queuedEvents, 0)

        try await server.start()
        var sent = 0
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(200), "trace writes to resume",
                            details: { self.log.text }) {
            sent += 1
            store.record(event(at: 2000 + Double(sent), summary: "after \(sent)"))
            store.flush()
            let events = try? await store.reader().events(device: "device-1")
            return events?.contains { $0.summary.hasPrefix("after ") } ?? false
        }
        try await log.waitFor("trace store \(server.url(database: "fleet")) writes again after")
        let stored = try await store.reader().events(device: "device-1", since: nil, limit: 10_000)
        XCTAssertEqual(stored.first?.summary, "before")
        XCTAssertFalse(stored.contains { $0.summary == "while stopped" }, "dropped, not written late")
    }
}
