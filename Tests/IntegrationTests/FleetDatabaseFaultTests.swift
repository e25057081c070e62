import Foundation
@testable import StapleGateFleet
import TestSupport
import XCTest

/// The fleet database failing under a running gateway (issue 14), against real components: a
/// real PostgreSQL 15 stopped and started again (same data, same port), real `staplegate run`
/// processes, Mosquitto with mosquitto_pub/mosquitto_sub for the traffic, and the `openssl
/// ocsp` responder behind a counting proxy. Serving beats refusing the fleet: without its
/// database a gateway goes on relaying, admits the devices it knows without asking anyone, and
/// stays ready; once the database is back, answers are shared again without a restart.
final class FleetDatabaseFaultTests: FleetGatewayTestCase {
    /// Every migration of this version, as `staplegate_schema_migrations` lists them once applied.
    static let allMigrations = FleetSchema.migrations.map { "\($0.version)|\($0.name)" }.joined(separator: "\n")

    func testTheDatabaseStoppedMidTrafficCostsDevicesNothingAndWritesResumeWhenItIsBack() async throws {
        let proxy = try await startResponderBehindProxy()
        let server = try await startPostgres()
        let url = server.url(database: "fleet")
        let gateway = try await startGateway("A", proxy: proxy, fleet: postgresFleet(server, instance: "gw-a"))
        try await waitForDatabaseState("ready", on: gateway)
        let upBefore = try await metric("staplegate_fleet_database_up", of: gateway)
        XCTAssertEqual(upBefore, 1)

        // device-1 publishes line by line over one session for the whole test.
        let topic = uniqueTopic("fleet/outage")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        addTeardownBlock { await subscriber.stop() }
        let lines = try NamedPipeInput(in: try makeTemporaryDirectory())
        defer { lines.close() }
        let publisher = try startMosquittoPub(.gateway(port: gateway.port, pki: pki, device: "device-1"), topic: topic,
                                              payload: .linesOf(lines.path))
        addTeardownBlock { await publisher.terminate() }
        try lines.write(Array("before the outage\n".utf8))
        _ = try await subscriber.waitForMessages(1)
        XCTAssertEqual(proxy.connectionsAccepted, 1, "device-1 checked once")
        try await waitForSharedRow(of: "device-1", in: server)

        await server.stop()
        // Still ready (not required_for_readiness), and saying why the database is not.
        let during = try await waitForDatabaseState("unreachable", on: gateway)
        XCTAssertEqual(during.status, 200)
        XCTAssertTrue(during.ready)
        XCTAssertEqual(during.database["database"] as? String, url)
        XCTAssertEqual(during.database["requiredForReadiness"] as? Bool, false)
        XCTAssertNotNil(during.database["reason"] as? String, "\(during.database)")
        let upDuring = try await metric("staplegate_fleet_database_up", of: gateway)
        XCTAssertEqual(upDuring, 0)

        // Messages keep flowing on the open session...
        try lines.write(Array("during the outage\n".utf8))
        let received = try await subscriber.waitForMessages(2)
        XCTAssertEqual(received.last?.payload, "during the outage")
        // ...a device the gateway knows reconnects without a responder request...
        let again = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "reconnected")
        XCTAssertTrue(again.status.succeeded, "\(again)")
        _ = try await subscriber.waitForMessages(3)
        XCTAssertEqual(proxy.connectionsAccepted, 1, "device-1 admitted from the gateway's memory")
        // ...and a new one is checked with the responder; its answer cannot be written: counted.
        let newDevice = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-2", topic: topic, message: "new")
        XCTAssertTrue(newDevice.status.succeeded, "\(newDevice)")
        XCTAssertEqual(proxy.connectionsAccepted, 2)
        var failures = 0.0
        try await waitUntil(timeout: .seconds(20), "a write failure counted", details: { "\(failures)" }) {
            failures = try await self.metric("staplegate_fleet_store_write_failures_total", of: gateway) ?? 0
            return failures >= 1
        }
        try await gateway.waitForOutput("cannot write to the fleet database \(url)")
        XCTAssertTrue(gateway.process.isRunning, gateway.output)

        // Back, same data and port: ready again, and a new device's answer is shared, no restart.
        try await server.start()
        let after = try await waitForDatabaseState("ready", on: gateway)
        XCTAssertEqual(after.status, 200)
        XCTAssertNil(after.database["reason"] as? String)
        let upAfter = try await metric("staplegate_fleet_database_up", of: gateway)
        XCTAssertEqual(upAfter, 1)
        let third = try await connect("device-3", to: gateway)
        XCTAssertEqual(third, [.succeeded])
        try await waitForSharedRow(of: "device-3", in: server)
        // device-2's answer, given while the database was away, was kept and reaches the fleet too.
        try await waitForSharedRow(of: "device-2", in: server)
        try lines.write(Array("after the outage\n".utf8))
        let all = try await subscriber.waitForMessages(5)
        XCTAssertEqual(all.map(\.payload), ["before the outage", "during the outage", "reconnected", "new", "after the outage"])
        // The outage is logged once, not per connection or per batch.
        let warnings = gateway.process.stderr.lines.filter { $0.contains("cannot write to the fleet database") }
        XCTAssertEqual(warnings.count, 1, warnings.joined(separator: "\n"))
    }

    func testAGatewayStartedWithoutItsDatabaseServesAndSetsItUpOnceItComes() async throws {
        let proxy = try await startResponderBehindProxy()
        let server = try await startPostgres()
        await server.stop()
        let gateway = try await startGateway("A", proxy: proxy, fleet: postgresFleet(server, instance: "gw-a"))
        try await gateway.waitForOutput("starting without the fleet database \(server.url(database: "fleet"))")
        let before = try await waitForDatabaseState("unreachable", on: gateway)
        XCTAssertEqual(before.status, 200, "ready without its database")

        let first = try await connect("device-1", to: gateway)
        XCTAssertEqual(first, [.succeeded])
        XCTAssertEqual(proxy.connectionsAccepted, 1, "the responder asked directly")

        try await server.start()
        try await waitForDatabaseState("ready", on: gateway)
        let tables = try await server.psql("SELECT version, name FROM staplegate_schema_migrations ORDER BY version",
                                           database: "fleet")
        XCTAssertEqual(tables.trimmingCharacters(in: .whitespacesAndNewlines), Self.allMigrations, "migrated once it came")
        let second = try await connect("device-2", to: gateway)
        XCTAssertEqual(second, [.succeeded])
        try await waitForSharedRow(of: "device-2", in: server)
        XCTAssertTrue(gateway.process.isRunning, gateway.output)
    }

    /// With `required_for_readiness: true` the operator chose to take the gateway out of the
    /// balancer while its database is away: 503, naming the database; 200 again once it is back.
    func testRequiredForReadinessFailsReadyzWhileTheDatabaseIsAway() async throws {
        let proxy = try await startResponderBehindProxy()
        let server = try await startPostgres()
        let gateway = try await startGateway("A", proxy: proxy,
                                             fleet: postgresFleet(server, instance: "gw-a", extra: ", required_for_readiness: true"))
        let up = try await waitForDatabaseState("ready", on: gateway)
        XCTAssertEqual(up.status, 200)
        await server.stop()
        let down = try await waitForDatabaseState("unreachable", on: gateway)
        XCTAssertEqual(down.status, 503)
        XCTAssertFalse(down.ready)
        let body = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/readyz").json()
        let failing = try XCTUnwrap(body["failing"] as? [[String: Any]])
        XCTAssertEqual(failing.first?["check"] as? String, "fleet_database", "\(body)")
        XCTAssertTrue((failing.first?["reason"] as? String ?? "").contains(server.url(database: "fleet")), "\(body)")
        // Still serving: readiness is the balancer's business, admission goes on.
        let device = try await connect("device-1", to: gateway)
        XCTAssertEqual(device, [.succeeded])
        try await server.start()
        let back = try await waitForDatabaseState("ready", on: gateway)
        XCTAssertEqual(back.status, 200)
    }

    /// A rolling deploy on an empty database: several gateway processes start at once, one
    /// creates the tables, the others find them, and every one of them is ready.
    func testGatewaysStartingAtOnceMigrateAnEmptyDatabaseOnce() async throws {
        let proxy = try await startResponderBehindProxy()
        let server = try await startPostgres()
        let gateways = try await withThrowingTaskGroup(of: StapleGateProcess.self) { group in
            for index in 1...3 {
                group.addTask {
                    try await self.startGateway("gw-\(index)", proxy: proxy, fleet: self.postgresFleet(server, instance: "gw-\(index)"))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        for gateway in gateways { try await waitForDatabaseState("ready", on: gateway) }
        let versions = try await server.psql("SELECT version, name FROM staplegate_schema_migrations ORDER BY version",
                                             database: "fleet")
        XCTAssertEqual(versions.trimmingCharacters(in: .whitespacesAndNewlines), Self.allMigrations)
        let migrated = gateways.filter { $0.process.stderr.contains("fleet database migrated") }
        XCTAssertEqual(migrated.count, 1, "one gateway applied the migration")
    }
}
