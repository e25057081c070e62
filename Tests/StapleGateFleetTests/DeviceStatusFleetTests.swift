import Foundation
import Logging
import StapleGateFleet
import StapleGateOCSP
import TestSupport
import XCTest

/// The fleet-wide single flight and announcements (`PostgresDeviceStatusFleet`) between two
/// "gateways" in this process, each with its own pool, on a real PostgreSQL 15.
final class DeviceStatusFleetTests: FleetStoreTestCase {
    private var fleets: [PostgresDeviceStatusFleet] = []
    private var databases: [FleetDatabase] = []

    override func tearDown() async throws {
        fleets.forEach { $0.close() }
        databases.forEach { $0.close() }
        fleets = []
        databases = []
        try await super.tearDown()
    }

    private func gateway(_ instance: String) async throws -> PostgresDeviceStatusFleet {
        var settings = try self.settings
        settings.instance = instance
        let database = try FleetDatabase(settings: settings, logger: Logger(label: "test.fleet"))
        databases.append(database)
        let ready = await database.ready(within: .seconds(20))
        XCTAssertTrue(ready, "\(database.health)")
        let fleet = PostgresDeviceStatusFleet(database: database, logger: Logger(label: "test.fleet"))
        fleets.append(fleet)
        return fleet
    }

    /// A status checked now (the lease and freshness use the database's clock, not `now`).
    private func fresh(_ id: CertID, _ outcome: CachedOCSPStatus.Outcome = .good, lifetime: TimeInterval = 3600) -> CachedOCSPStatus {
        let checked = Date()
        return CachedOCSPStatus(certID: id, outcome: outcome, thisUpdate: checked - 60, nextUpdate: checked + 7200,
                                checkedAt: checked, expiresAt: checked + lifetime, responderURL: "http://ocsp.example:8080",
                                subject: "CN=device", identity: "device")
    }

    func testOneGatewayAsksAndTheOtherTakesItsAnswer() async throws {
        let (a, b) = (try await gateway("gw-a"), try await gateway("gw-b"))
        let id = certID(1)
        let first = await a.turn(for: id, lease: .seconds(30), within: .seconds(5))
        XCTAssertEqual(first, .ask)
        async let waiting = b.turn(for: id, lease: .seconds(30), within: .seconds(20))
        let answer = fresh(id)
        await a.announce(answer)
        let second = await waiting
        guard case let .answered(status) = second else { return XCTFail("gw-b should take gw-a's answer, got \(second)") }
        XCTAssertEqual(status.certID, id)
        XCTAssertEqual(status.outcome, .good)
        // The answer stands: a third look is answered at once, and nobody holds the lease.
        let third = await a.turn(for: id, lease: .seconds(30), within: .seconds(1))
        XCTAssertEqual(third.isAnswered, true, "\(third)")
        let leases = try await postgres.psql("SELECT count(*) FROM device_ocsp_lookup", database: database)
        XCTAssertEqual(leases.trimmingCharacters(in: .whitespacesAndNewlines), "0")
    }

    func testAFailureStandsForTheOthersUntilItExpires() async throws {
        let (a, b) = (try await gateway("gw-a"), try await gateway("gw-b"))
        let id = certID(2)
        let asked = await a.turn(for: id, lease: .seconds(30), within: .seconds(5))
        XCTAssertEqual(asked, .ask)
        await a.announce(fresh(id, .failed("responder timed out after 5 s"), lifetime: 60))
        let seen = await b.turn(for: id, lease: .seconds(30), within: .seconds(5))
        guard case let .failedElsewhere(reason, _, by) = seen else { return XCTFail("expected gw-a's failure, got \(seen)") }
        XCTAssertEqual(reason, "responder timed out after 5 s")
        XCTAssertEqual(by, "gw-a")
        // Without a failure lifetime the failure does not stand: the next gateway asks itself.
        let other = certID(3)
        _ = await a.turn(for: other, lease: .seconds(30), within: .seconds(5))
        await a.announce(fresh(other, .failed("refused"), lifetime: 0))
        let retry = await b.turn(for: other, lease: .seconds(30), within: .seconds(5))
        XCTAssertEqual(retry, .ask)
    }

    /// A holder that dies asking keeps the others waiting only until its lease runs out.
    func testALeaseNotGivenBackIsTakenOverWhenItRunsOut() async throws {
        let (a, b) = (try await gateway("gw-a"), try await gateway("gw-b"))
        let id = certID(4)
        let asked = await a.turn(for: id, lease: .seconds(1), within: .seconds(5))
        XCTAssertEqual(asked, .ask)
        let taken = await b.turn(for: id, lease: .seconds(30), within: .seconds(20))
        XCTAssertEqual(taken, .ask, "gw-b takes the turn over")
        let holder = try await postgres.psql("SELECT holder FROM device_ocsp_lookup", database: database)
        XCTAssertEqual(holder.trimmingCharacters(in: .whitespacesAndNewlines), "gw-b")
    }

    func testARefusalAndACloseRequestReachTheOtherGatewayWhichReplies() async throws {
        let (a, b) = (try await gateway("gw-a"), try await gateway("gw-b"))
        var heard = b.announcements().makeAsyncIterator()
        let id = certID(5)
        // A good answer is not a refusal: only the revoked one below is announced as one.
        await a.announce(fresh(certID(6)))
        await a.announce(fresh(id, .revoked(at: Date() - 60, reason: .keyCompromise)))
        let refusal = await heard.next()
        XCTAssertEqual(refusal, FleetAnnouncement(kind: .refused, certID: id, origin: "gw-a"))

        // gw-a waits for gw-b's heartbeat before it expects gw-b's reply.
        try await waitUntil(timeout: .seconds(10), "gw-b's heartbeat") {
            (try await self.postgres.psql("SELECT instance FROM fleet_instance", database: self.database)).contains("gw-b")
        }
        async let replies = a.closeSessions(of: [id], within: .seconds(10))
        let request = await heard.next()
        guard case let .closeRequest(requestID)? = request?.kind else { return XCTFail("expected a close request, got \(String(describing: request))") }
        XCTAssertEqual(request?.certID, id)
        let closed = FleetSessionsClosed(instance: "gw-b", serial: id.serialHex, closed: 2, addresses: ["10.0.0.7:5000", "10.0.0.8:5001"])
        await b.reply(to: requestID, closed)
        let received = await replies
        XCTAssertEqual(received, [closed])
    }

    func testWithTheDatabaseAwayEveryGatewayAsksAtOnce() async throws {
        let server = try await PostgresServer.start()
        try await server.createDatabase("fleet")
        let database = try FleetDatabase(settings: PostgresSettings(host: "127.0.0.1", port: server.port, user: PostgresServer.user,
                                                                     database: "fleet", tls: .disable, instance: "gw-a"),
                                         logger: Logger(label: "test.fleet"))
        databases.append(database)
        let ready = await database.ready(within: .seconds(20))
        XCTAssertTrue(ready)
        let fleet = PostgresDeviceStatusFleet(database: database, logger: Logger(label: "test.fleet"))
        fleets.append(fleet)
        await server.remove()
        try await waitUntil(timeout: .seconds(20), "the database to be seen as gone") { database.health != .ready }
        let turn = await fleet.turn(for: certID(7), lease: .seconds(30), within: .seconds(20))
        XCTAssertEqual(turn, .ask)
    }
}

private extension FleetLookupTurn {
    var isAnswered: Bool {
        if case .answered = self { return true }
        return false
    }
}

extension DeviceStatusFleetTests {
    /// A gateway that restarts finds its own lease from before: it takes it at once instead of
    /// waiting for it to run out.
    func testAGatewayRestartedTakesItsOwnLeftoverLease() async throws {
        let before = try await gateway("gw-a")
        let id = certID(8)
        let first = await before.turn(for: id, lease: .seconds(600), within: .seconds(5))
        XCTAssertEqual(first, .ask)
        let after = try await gateway("gw-a")
        let started = ContinuousClock.now
        let again = await after.turn(for: id, lease: .seconds(600), within: .seconds(30))
        XCTAssertEqual(again, .ask)
        XCTAssertLessThan(started.duration(to: .now), .seconds(25), "not a wait for the 10-minute lease to run out")
    }
}
