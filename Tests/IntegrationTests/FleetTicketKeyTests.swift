import Foundation
import TestSupport
import XCTest

/// `tls.session_ticket_keys: fleet` end to end (issue 14): real `staplegate` processes on one
/// real PostgreSQL 15, `openssl s_client -sess_out` / `-sess_in` as the device, TLS 1.3 and
/// 1.2. The gateways rotate their keys through the database; a ticket from one resumes on the
/// other, before and after a rotation. A gateway with another secret cannot open the keys.
final class FleetTicketKeyTests: GatewayTestCase {
    private var postgres: PostgresServer?
    private var gateways: [StapleGateProcess] = []
    private var haproxy: HAProxy?
    private static let device = "device-1"

    override func tearDown() async throws {
        await haproxy?.stop()
        haproxy = nil
        for gateway in gateways { await gateway.stop() }
        gateways = []
        await postgres?.remove()
        postgres = nil
        try await super.tearDown()
    }

    // MARK: Tests

    func testATicketFromGatewayAResumesOnGatewayBUnderTheFleetsKeys() async throws {
        let server = try await startPostgres()
        let secret = try writeSecret()
        let gatewayA = try await startGateway("A", server: server, secret: secret)
        let gatewayB = try await startGateway("B", server: server, secret: secret)
        try await waitForFleetKeys(gatewayA)
        try await waitForFleetKeys(gatewayB)

        for version in ["1.3", "1.2"] {
            let session = try await ticket(from: gatewayA, tls: version)
            let resumed = try await present(session, to: gatewayB, tls: version)
            XCTAssertTrue(resumed.stdout.contains("Reused, TLSv\(version)"), "TLS \(version)\n\(resumed)")
        }
        try await gatewayB.waitForOutput("tls.resumed=true")
        let keys = try await server.psql("SELECT count(*) FROM ticket_keys", database: "fleet")
        XCTAssertEqual(keys.trimmingCharacters(in: .whitespacesAndNewlines), "1", "two gateways started together made one key")

        // What check-config says (and no secret).
        let checked = try await ManagedProcess(try CommandLineTests.findExecutable(), ["check-config", "--config", gatewayB.configPath])
            .commandResult(timeout: .seconds(20))
        XCTAssertTrue(checked.stdout.contains("tickets:   the fleet's keys in \(server.url(database: "fleet")), sealed with \(secret), rotated every"),
                      "\(checked)")

        // A reload builds new TLS contexts on the same fleet ring.
        let session = try await ticket(from: gatewayA, name: "before-reload")
        let reload = try await gatewayB.command(["reload"])
        XCTAssertTrue(reload.stdout.contains("session tickets: fleet keys from \(server.url(database: "fleet"))"), "\(reload)")
        let afterReload = try await present(session, to: gatewayB)
        XCTAssertTrue(afterReload.stdout.contains("Reused, TLSv1.3"), "after B's reload\n\(afterReload)")
    }

    /// As devices meet the fleet: through a real HAProxy 2.6 balancing round robin, a device's
    /// resumptions land on both gateways and each is a resumed session.
    func testBehindHAProxyADeviceResumesOnWhicheverGatewayItLandsOn() async throws {
        let server = try await startPostgres()
        let secret = try writeSecret()
        let gateways = [try await startGateway("A", server: server, secret: secret),
                        try await startGateway("B", server: server, secret: secret)]
        for gateway in gateways { try await waitForFleetKeys(gateway) }
        let port = try FreePort.next()
        let servers = gateways.enumerated().map { "    server gw\($0) 127.0.0.1:\($1.port)" }.joined(separator: "\n")
        let haproxy = try await HAProxy.start(port: port, sections: """
        frontend devices
            bind 127.0.0.1:\(port)
            log-format "device %ci:%cp via %s"
            default_backend gateways
        backend gateways
            balance roundrobin
        \(servers)
        """, in: try makeTemporaryDirectory())
        self.haproxy = haproxy

        let session = try makeTemporaryDirectory().file("session.pem")
        let first = try OpenSSLClient(port: port, pki: pki, device: Self.device, extraArgs: ["-sess_out", session, "-tls1_3"])
        try await waitUntil(timeout: .seconds(10), "s_client to save the session", details: { first.output }) {
            ((try? String(contentsOfFile: session, encoding: .utf8)) ?? "").contains("-----END SSL SESSION PARAMETERS-----")
        }
        _ = try await first.finish()
        for attempt in 1...3 {
            let client = try OpenSSLClient(port: port, pki: pki, device: Self.device, extraArgs: ["-sess_in", session, "-tls1_3"])
            try await client.waitForOutput("Cipher is")
            let resumed = try await client.finish()
            XCTAssertTrue(resumed.stdout.contains("Reused, TLSv1.3"), "resumption \(attempt)\n\(resumed)")
        }
        let landed = Set(haproxy.log.split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) }
            .filter { $0.hasPrefix("gw") })
        XCTAssertEqual(landed, ["gw0", "gw1"], haproxy.log)
    }

    /// Rotation every 6 s (a tenth of it, clamped to 1 s, between reads; a new key encrypts 2 s
    /// after it is written): a ticket made before the rotation resumes after it, on the other
    /// gateway too, and a ticket made after it on A resumes on B.
    func testTicketsResumeAcrossARotation() async throws {
        let server = try await startPostgres()
        let secret = try writeSecret()
        let gatewayA = try await startGateway("A", server: server, secret: secret, rotation: "6s")
        let gatewayB = try await startGateway("B", server: server, secret: secret, rotation: "6s")
        try await waitForFleetKeys(gatewayA)
        try await waitForFleetKeys(gatewayB)
        let before = try await ticket(from: gatewayA, name: "before")
        let firstKey = try await ticketKeyName(before)

        var after = ""
        var afterKey = firstKey
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(500), "gateway A to issue tickets under a new key",
                            details: { gatewayA.output.suffix(3000).description }) {
            after = try await ticket(from: gatewayA, name: "after")
            afterKey = try await ticketKeyName(after)
            return afterKey != firstKey
        }
        let keys = try await server.psql("SELECT id FROM ticket_keys", database: "fleet")
        XCTAssertTrue(keys.contains(firstKey) && keys.contains(afterKey), "both keys in the table:\n\(keys)")

        let oldOnB = try await present(before, to: gatewayB)
        XCTAssertTrue(oldOnB.stdout.contains("Reused, TLSv1.3"), "a ticket from before the rotation\n\(oldOnB)")
        let oldOnA = try await present(before, to: gatewayA)
        XCTAssertTrue(oldOnA.stdout.contains("Reused, TLSv1.3"), "\(oldOnA)")
        let newOnB = try await present(after, to: gatewayB)
        XCTAssertTrue(newOnB.stdout.contains("Reused, TLSv1.3"), "a ticket from after the rotation\n\(newOnB)")
        XCTAssertTrue(gatewayA.output.contains("made the fleet's next session ticket key")
                      || gatewayB.output.contains("made the fleet's next session ticket key"))
    }

    /// The negative control: gateway B's secret is another one, so it cannot open the fleet's
    /// keys, says which file is at fault, and serves with its own key meanwhile.
    func testAGatewayWithAnotherSecretCannotOpenTheKeysAndTicketsFromAAreFullHandshakesOnIt() async throws {
        let server = try await startPostgres()
        let gatewayA = try await startGateway("A", server: server, secret: try writeSecret())
        try await waitForFleetKeys(gatewayA)
        let wrong = try writeSecret(String(repeating: "w", count: 48))
        let gatewayB = try await startGateway("B", server: server, secret: wrong)
        try await gatewayB.waitForOutput("cannot be opened with fleet.secret_file \(wrong)", timeout: .seconds(15))
        XCTAssertTrue(gatewayB.output.contains("fleet keys not loaded yet"), gatewayB.output)

        let session = try await ticket(from: gatewayA)
        let other = try await present(session, to: gatewayB)
        XCTAssertTrue(other.stdout.contains("New, TLSv1.3"), "\(other)")
        XCTAssertFalse(other.stdout.contains("Reused"), "\(other)")
        let own = try await present(try await ticket(from: gatewayB, name: "own"), to: gatewayB)
        XCTAssertTrue(own.stdout.contains("Reused, TLSv1.3"), "B still resumes its own tickets\n\(own)")
    }

    /// Until the database answers, the gateway does TLS with a key of its own, and says so; once
    /// it answers, the fleet's keys take over, and the tickets made meanwhile still resume.
    func testWithTheDatabaseDownAtStartTheGatewayServesWithItsOwnKeyThenTakesTheFleets() async throws {
        let server = try await startPostgres()
        await server.stop()
        let gateway = try await startGateway("A", server: server, secret: try writeSecret())
        try await gateway.waitForOutput("session tickets: fleet keys not loaded yet from \(server.url(database: "fleet"))")
        let meanwhile = try await ticket(from: gateway, name: "meanwhile")

        try await server.start()
        try await gateway.waitForOutput("session tickets: fleet keys from", timeout: .seconds(40))
        let resumed = try await present(meanwhile, to: gateway)
        XCTAssertTrue(resumed.stdout.contains("Reused, TLSv1.3"), "the start key still decrypts\n\(resumed)")
    }

    // MARK: Helpers

    private func startPostgres() async throws -> PostgresServer {
        let server = try await PostgresServer.start()
        postgres = server
        try await server.createDatabase("fleet")
        return server
    }

    /// A secret file, mode 0600.
    private func writeSecret(_ text: String = "the fleet's secret for this test: 32 bytes and more\n") throws -> String {
        let path = try makeTemporaryDirectory().write("fleet.secret", text)
        XCTAssertEqual(chmod(path, 0o600), 0)
        return path
    }

    private func startGateway(_ name: String, server: PostgresServer, secret: String, rotation: String = "12h") async throws -> StapleGateProcess {
        let fleet = "fleet: { store: postgres, url: \"\(server.url(database: "fleet"))\", tls: disable, instance: gw-\(name), "
            + "pool_size: 2, secret_file: \"\(secret)\", ticket_key_rotation: \(rotation) }"
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: ["device_ocsp: { enabled: false }", fleet],
                                                        tls: ["session_ticket_keys: fleet"])
        gateways.append(gateway)
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            print("--- gateway \(name) log ---\n\(gateway.output.suffix(20_000))")
        }
        return gateway
    }

    private func waitForFleetKeys(_ gateway: StapleGateProcess) async throws {
        try await gateway.waitForOutput("session tickets: fleet keys from", timeout: .seconds(20))
    }

    /// A full handshake that saves the session (with its ticket); the session file's path.
    private func ticket(from gateway: StapleGateProcess, tls version: String = "1.3", name: String = "session") async throws -> String {
        let file = try makeTemporaryDirectory().file("\(name).pem")
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: Self.device,
                                       extraArgs: ["-sess_out", file] + versionArguments(version))
        try await waitUntil(timeout: .seconds(10), "s_client to save the session", details: { client.output }) {
            // s_client writes the session when a ticket arrives (after the handshake in TLS 1.3).
            ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").contains("-----END SSL SESSION PARAMETERS-----")
        }
        let full = try await client.finish()
        XCTAssertTrue(full.stdout.contains("New, TLSv\(version)"), "\(full)")
        return file
    }

    private func present(_ session: String, to gateway: StapleGateProcess, tls version: String = "1.3") async throws -> CommandResult {
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: Self.device,
                                       extraArgs: ["-sess_in", session] + versionArguments(version))
        try await client.waitForOutput("Cipher is")
        return try await client.finish()
    }

    private func versionArguments(_ version: String) -> [String] { version == "1.2" ? ["-tls1_2"] : ["-tls1_3"] }

    /// The name of the key that encrypted the ticket in a saved session (its first 16 bytes).
    private func ticketKeyName(_ session: String) async throws -> String {
        let dump = try await ManagedProcess("openssl", ["sess_id", "-in", session, "-noout", "-text"])
            .commandResult(timeout: .seconds(10)).stdout
        let lines = dump.split(separator: "\n")
        let start = try XCTUnwrap(lines.firstIndex { $0.contains("TLS session ticket:") }, dump)
        let first = try XCTUnwrap(lines[(start + 1)...].first { $0.contains("0000 - ") }, dump)
        let hex = first.components(separatedBy: "0000 - ")[1].prefix(47).replacingOccurrences(of: "-", with: " ")
        return hex.split(separator: " ").joined()
    }
}
