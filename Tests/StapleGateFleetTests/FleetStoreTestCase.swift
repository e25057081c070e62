import Foundation
import Logging
import StapleGateFleet
import StapleGateOCSP
import TestSupport
import XCTest

/// One real PostgreSQL 15 per test class (started in class setUp, stopped in class tearDown),
/// a database of its own per test, and the statuses the tests store.
class FleetStoreTestCase: XCTestCase {
    private static var sharedServer: PostgresServer?
    private static var startFailure: String?

    var postgres: PostgresServer {
        get throws {
            guard let server = Self.sharedServer else { throw PostgresServer.Failure(description: Self.startFailure ?? "not started") }
            return server
        }
    }

    /// Far in the future and on whole seconds: the stores purge rows expired by the real clock,
    /// SQLite keeps dates to the millisecond and PostgreSQL to the microsecond.
    let now = Date(timeIntervalSince1970: 4_000_000_000)
    var directory: TemporaryDirectory!
    var database = ""
    private var opened: [PostgresDeviceStatusStore] = []
    private var databases: [FleetDatabase] = []

    override class func setUp() {
        super.setUp()
        do {
            sharedServer = try PostgresServer.startBlocking()
        } catch {
            startFailure = "cannot start PostgreSQL: \(error)"
        }
    }

    override class func tearDown() {
        sharedServer?.stopBlocking()
        sharedServer?.directory.remove()
        sharedServer = nil
        super.tearDown()
    }

    override func setUp() async throws {
        try await super.setUp()
        directory = try TemporaryDirectory(prefix: "fleet-store")
        // A database per test: tests never see each other's rows or migrations.
        database = "t_" + UUID().uuidString.prefix(8).lowercased()
        try await postgres.createDatabase(database)
    }

    override func tearDown() async throws {
        for store in opened { store.close() }
        opened = []
        for database in databases { database.close() }
        databases = []
        directory.remove()
        try await super.tearDown()
    }

    var settings: PostgresSettings {
        get throws {
            PostgresSettings(host: "127.0.0.1", port: try postgres.port, user: PostgresServer.user, database: database,
                             tls: .disable, instance: "test-gateway")
        }
    }

    /// A store on this test's database, closed at the end of the test.
    func openPostgresStore(instance: String = "test-gateway") throws -> PostgresDeviceStatusStore {
        var settings = try self.settings
        settings.instance = instance
        let store = try PostgresDeviceStatusStore(settings: settings, logger: Logger(label: "test.fleet-store"))
        opened.append(store)
        return store
    }

    /// The fleet's database as a gateway opens it, its tables ready; closed at the end of the test.
    func openDatabase(instance: String = "test-gateway") throws -> FleetDatabase {
        var settings = try self.settings
        settings.instance = instance
        let database = try FleetDatabase(settings: settings, logger: Logger(label: "test.fleet-database"))
        databases.append(database)
        XCTAssertTrue(database.readyBlocking(within: .seconds(15)), "\(database.health)")
        return database
    }

    func openSQLiteStore() throws -> OCSPCacheStore {
        try OCSPCacheStore(path: directory.file("state/ocsp-cache.sqlite"))
    }

    func certID(_ serial: UInt8, issuer: UInt8 = 1) -> CertID {
        CertID(issuerNameHash: [UInt8](repeating: issuer, count: 20),
               issuerKeyHash: [UInt8](repeating: issuer &+ 100, count: 20), serialNumber: [0x0A, serial])
    }

    func status(_ id: CertID, _ outcome: CachedOCSPStatus.Outcome = .good, checked: TimeInterval = 0,
                expires: TimeInterval = 3600, identity: String? = nil) -> CachedOCSPStatus {
        let checkedAt = now + checked
        let answered = !{ if case .failed = outcome { return true } else { return false } }()
        return CachedOCSPStatus(certID: id, outcome: outcome, thisUpdate: answered ? checkedAt - 60 : nil,
                                nextUpdate: answered ? checkedAt + 7200 : nil, checkedAt: checkedAt,
                                expiresAt: checkedAt + expires, responderURL: "http://ocsp.example:8080",
                                subject: "CN=device-\(id.serialHex)", identity: identity)
    }
}
