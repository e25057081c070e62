import Foundation
import Logging
import MetricsTestKit
import NIOConcurrencyHelpers
@testable import StapleGateFleet
import StapleGateOCSP
import TestSupport
import XCTest

/// What only the shared store does: gateways see each other's answers, start together safely,
/// and keep handshakes unblocked while the database is gone.
final class PostgresFleetStoreTests: FleetStoreTestCase {
    func testAnAnswerOneGatewayWroteIsFoundByAnother() async throws {
        let gatewayA = try openPostgresStore(instance: "gw-a")
        let gatewayB = try openPostgresStore(instance: "gw-b")
        let entry = status(certID(1), identity: "dev-1")
        gatewayA.save(entry)
        gatewayA.flush()
        let found = try await gatewayB.status(for: certID(1), now: now)
        XCTAssertEqual(found, entry)
        let writer = try await postgres.psql("SELECT written_by FROM device_ocsp_status", database: database)
        XCTAssertEqual(writer.trimmingCharacters(in: .whitespacesAndNewlines), "gw-a")
    }

    /// Two gateways may write answers about one device in either order: the newer stays.
    func testAnOlderAnswerNeverReplacesANewerOne() async throws {
        let gatewayA = try openPostgresStore(instance: "gw-a")
        let gatewayB = try openPostgresStore(instance: "gw-b")
        let newer = status(certID(1), .revoked(at: now, reason: .keyCompromise), checked: 60)
        gatewayA.save(newer)
        gatewayA.flush()
        gatewayB.save(status(certID(1), .good, checked: 0))
        gatewayB.flush()
        XCTAssertNil(gatewayB.lastWriteError)
        XCTAssertEqual(try gatewayB.loadAll(notExpiredAt: now), [newer])
    }

    /// A rolling deploy starts several gateways at once on a new database: one creates the
    /// tables, the others wait for it and find the work done.
    func testGatewaysStartingAtOnceMigrateTheDatabaseOnce() async throws {
        let settings = try self.settings
        let results = NIOLockedValueBox<(stores: [PostgresDeviceStatusStore], failures: [String])>(([], []))
        DispatchQueue.concurrentPerform(iterations: 4) { index in
            var own = settings
            own.instance = "gw-\(index)"
            do {
                let store = try PostgresDeviceStatusStore(settings: own, logger: Logger(label: "test.fleet-store"))
                results.withLockedValue { $0.stores.append(store) }
            } catch {
                results.withLockedValue { $0.failures.append("\(error)") }
            }
        }
        let (stores, failures) = results.withLockedValue { $0 }
        defer { stores.forEach { $0.close() } }
        XCTAssertEqual(failures, [])
        XCTAssertEqual(stores.count, 4)
        let versions = try await postgres.psql("SELECT version, name FROM staplegate_schema_migrations ORDER BY version",
                                               database: database)
        let expected = FleetSchema.migrations.map { "\($0.version)|\($0.name)" }.joined(separator: "\n")
        XCTAssertEqual(versions.trimmingCharacters(in: .whitespacesAndNewlines), expected)
        XCTAssertTrue(expected.hasPrefix("1|device_ocsp_status\n2|fleet_coordination"), expected)
    }

    /// With the database gone, saving costs the caller nothing (it only queues) and the failed
    /// batch is counted with the database named; a read fails instead of hanging.
    func testWithTheDatabaseDownWritesAreCountedAndNothingBlocks() async throws {
        let server = try await PostgresServer.start()
        try await server.createDatabase("fleet")
        let store = try PostgresDeviceStatusStore(
            settings: PostgresSettings(host: "127.0.0.1", port: server.port, user: PostgresServer.user, database: "fleet",
                                       tls: .disable, instance: "gw-a"),
            logger: Logger(label: "test.fleet-store"))
        defer { store.close() }
        await server.remove()

        let started = ContinuousClock.now
        for serial in 1...100 { store.save(status(certID(UInt8(serial)))) }
        XCTAssertLessThan(started.duration(to: .now), .milliseconds(200), "saving 100 answers only queues them")
        store.flush()
        XCTAssertGreaterThanOrEqual(store.writeErrorCount, 1)
        let message = try XCTUnwrap(store.lastWriteError)
        XCTAssertTrue(message.contains("postgres://postgres@127.0.0.1:\(server.port)/fleet"), message)
        let reading = ContinuousClock.now
        do {
            _ = try await store.status(for: certID(1), now: now)
            XCTFail("read from a stopped database")
        } catch {
            XCTAssertTrue("\(error)".contains("127.0.0.1:\(server.port)/fleet"), "\(error)")
        }
        XCTAssertLessThan(reading.duration(to: .now), PostgresDeviceStatusStore.readTimeout + .seconds(2),
                          "a read gives up after readTimeout")
    }

    /// The database's gauge and the store's write failures follow a database that stops and
    /// starts again (same data, same port), and writes resume on the same store, no reopening.
    func testTheGaugeAndWriteFailuresFollowTheDatabaseAndWritesResume() async throws {
        let server = try await PostgresServer.start()
        addTeardownBlock { await server.remove() }
        try await server.createDatabase("fleet")
        let metrics = TestMetrics()
        let database = try FleetDatabase(
            settings: PostgresSettings(host: "127.0.0.1", port: server.port, user: PostgresServer.user, database: "fleet",
                                       tls: .disable, instance: "gw-a"),
            logger: Logger(label: "test.fleet-store"), metricsFactory: metrics)
        defer { database.close() }
        let store = PostgresDeviceStatusStore(database: database, logger: Logger(label: "test.fleet-store"))
        defer { store.close() }
        let up = try metrics.expectGauge("staplegate_fleet_database_up")
        let failures = try metrics.expectCounter("staplegate_fleet_store_write_failures_total")
        let ready = await database.ready(within: .seconds(15))
        XCTAssertTrue(ready)
        XCTAssertEqual(up.lastValue, 1)
        XCTAssertEqual(failures.totalValue, 0)

        await server.stop()
        try await waitUntil(timeout: .seconds(20), "the database seen unreachable", details: { "\(database.health)" }) {
            if case .unreachable = database.health { return true }
            return false
        }
        XCTAssertEqual(up.lastValue, 0)
        store.save(status(certID(1)))
        store.flush()
        XCTAssertGreaterThanOrEqual(failures.totalValue, 1)
        // Every failed attempt is in the metric and in the store's count (the kept batch is tried
        // again every `retryDelay`, so both keep growing); the store's also counts a `flush` that
        // gave up waiting, which a busy machine can see.
        try await waitUntil(timeout: .seconds(10), "each failed attempt counted by the store too",
                            details: { "\(failures.totalValue) against \(store.writeErrorCount)" }) {
            Int64(store.writeErrorCount) >= failures.totalValue
        }
        // Known to be away: a read fails at once instead of waiting for the pool.
        let reading = ContinuousClock.now
        do {
            _ = try await store.status(for: certID(1), now: now)
            XCTFail("read from a stopped database")
        } catch {
            XCTAssertTrue("\(error)".contains("unreachable"), "\(error)")
        }
        XCTAssertLessThan(reading.duration(to: .now), .milliseconds(100))

        try await server.start()
        let back = await database.ready(within: .seconds(60))
        XCTAssertTrue(back, "\(database.health)")
        XCTAssertEqual(up.lastValue, 1)
        // A retry may have been under way when the database came back: let the writer settle.
        store.flush()
        let failed = store.writeErrorCount
        store.save(status(certID(2)))
        store.flush()
        XCTAssertEqual(store.writeErrorCount, failed, store.lastWriteError ?? "")
        let found = try await store.status(for: certID(2), now: now)
        XCTAssertEqual(found, status(certID(2)))
        // The answer saved while the database was away was kept, and is in the table now.
        let kept = try await store.status(for: certID(1), now: now)
        XCTAssertEqual(kept, status(certID(1)), "the answer saved during the outage was lost")
    }

    func testStartFailsNamingTheDatabaseWhenNothingListens() throws {
        let port = try FreePort.next()
        let settings = PostgresSettings(host: "127.0.0.1", port: port, user: "gw", database: "fleet", tls: .disable)
        XCTAssertThrowsError(try PostgresDeviceStatusStore(settings: settings, logger: Logger(label: "test.fleet-store"))) { error in
            XCTAssertTrue("\(error)".contains("cannot set up the fleet database postgres://gw@127.0.0.1:\(port)/fleet"), "\(error)")
        }
    }
}
