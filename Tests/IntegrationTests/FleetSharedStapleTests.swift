import Foundation
import TestSupport
import XCTest

/// Shared staples (issue 14): with `fleet.store: postgres`, the staple a gateway verified is
/// kept in the fleet's table, so a new gateway (empty state directory) staples its very first
/// handshake while the responder is down. What it reads there is verified as a responder's
/// answer would be: a row tampered with, or out of date, is not served, and the log says why.
/// Real `staplegate` processes, a real `openssl ocsp` responder, PostgreSQL 15 and
/// `openssl s_client -status`.
final class FleetSharedStapleTests: GatewayTestCase {
    private var postgres: PostgresServer?
    private var responders: [OCSPResponder] = []
    private var gateways: [StapleGateProcess] = []

    override func tearDown() async throws {
        for gateway in gateways { await gateway.stop() }
        gateways = []
        for responder in responders { await responder.stop() }
        responders = []
        await postgres?.remove()
        postgres = nil
        try await super.tearDown()
    }

    // MARK: Tests

    func testANewGatewayStaplesItsFirstHandshakeFromTheFleetWhileTheResponderIsDown() async throws {
        let server = try await startPostgres()
        let responder = try await startResponder()
        let gatewayA = try await startGateway("A", server: server)
        let fromA = try await handshakeAskingForStatus(gatewayA)
        XCTAssertTrue(fromA.contains("Cert Status: good"), fromA)
        try await waitForSharedStaple(server)

        await responder.stop()
        let gatewayB = try await startGateway("B", server: server)
        let first = try await handshakeAskingForStatus(gatewayB)
        XCTAssertTrue(first.contains("OCSP Response Status: successful"), first)
        XCTAssertTrue(first.contains("Cert Status: good"), first)
        XCTAssertTrue(gatewayB.output.contains("installed the persisted OCSP staple from \(server.url(database: "fleet"))"), gatewayB.output)
        // B asked no responder: the staple it holds is in date, its refresh is due at half-life.
        XCTAssertFalse(gatewayB.output.contains("OCSP staple refreshed"), gatewayB.output)
        let status = try String(contentsOfFile: gatewayB.stateDirectory + "/ocsp-status.json", encoding: .utf8)
        XCTAssertTrue(status.contains("\"serving\" : true"), status)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: gatewayB.stateDirectory)) ?? []
        XCTAssertFalse(files.contains { $0.hasPrefix("staple-") }, "with the fleet, staples go to its table: \(files)")
    }

    /// The negative control of the test above, and the reason the staple is verified: a row
    /// changed in the database (here one digit of the signed producedAt) is refused.
    func testATamperedStapleInTheDatabaseIsNotServed() async throws {
        let server = try await startPostgres()
        let responder = try await startResponder()
        let gatewayA = try await startGateway("A", server: server)
        _ = try await handshakeAskingForStatus(gatewayA)
        try await waitForSharedStaple(server)
        await gatewayA.stop()
        await responder.stop()

        // producedAt is the first GeneralizedTime in the response ("2026…Z"); its year's last
        // digit (0-based offset: 1-based position + 2) becomes another one.
        try await server.psql("""
            UPDATE staples SET der = set_byte(der, position(convert_to(to_char(now(), 'YYYY'), 'UTF8') in der) + 2,
                get_byte(der, position(convert_to(to_char(now(), 'YYYY'), 'UTF8') in der) + 2) # 1)
            """, database: "fleet")
        let gatewayB = try await startGateway("B", server: server)
        let first = try await handshakeAskingForStatus(gatewayB)
        XCTAssertTrue(first.contains("OCSP response: no response sent"), first)
        XCTAssertTrue(gatewayB.output.contains("persisted OCSP staple from \(server.url(database: "fleet")) not used: response signature invalid"),
                      gatewayB.output)
        XCTAssertFalse(gatewayB.output.contains("installed the persisted OCSP staple"), gatewayB.output)
    }

    /// A staple signed by the right responder but out of date (from a responder whose clock is
    /// an hour behind) is refused as expired.
    func testAnExpiredStapleInTheDatabaseIsNotServed() async throws {
        let server = try await startPostgres()
        let responder = try await startResponder()
        let gatewayA = try await startGateway("A", server: server)
        _ = try await handshakeAskingForStatus(gatewayA)
        try await waitForSharedStaple(server)
        await gatewayA.stop()
        await responder.stop()

        let late = try await OCSPResponder.start(pki: pki, port: try FreePort.next(), clockOffset: "-1h")
        responders.append(late)
        let file = try makeTemporaryDirectory().file("expired.der")
        let query = try await ManagedProcess("openssl", [
            "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.certificate("server"), "-url", "http://127.0.0.1:\(late.port)",
            "-respout", file, "-noverify", "-no_nonce",
        ]).commandResult(timeout: .seconds(10))
        XCTAssertTrue(query.status.succeeded, "\(query)")
        await late.stop()
        let hex = try Data(contentsOf: URL(fileURLWithPath: file)).map { String(format: "%02x", $0) }.joined()
        try await server.psql("UPDATE staples SET der = decode('\(hex)', 'hex')", database: "fleet")

        let gatewayB = try await startGateway("B", server: server)
        let first = try await handshakeAskingForStatus(gatewayB)
        XCTAssertTrue(first.contains("OCSP response: no response sent"), first)
        XCTAssertTrue(gatewayB.output.contains("persisted OCSP staple from \(server.url(database: "fleet")) not used: response expired at"),
                      gatewayB.output)
    }

    /// Without a fleet database, staples stay in each gateway's state directory (today's
    /// behaviour): a new gateway with an empty one has nothing to staple while the responder is down.
    func testWithoutTheFleetANewGatewayHasNoStapleWhileTheResponderIsDown() async throws {
        let responder = try await startResponder()
        let gatewayA = try await startGateway("A", server: nil)
        let fromA = try await handshakeAskingForStatus(gatewayA)
        XCTAssertTrue(fromA.contains("Cert Status: good"), fromA)
        let files = try FileManager.default.contentsOfDirectory(atPath: gatewayA.stateDirectory)
        XCTAssertTrue(files.contains { $0.hasPrefix("staple-") && $0.hasSuffix(".der") }, "\(files)")
        await responder.stop()

        let gatewayB = try await startGateway("B", server: nil)
        let first = try await handshakeAskingForStatus(gatewayB)
        XCTAssertTrue(first.contains("OCSP response: no response sent"), first)
    }

    // MARK: Helpers

    private func startPostgres() async throws -> PostgresServer {
        let server = try await PostgresServer.start()
        postgres = server
        try await server.createDatabase("fleet")
        return server
    }

    private func startResponder() async throws -> OCSPResponder {
        let responder = try await OCSPResponder.start(pki: pki)
        responders.append(responder)
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            print("--- \(responder.diagnostics.suffix(5_000))")
        }
        return responder
    }

    /// A gateway stapling (responder from the certificate's AIA), on the fleet's database when
    /// `server` is given, in a fresh state directory.
    private func startGateway(_ name: String, server: PostgresServer?) async throws -> StapleGateProcess {
        var sections = ["device_ocsp: { enabled: false }", "stapling: { retry_min: 1s, retry_max: 2s }"]
        if let server {
            sections.append("fleet: { store: postgres, url: \"\(server.url(database: "fleet"))\", tls: disable, instance: gw-\(name), pool_size: 2 }")
        }
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: sections, stapling: true)
        gateways.append(gateway)
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            print("--- gateway \(name) log ---\n\(gateway.output.suffix(20_000))")
        }
        return gateway
    }

    private func waitForSharedStaple(_ server: PostgresServer) async throws {
        var rows = ""
        try await waitUntil(timeout: .seconds(15), "a staple in the fleet's table", details: { rows }) {
            rows = try await server.psql("SELECT certificate_sha256, cert_status, written_by FROM staples", database: "fleet")
            return rows.contains("|good|gw-A")
        }
    }

    private func handshakeAskingForStatus(_ gateway: StapleGateProcess) async throws -> String {
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: "device-1", extraArgs: ["-status"])
        try await client.waitForOutput("Cipher is")
        let result = try await client.finish(timeout: .seconds(10))
        return result.stdout + result.stderr
    }
}
