import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// One fleet, many gateways (issue 14), end to end: two real `staplegate` processes with
/// `fleet: { store: postgres }` on one real PostgreSQL 15, a real `openssl ocsp` responder
/// behind a `CountingTCPProxy` that counts the gateways' requests. What one gateway learnt
/// from the responder, the other finds in the shared table on a miss in memory.
final class FleetSharedStatusTests: FleetGatewayTestCase {
    // MARK: Tests

    func testADeviceGatewayAAskedAboutIsAdmittedByGatewayBWithoutAnotherResponderRequest() async throws {
        let proxy = try await startResponderBehindProxy()
        let server = try await startPostgres()
        let gatewayA = try await startGateway("A", proxy: proxy, fleet: postgresFleet(server, instance: "gw-a"))
        let gatewayB = try await startGateway("B", proxy: proxy, fleet: postgresFleet(server, instance: "gw-b"))
        XCTAssertTrue(gatewayB.process.stderr.contains("store=postgres"), gatewayB.output)

        let first = try await connect("device-1", to: gatewayA)
        XCTAssertEqual(first, [.succeeded])
        XCTAssertEqual(proxy.connectionsAccepted, 1, "gateway A asks the responder")
        try await waitForSharedRows(server, count: 1)
        let writer = try await server.psql("SELECT written_by FROM device_ocsp_status", database: "fleet")
        XCTAssertEqual(writer.trimmingCharacters(in: .whitespacesAndNewlines), "gw-a")

        let second = try await connect("device-1", to: gatewayB)
        XCTAssertEqual(second, [.succeeded])
        XCTAssertEqual(proxy.connectionsAccepted, 1, "gateway B found gateway A's answer in PostgreSQL")
        try await gatewayB.waitForOutput("device.check=OCSP good (cached until")
    }

    /// A responder behind the counting proxy, PostgreSQL, and gateway gw-a on it, which device-1
    /// connected through: its answer is in the shared table.
    private func startGatewayWhoseAnswerForDevice1IsShared() async throws -> (CountingTCPProxy, PostgresServer, StapleGateProcess) {
        let proxy = try await startResponderBehindProxy()
        let server = try await startPostgres()
        let gateway = try await startGateway("A", proxy: proxy, fleet: postgresFleet(server, instance: "gw-a"))
        let first = try await connect("device-1", to: gateway)
        XCTAssertEqual(first, [.succeeded])
        try await waitForSharedRows(server, count: 1)
        return (proxy, server, gateway)
    }

    /// With the gateway stopped, `ocsp cache --config` lists what the fleet's table holds.
    func testTheCacheListingReadsTheFleetsTableWhileTheGatewayIsStopped() async throws {
        let (_, server, gateway) = try await startGatewayWhoseAnswerForDevice1IsShared()
        await gateway.stop()
        let cache = { try await ManagedProcess(try CommandLineTests.findExecutable(), ["ocsp", "cache", "--config", gateway.configPath])
            .commandResult(timeout: .seconds(30)) }
        let listing = try await cache()
        XCTAssertEqual(listing.status, .exited(0), "\(listing)")
        XCTAssertTrue(listing.stdout.contains("device-1"), listing.stdout)
        XCTAssertTrue(listing.stderr.contains("showing the persisted cache in \(server.url(database: "fleet"))"), listing.stderr)
        await server.stop()
        let unreachable = try await cache()
        XCTAssertNotEqual(unreachable.status, .exited(0))
        XCTAssertTrue(unreachable.stderr.contains("the fleet database \(server.url(database: "fleet")) cannot be read"), unreachable.stderr)
    }

    /// The negative control: gateways with their own SQLite files share nothing, so each asks.
    func testGatewaysWithTheirOwnSQLiteStoresEachAskTheResponder() async throws {
        let proxy = try await startResponderBehindProxy()
        let gatewayA = try await startGateway("A", proxy: proxy, fleet: nil)
        let gatewayB = try await startGateway("B", proxy: proxy, fleet: "{ store: sqlite }")
        let first = try await connect("device-1", to: gatewayA)
        XCTAssertEqual(first, [.succeeded])
        let second = try await connect("device-1", to: gatewayB)
        XCTAssertEqual(second, [.succeeded])
        XCTAssertEqual(proxy.connectionsAccepted, 2, "one responder request per gateway")
        // No fleet database: nothing about one in /readyz or /metrics.
        let readiness = try await readiness(gatewayB)
        XCTAssertEqual(readiness.status, 200)
        XCTAssertTrue(readiness.database.isEmpty, "\(readiness.database)")
        let up = try await metric("staplegate_fleet_database_up", of: gatewayB)
        XCTAssertNil(up)
    }

    /// The database going away costs known devices nothing: the gateway's memory admits them.
    func testWithTheDatabaseStoppedAGatewayStillAdmitsADeviceItKnows() async throws {
        let (proxy, server, gateway) = try await startGatewayWhoseAnswerForDevice1IsShared()
        await server.stop()

        let second = try await connect("device-1", to: gateway)
        XCTAssertEqual(second, [.succeeded])
        XCTAssertEqual(proxy.connectionsAccepted, 1, "answered from the gateway's memory")
        XCTAssertTrue(gateway.process.isRunning, gateway.output)
        // A device it has not seen: the shared read fails, the responder is asked, and the
        // write-behind says once that the database is away.
        let other = try await connect("device-2", to: gateway)
        XCTAssertEqual(other, [.succeeded])
        XCTAssertEqual(proxy.connectionsAccepted, 2)
        try await gateway.waitForOutput("cannot write to the fleet database \(server.url(database: "fleet"))")
    }
}
