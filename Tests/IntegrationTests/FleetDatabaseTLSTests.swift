import Foundation
import TestSupport
import XCTest

/// `fleet.tls` with real `staplegate run` processes and a real PostgreSQL 15 that demands TLS
/// (`ssl=on`, hostssl-only pg_hba.conf, the test PKI's server certificate for localhost). The
/// cases of each mode against the store alone are StapleGateFleetTests/PostgresTLSTests.
final class FleetDatabaseTLSTests: FleetGatewayTestCase {
    private func startTLSPostgres() async throws -> PostgresServer {
        try await startPostgres(tls: .init(certificate: pki.certificate("server"), key: pki.key("server"), required: true))
    }

    private func verifyFullFleet(_ server: PostgresServer, caFile: String) -> String {
        "{ store: postgres, url: \"postgres://\(PostgresServer.user)@localhost:\(server.port)/fleet\", tls: verify-full, "
            + "ca_file: \"\(caFile)\", instance: gw-tls, pool_size: 2 }"
    }

    func testVerifyFullWithTheSigningCAWritesDeviceStatuses() async throws {
        let proxy = try await startResponderBehindProxy()
        let server = try await startTLSPostgres()
        let gateway = try await startGateway("A", proxy: proxy, fleet: verifyFullFleet(server, caFile: pki.caChain))
        try await waitForDatabaseState("ready", on: gateway)
        let device = try await connect("device-1", to: gateway)
        XCTAssertEqual(device, [.succeeded])
        try await waitForSharedRow(of: "device-1", in: server)
        // Only TLS clients get in (hostssl): the gateway's connections are encrypted.
        let encrypted = try await server.psql(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = 'fleet' AND ssl AND pid <> pg_backend_pid()",
            database: "fleet")
        XCTAssertGreaterThanOrEqual(Int(encrypted.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 1)
    }

    /// A CA that did not sign the server's certificate: the gateway still starts and serves,
    /// and both its log and /readyz name the database and the certificate problem.
    func testVerifyFullWithAnotherCAServesAndSaysWhyTheDatabaseIsUnreachable() async throws {
        let other = try TestPKI()
        addTeardownBlock { other.remove() }
        let proxy = try await startResponderBehindProxy()
        let server = try await startTLSPostgres()
        let gateway = try await startGateway("A", proxy: proxy, fleet: verifyFullFleet(server, caFile: other.caChain))
        let url = "postgres://\(PostgresServer.user)@localhost:\(server.port)/fleet"
        let state = try await waitForDatabaseState("unreachable", on: gateway)
        XCTAssertEqual(state.status, 200)
        XCTAssertEqual(state.database["database"] as? String, url)
        let reason = state.database["reason"] as? String ?? ""
        XCTAssertTrue(reason.contains("certificate is not trusted"), reason)
        try await gateway.waitForOutput("the fleet database \(url) is unreachable: TLS: the server's certificate is not trusted")
        let device = try await connect("device-1", to: gateway)
        XCTAssertEqual(device, [.succeeded], "served without its database")
        let tables = try await server.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'device_ocsp_status'", database: "fleet")
        XCTAssertEqual(tables.trimmingCharacters(in: .whitespacesAndNewlines), "0", "the gateway never got in")
    }
}
