import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// Real `staplegate run` gateways on a fleet store: a real `openssl ocsp` responder behind a
/// `CountingTCPProxy` (which counts the gateways' requests), a PostgreSQL 15 of the test's own,
/// and what the tests read from both. Everything started here is stopped in tearDown.
class FleetGatewayTestCase: GatewayTestCase {
    private(set) var responder: OCSPResponder?
    private(set) var proxy: CountingTCPProxy?
    private(set) var postgres: PostgresServer?
    /// Guarded by `lock`: a test may start several gateways at once.
    private var gateways: [StapleGateProcess] = []
    private let lock = NSLock()

    override func tearDown() async throws {
        let started = lock.withLock { () -> [StapleGateProcess] in defer { gateways = [] }; return gateways }
        for gateway in started { await gateway.stop() }
        await proxy?.stop()
        proxy = nil
        await responder?.stop()
        responder = nil
        await postgres?.remove()
        postgres = nil
        try await super.tearDown()
    }

    func startResponderBehindProxy() async throws -> CountingTCPProxy {
        responder = try await OCSPResponder.start(pki: pki)
        let proxy = try await CountingTCPProxy.start(forwardingTo: pki.ocspPort)
        self.proxy = proxy
        return proxy
    }

    /// A PostgreSQL of this test's own, with the database `fleet`.
    func startPostgres(tls: PostgresServer.TLS? = nil) async throws -> PostgresServer {
        let server = try await PostgresServer.start(tls: tls)
        postgres = server
        try await server.createDatabase("fleet")
        return server
    }

    /// The real binary asking `proxy` about devices; `fleet` is the `fleet` section's value
    /// (nil: none, today's SQLite file in its own state directory).
    func startGateway(_ name: String, proxy: CountingTCPProxy, fleet: String?) async throws -> StapleGateProcess {
        var sections = ["device_ocsp:\n  responder: \"\(proxy.url)\""]
        if let fleet { sections.append("fleet: \(fleet)") }
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: sections)
        lock.withLock { gateways.append(gateway) }
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            let lines = gateway.process.stderr.lines
            print("--- gateway \(name) log (last 100 of \(lines.count) lines) ---\n\(lines.suffix(100).joined(separator: "\n"))")
        }
        return gateway
    }

    func postgresFleet(_ server: PostgresServer, instance: String, extra: String = "") -> String {
        "{ store: postgres, url: \"\(server.url(database: "fleet"))\", tls: disable, instance: \(instance), pool_size: 2\(extra) }"
    }

    func connect(_ device: String, to gateway: StapleGateProcess) async throws -> [TLSDeviceSwarm.Result] {
        try await TLSDeviceSwarm.connect(port: gateway.port, devices: [(certificate: pki.certificate(device), key: pki.key(device))],
                                         trustBundle: pki.caChain, timeout: .seconds(20))
    }

    /// Until the gateway's write-behind has put `count` rows in the shared table.
    func waitForSharedRows(_ server: PostgresServer, count: Int, timeout: Duration = .seconds(10)) async throws {
        var rows = ""
        try await waitUntil(timeout: timeout, "\(count) device statuses in PostgreSQL", details: { rows }) {
            rows = (try? await server.psql("SELECT serial_hex, outcome, written_by FROM device_ocsp_status", database: "fleet")) ?? ""
            return rows.split(separator: "\n").count >= count
        }
    }

    /// Until the shared table holds a row for `device`'s certificate.
    func waitForSharedRow(of device: String, in server: PostgresServer, timeout: Duration = .seconds(30)) async throws {
        // Leading zeros apart (DER may pad a serial with one), the two spell it alike.
        let serial = String(try TestPKI.serialHex(ofCertificateAt: pki.certificate(device)).uppercased().drop { $0 == "0" })
        var rows = ""
        try await waitUntil(timeout: timeout, "the status of \(device) (serial \(serial)) in PostgreSQL", details: { rows }) {
            rows = (try? await server.psql("SELECT ltrim(upper(serial_hex), '0') FROM device_ocsp_status", database: "fleet")) ?? ""
            return rows.split(separator: "\n").contains { $0 == serial }
        }
    }

    // MARK: Admin endpoints

    /// /readyz: the HTTP status and the body's `fleetDatabase` object.
    func readiness(_ gateway: StapleGateProcess) async throws -> (status: Int, ready: Bool, database: [String: Any]) {
        let response = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/readyz")
        let body = try response.json()
        return (response.status, body["ready"] as? Bool ?? false, body["fleetDatabase"] as? [String: Any] ?? [:])
    }

    /// Until /readyz reports the fleet database in `state`; the last answer.
    @discardableResult
    func waitForDatabaseState(_ state: String, on gateway: StapleGateProcess,
                              timeout: Duration = .seconds(60)) async throws -> (status: Int, ready: Bool, database: [String: Any]) {
        var last: (status: Int, ready: Bool, database: [String: Any]) = (0, false, [:])
        try await waitUntil(timeout: timeout, "/readyz to report the fleet database \(state)", details: { "\(last)" }) {
            last = try await self.readiness(gateway)
            return last.database["state"] as? String == state
        }
        return last
    }

    /// One sample of /metrics (a series without labels), or nil when absent.
    func metric(_ name: String, of gateway: StapleGateProcess) async throws -> Double? {
        let scrape = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        for line in scrape.body.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}
