import Foundation
import Logging
import StapleGateFleet
import StapleGateOCSP
import TestSupport
import XCTest

/// `fleet.tls` against a real PostgreSQL 15 with `ssl=on`, a server certificate from the test
/// PKI (CN=localhost, SAN localhost/127.0.0.1/::1) and a pg_hba.conf that accepts TLS clients
/// only (so a connection that works is a TLS one). The server also listens on 127.0.0.2, an
/// address its certificate does not name.
final class PostgresTLSTests: XCTestCase {
    private static var server: PostgresServer?
    private static var pki: TestPKI?
    /// A CA that did not sign the server's certificate.
    private static var otherPKI: TestPKI?
    private static var startFailure: String?

    private var opened: [PostgresDeviceStatusStore] = []
    private var database = ""

    override class func setUp() {
        super.setUp()
        do {
            let pki = try TestPKI()
            self.pki = pki
            otherPKI = try TestPKI()
            server = try PostgresServer.startBlocking(
                tls: .init(certificate: pki.certificate("server"), key: pki.key("server"), required: true),
                listenAddresses: ["127.0.0.1", "127.0.0.2"])
        } catch {
            startFailure = "cannot start PostgreSQL with TLS: \(error)"
        }
    }

    override class func tearDown() {
        server?.stopBlocking()
        server?.directory.remove()
        server = nil
        pki?.remove()
        otherPKI?.remove()
        super.tearDown()
    }

    private var server: PostgresServer {
        get throws {
            guard let server = Self.server else { throw PostgresServer.Failure(description: Self.startFailure ?? "not started") }
            return server
        }
    }

    override func setUp() async throws {
        try await super.setUp()
        database = "t_" + UUID().uuidString.prefix(8).lowercased()
        try await server.createDatabase(database)
    }

    override func tearDown() async throws {
        for store in opened { store.close() }
        opened = []
        try await super.tearDown()
    }

    private func settings(host: String, tls: FleetConfiguration.TLSMode, caFile: String?) throws -> PostgresSettings {
        PostgresSettings(host: host, port: try server.port, user: PostgresServer.user, database: database, tls: tls,
                         caFile: caFile, instance: "gw-tls")
    }

    private func open(_ settings: PostgresSettings) throws -> PostgresDeviceStatusStore {
        let store = try PostgresDeviceStatusStore(settings: settings, logger: Logger(label: "test.fleet-tls"))
        opened.append(store)
        return store
    }

    /// Writes a status through `settings` and reads it back through a second connection pool.
    private func assertWritesAndReadsBack(_ settings: PostgresSettings, file: StaticString = #filePath, line: UInt = #line) async throws {
        let writer = try open(settings)
        let id = CertID(issuerNameHash: [UInt8](repeating: 1, count: 20), issuerKeyHash: [UInt8](repeating: 2, count: 20),
                        serialNumber: [0x0A, 0x01])
        let now = Date(timeIntervalSince1970: 4_000_000_000)
        let status = CachedOCSPStatus(certID: id, outcome: .good, thisUpdate: now - 60, nextUpdate: now + 7200, checkedAt: now,
                                      expiresAt: now + 3600, responderURL: "http://ocsp.example:8080", subject: "CN=device-1",
                                      identity: "device-1")
        writer.save(status)
        writer.flush()
        XCTAssertNil(writer.lastWriteError, file: file, line: line)
        let reader = try open(settings)
        let found = try await reader.status(for: id, now: now)
        XCTAssertEqual(found, status, file: file, line: line)
        let rows = try await server.psql("SELECT written_by FROM device_ocsp_status", database: database)
        XCTAssertEqual(rows.trimmingCharacters(in: .whitespacesAndNewlines), "gw-tls", file: file, line: line)
    }

    /// Opening a store through `settings` fails; the error, which names the database URL.
    private func openingFails(_ settings: PostgresSettings, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try open(settings)
            XCTFail("connected through \(settings.redactedURL) with tls \(settings.tls.rawValue)", file: file, line: line)
            return ""
        } catch {
            let text = "\(error)"
            XCTAssertTrue(text.contains("cannot set up the fleet database \(settings.redactedURL)"), text, file: file, line: line)
            return text
        }
    }

    // MARK: verify-full

    func testVerifyFullWithTheSigningCAAndANamedHostWritesAndReadsBack() async throws {
        let pki = try XCTUnwrap(Self.pki)
        try await assertWritesAndReadsBack(try settings(host: "localhost", tls: .verifyFull, caFile: pki.caChain))
    }

    /// An IP address in the URL is checked against the certificate's IP names (it may not be
    /// sent as SNI: it used to be, and every verify-full connection to an IP failed).
    func testVerifyFullToAnIPAddressTheCertificateNamesWorks() async throws {
        let pki = try XCTUnwrap(Self.pki)
        try await assertWritesAndReadsBack(try settings(host: "127.0.0.1", tls: .verifyFull, caFile: pki.caChain))
    }

    func testVerifyFullWithACAThatDidNotSignTheCertificateFailsNamingIt() throws {
        let other = try XCTUnwrap(Self.otherPKI)
        let text = openingFails(try settings(host: "localhost", tls: .verifyFull, caFile: other.caChain))
        XCTAssertTrue(text.contains("the server's certificate is not trusted"), text)
        XCTAssertTrue(text.contains("fleet.ca_file \(other.caChain)"), text)
        // Without ca_file the system's trust store is used, which does not hold the test CA either.
        let system = openingFails(try settings(host: "localhost", tls: .verifyFull, caFile: nil))
        XCTAssertTrue(system.contains("does not chain to the system's trust store"), system)
    }

    func testVerifyFullToAHostTheCertificateDoesNotNameFails() throws {
        let pki = try XCTUnwrap(Self.pki)
        let text = openingFails(try settings(host: "127.0.0.2", tls: .verifyFull, caFile: pki.caChain))
        XCTAssertTrue(text.contains("the server's certificate does not name 127.0.0.2"), text)
    }

    // MARK: require and disable

    /// require encrypts without checking who answers: no CA, and a host the certificate does not name.
    func testRequireWorksWithoutACA() async throws {
        try await assertWritesAndReadsBack(try settings(host: "127.0.0.2", tls: .require, caFile: nil))
    }

    func testDisableAgainstAServerThatRequiresTLSIsRefusedWithTheServersReason() throws {
        let text = openingFails(try settings(host: "127.0.0.1", tls: .disable, caFile: nil))
        XCTAssertTrue(text.contains("no pg_hba.conf entry"), text)
        XCTAssertTrue(text.contains("no encryption"), text)
    }

    /// What /readyz shows comes from the database's health, which carries the same reason.
    func testTheHealthOfADatabaseThatFailsTLSSaysWhy() async throws {
        let other = try XCTUnwrap(Self.otherPKI)
        let database = try FleetDatabase(settings: try settings(host: "localhost", tls: .verifyFull, caFile: other.caChain),
                                         logger: Logger(label: "test.fleet-tls"))
        defer { database.close() }
        let ready = await database.ready(within: .seconds(15), orFirstFailure: true)
        XCTAssertFalse(ready)
        guard case let .unreachable(reason) = database.health else { return XCTFail("health \(database.health)") }
        XCTAssertTrue(reason.contains("not trusted"), reason)
    }
}
