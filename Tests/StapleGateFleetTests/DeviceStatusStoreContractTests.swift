import Foundation
import StapleGateFleet
import StapleGateOCSP
import TestSupport
import XCTest

/// What `OCSPStatusCache` relies on from any `DeviceStatusStore`, checked through the protocol
/// against both implementations: the SQLite file and PostgreSQL. Each test runs its body once
/// per store, each store fresh.
final class DeviceStatusStoreContractTests: FleetStoreTestCase {
    /// `body` with a new SQLite store, then with a new PostgreSQL store (each test's own database).
    private func forEachStore(_ body: (any DeviceStatusStore, String) async throws -> Void) async throws {
        try await body(try openSQLiteStore(), "sqlite")
        try await body(try openPostgresStore(), "postgres")
    }

    func testSavedAnswersAreLoadedNewestFirstAndFailuresAreNotKept() async throws {
        try await forEachStore { store, kind in
            let revokedAt = now - 86400
            let saved = [
                status(certID(1), checked: 0, identity: "dev-1"),
                status(certID(2), .revoked(at: revokedAt, reason: .keyCompromise), checked: 10),
                status(certID(3), .unknown, checked: 20),
                status(certID(4), .revoked(at: revokedAt, reason: nil), checked: 30),
            ]
            for entry in saved { store.save(entry) }
            store.save(status(certID(5), .failed("responder down"), checked: 40))
            store.flush()
            XCTAssertNil(store.lastWriteError, kind)
            XCTAssertEqual(store.writeErrorCount, 0, kind)
            XCTAssertEqual(try store.loadAll(notExpiredAt: now), saved.reversed(), kind)
            XCTAssertEqual(try store.loadAll(notExpiredAt: now + 3615), [saved[3], saved[2]], "\(kind): expired rows are not loaded")
        }
    }

    func testAStatusIsFoundByItsCertIDWhileValid() async throws {
        try await forEachStore { store, kind in
            let entry = status(certID(1), identity: "dev-1")
            store.save(entry)
            store.save(status(certID(1, issuer: 2), .unknown))
            store.flush()
            let found = try await store.status(for: certID(1), now: now)
            XCTAssertEqual(found, entry, kind)
            let other = try await store.status(for: certID(1, issuer: 2), now: now)
            XCTAssertEqual(other?.outcome, .unknown, "\(kind): same serial, other issuer")
            let missing = try await store.status(for: certID(9), now: now)
            XCTAssertNil(missing, kind)
            let expired = try await store.status(for: certID(1), now: now + 3600)
            XCTAssertNil(expired, "\(kind): not after expiresAt")
        }
    }

    func testASaveReplacesTheRowAndADeleteForgetsIt() async throws {
        try await forEachStore { store, kind in
            store.save(status(certID(1)))
            let newer = status(certID(1), .revoked(at: now, reason: .superseded), checked: 5)
            store.save(newer)
            store.save(status(certID(2)))
            store.delete(certID(2))
            store.flush()
            XCTAssertEqual(try store.loadAll(notExpiredAt: now), [newer], kind)
        }
    }

    func testStatusesMatchingASelectorSeeQueuedWrites() async throws {
        try await forEachStore { store, kind in
            let first = status(certID(1), identity: "dev-1")
            let second = status(certID(2), checked: 10, identity: "dev-1")
            store.save(first)
            store.save(second)
            store.save(status(certID(3), identity: "dev-2"))
            // No flush: a selection first waits for what is queued.
            let byIdentity = try await store.statuses(matching: .identity("dev-1"))
            XCTAssertEqual(byIdentity, [second, first], kind)
            let bySerial = try await store.statuses(matching: .serial(certID(3).serialHex))
            XCTAssertEqual(bySerial.map(\.identity), ["dev-2"], kind)
            let none = try await store.statuses(matching: .identity("nobody"))
            XCTAssertEqual(none, [], kind)
        }
    }

    func testTheCacheWarmsFromTheStoreAndFindsEvictedEntriesThere() async throws {
        try await forEachStore { store, kind in
            store.save(status(certID(1), checked: 0))
            store.save(status(certID(2), checked: 10))
            store.flush()
            let cache = OCSPStatusCache(capacity: 1, store: store)
            XCTAssertEqual(try cache.loadPersisted(now: now), 1, kind)
            XCTAssertEqual(cache.lookup(certID(2), now: now)?.checkedAt, now + 10, "\(kind): the newest fits")
            XCTAssertNil(cache.lookup(certID(1), now: now), kind)
            let fromStore = await cache.lookUpInStore(certID(1), now: now, timeout: .seconds(5))
            XCTAssertEqual(fromStore?.certID, certID(1), "\(kind): a miss in memory finds the row in the store")
            XCTAssertEqual(cache.lookup(certID(1), now: now)?.certID, certID(1), "\(kind): and keeps it in memory")
        }
    }

    /// A miss in memory reads the store only where it can find something: always in a fleet's
    /// database (another gateway writes there), and in the gateway's own file only once memory
    /// has let go of an entry (before, everything in the file is in memory too: the read was
    /// a few percent of a device's first connect for nothing).
    func testAMissReadsTheStoreOnlyWhereItMayHoldMore() async throws {
        for (kind, open) in [("sqlite", { try self.openSQLiteStore() as any DeviceStatusStore }),
                             ("postgres", { try self.openPostgresStore() as any DeviceStatusStore })] {
            let store = try open(), otherWriter = try open()
            store.save(status(certID(1), checked: 0))
            store.flush()
            let cache = OCSPStatusCache(capacity: 2, store: store)
            XCTAssertEqual(try cache.loadPersisted(now: now), 1, kind)
            otherWriter.save(status(certID(2), checked: 10))
            otherWriter.flush()
            let written = try await store.status(for: certID(2), now: now)
            XCTAssertNotNil(written, "\(kind): the row is there")
            let found = await cache.lookUpInStore(certID(2), now: now, timeout: .seconds(5))
            XCTAssertEqual(found?.certID, kind == "postgres" ? certID(2) : nil, kind)

            cache.insert(status(certID(3), checked: 20))
            cache.insert(status(certID(4), checked: 30))  // pushes out the oldest (1, or 2 if found)
            store.flush()
            let evicted = kind == "postgres" ? certID(2) : certID(1)
            XCTAssertNil(cache.lookup(evicted, now: now), kind)
            let readBack = await cache.lookUpInStore(evicted, now: now, timeout: .seconds(5))
            XCTAssertEqual(readBack?.certID, evicted, "\(kind): after an eviction the store is read on a miss")
        }
    }

    /// After an operator's recheck got no answer, the old answer must not come back from the
    /// store on the next miss, even while its deletion is still queued.
    func testAnAnswerTheCacheDiscardedIsNotReadBackFromTheStore() async throws {
        try await forEachStore { store, kind in
            let cache = OCSPStatusCache(capacity: 10, store: store)
            cache.insert(status(certID(1)))
            store.flush()
            cache.discardAnswer(for: certID(1))
            let afterDiscard = await cache.lookUpInStore(certID(1), now: now, timeout: .seconds(5))
            XCTAssertNil(afterDiscard, kind)
            let newer = status(certID(1), .revoked(at: now, reason: .keyCompromise), checked: 5)
            cache.insert(newer)
            store.flush()
            let evictedAndReadBack = OCSPStatusCache(capacity: 10, store: store)
            let found = await evictedAndReadBack.lookUpInStore(certID(1), now: now, timeout: .seconds(5))
            XCTAssertEqual(found, newer, "\(kind): a new answer is read as usual")
        }
    }
}
