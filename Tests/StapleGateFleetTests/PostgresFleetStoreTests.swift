import Foundation
import Logging
import StapleGateFleet
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
        let results = NSLock()
        var failures: [String] = []
        var stores: [PostgresDeviceStatusStore] = []
        DispatchQueue.concurrentPerform(iterations: 4) { index in
            var own = settings
            own.instance = "gw-\(index)"
            do {
                let store = try PostgresDeviceStatusStore(settings: own, logger: Logger(label: "test.fleet-store"))
                results.lock(); stores.append(store); results.unlock()
            } catch {
                results.lock(); failures.append("\(error)"); results.unlock()
            }
        }
        defer { stores.forEach { $0.close() } }
        XCTAssertEqual(failures, [])
        XCTAssertEqual(stores.count, 4)
        let versions = try await postgres.psql("SELECT version, name FROM staplegate_schema_migrations ORDER BY version",
                                               database: database)
        // Each version once (this branch has 1 and 5; 2–4 come with other parts of issue 14).
        let rows = versions.split(separator: "\n").map(String.init)
        XCTAssertEqual(rows.first, "1|device_ocsp_status")
        XCTAssertTrue(rows.contains("5|trace_events"), versions)
        XCTAssertEqual(Set(rows.map { $0.prefix { $0 != "|" } }).count, rows.count, versions)
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

    func testStartFailsNamingTheDatabaseWhenNothingListens() throws {
        let port = try FreePort.next()
        let settings = PostgresSettings(host: "127.0.0.1", port: port, user: "gw", database: "fleet", tls: .disable)
        XCTAssertThrowsError(try PostgresDeviceStatusStore(settings: settings, logger: Logger(label: "test.fleet-store"))) { error in
            XCTAssertTrue("\(error)".contains("cannot set up the fleet database postgres://gw@127.0.0.1:\(port)/fleet"), "\(error)")
        }
    }
}
