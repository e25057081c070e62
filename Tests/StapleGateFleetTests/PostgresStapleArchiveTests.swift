import Foundation
import Logging
@testable import StapleGateFleet
@testable import StapleGateOCSP
import TestSupport
import XCTest

/// The fleet's staples table: what one gateway saved another reads, an older answer never
/// replaces a newer one, and a database that is gone is an error (the service then asks the
/// responder), not a hang.
final class PostgresStapleArchiveTests: FleetStoreTestCase {
    private func response(_ der: [UInt8], producedAt: Date) -> VerifiedOCSPResponse {
        VerifiedOCSPResponse(der: der, certID: certID(1), status: .good, thisUpdate: producedAt, nextUpdate: producedAt + 3600,
                             producedAt: producedAt, responderID: "CN=test responder")
    }

    func testAStapleOneGatewaySavedIsReadByAnother() async throws {
        let gatewayA = PostgresStapleArchive(database: try openDatabase(instance: "gw-a"), logger: Logger(label: "test"))
        let gatewayB = PostgresStapleArchive(database: try openDatabase(instance: "gw-b"), logger: Logger(label: "test"))
        let none = try await gatewayB.staple(fingerprint: "ab12")
        XCTAssertNil(none)
        try await gatewayA.save(response([1, 2, 3], producedAt: now), fingerprint: "ab12")
        let found = try await gatewayB.staple(fingerprint: "ab12")
        XCTAssertEqual(found, [1, 2, 3])
        let other = try await gatewayB.staple(fingerprint: "cd34")
        XCTAssertNil(other, "keyed by the certificate's fingerprint")
        let writer = try await postgres.psql("SELECT written_by, cert_status FROM staples", database: database)
        XCTAssertEqual(writer.trimmingCharacters(in: .whitespacesAndNewlines), "gw-a|good")
    }

    func testAnOlderStapleNeverReplacesANewerOne() async throws {
        let archive = PostgresStapleArchive(database: try openDatabase(), logger: Logger(label: "test"))
        try await archive.save(response([2], producedAt: now + 60), fingerprint: "ab12")
        try await archive.save(response([1], producedAt: now), fingerprint: "ab12")
        let kept = try await archive.staple(fingerprint: "ab12")
        XCTAssertEqual(kept, [2])
        try await archive.save(response([3], producedAt: now + 120), fingerprint: "ab12")
        let newer = try await archive.staple(fingerprint: "ab12")
        XCTAssertEqual(newer, [3])
    }

    func testWithTheDatabaseStoppedAReadFailsNamingIt() async throws {
        let database = try openDatabase()
        let archive = PostgresStapleArchive(database: database, logger: Logger(label: "test"))
        let server = try postgres
        await server.stop()
        var failure = ""
        do {
            _ = try await archive.staple(fingerprint: "ab12")
        } catch {
            failure = "\(error)"
        }
        // Once the database's health probe has noticed, a read fails at once (no timeout per
        // certificate at start).
        try await waitUntil(timeout: .seconds(15), "the health probe to notice") { database.health != .ready }
        let started = ContinuousClock.now
        var quick = ""
        do { _ = try await archive.staple(fingerprint: "ab12") } catch { quick = "\(error)" }
        let elapsed = ContinuousClock.now - started
        // Back up for the class's next tests (same cluster, same data).
        try await server.start()
        XCTAssertTrue(failure.contains("cannot read the staple in \(database.location)") || failure.contains(database.location), failure)
        XCTAssertTrue(quick.contains("the fleet database \(database.location)"), quick)
        XCTAssertLessThan(elapsed, .milliseconds(500))
    }
}
