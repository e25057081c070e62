import Dispatch
import Foundation
@testable import StapleGateOCSP
import TestSupport
import XCTest

/// The device-status cache: LRU rules in memory, and the SQLite store behind it.
final class OCSPStatusCacheTests: XCTestCase {
    /// Far in the future and on whole seconds: the store purges rows expired by the real clock,
    /// and keeps dates to the millisecond.
    let now = Date(timeIntervalSince1970: 4_000_000_000)
    var directory: TemporaryDirectory!

    override func setUpWithError() throws {
        directory = try TemporaryDirectory(prefix: "ocsp-cache")
    }

    override func tearDown() {
        directory.remove()
    }

    func certID(_ serial: UInt8, issuer: UInt8 = 1) -> CertID {
        CertID(issuerNameHash: [UInt8](repeating: issuer, count: 20),
               issuerKeyHash: [UInt8](repeating: issuer &+ 100, count: 20), serialNumber: [0x0A, serial])
    }

    func status(_ id: CertID, _ outcome: CachedOCSPStatus.Outcome = .good, checked: TimeInterval = 0,
                        expires: TimeInterval = 3600) -> CachedOCSPStatus {
        let checkedAt = now + checked
        let answered = !{ if case .failed = outcome { return true } else { return false } }()
        return CachedOCSPStatus(certID: id, outcome: outcome, thisUpdate: answered ? checkedAt - 60 : nil,
                                nextUpdate: answered ? checkedAt + 7200 : nil, checkedAt: checkedAt,
                                expiresAt: checkedAt + expires, responderURL: "http://ocsp.example:8080",
                                subject: "CN=device-\(id.serialHex)")
    }

    func openStore() throws -> OCSPCacheStore {
        try OCSPCacheStore(path: directory.file("state/ocsp-cache.sqlite"))
    }

    // MARK: Memory

    func testHitAndMiss() {
        let cache = OCSPStatusCache(capacity: 10)
        let entry = status(certID(1))
        cache.insert(entry)
        XCTAssertEqual(cache.lookup(certID(1), now: now), entry)
        XCTAssertNil(cache.lookup(certID(2), now: now))
        XCTAssertNil(cache.lookup(certID(1, issuer: 2), now: now), "same serial, other issuer")
        XCTAssertEqual(cache.count, 1)
    }

    /// A lookup in flight when a recheck got "revoked" finishes after it: its older answer does
    /// not bring "good" back, and its failure does not wipe the revocation; a newer answer
    /// replaces it (a certificate on hold, released), and a failure still replaces "good".
    func testAnAnswerOlderThanTheOneHeldDoesNotReplaceIt() {
        let cache = OCSPStatusCache(capacity: 10)
        cache.insert(status(certID(1), .revoked(at: now - 30, reason: nil)), now: now)
        cache.insert(status(certID(1), .good, checked: -5), now: now)
        XCTAssertEqual(cache.peek(certID(1))?.outcome, .revoked(at: now - 30, reason: nil), "an older good")
        cache.insert(status(certID(1), .failed("connection refused"), checked: 5), now: now)
        XCTAssertEqual(cache.peek(certID(1))?.outcome, .revoked(at: now - 30, reason: nil), "a failure")
        cache.insert(status(certID(1), .good, checked: 5), now: now)
        XCTAssertEqual(cache.peek(certID(1))?.outcome, .good, "a newer answer")
        cache.insert(status(certID(1), .failed("timed out"), checked: 6), now: now)
        XCTAssertEqual(cache.peek(certID(1))?.outcome, .failed("timed out"), "a failure after good, as before")
    }

    func testAnEntryExpiresAtExactlyExpiresAtAndIsThenDropped() {
        let cache = OCSPStatusCache(capacity: 10)
        cache.insert(status(certID(1), expires: 100))
        XCTAssertNotNil(cache.lookup(certID(1), now: now + 99.999))
        XCTAssertNil(cache.lookup(certID(1), now: now + 100))
        XCTAssertEqual(cache.count, 0)
        XCTAssertNil(cache.peek(certID(1)))
    }

    func testPeekReturnsExpiredEntriesWithoutTouchingRecency() {
        let cache = OCSPStatusCache(capacity: 2)
        cache.insert(status(certID(1), expires: 10))
        cache.insert(status(certID(2)))
        XCTAssertEqual(cache.peek(certID(1))?.certID, certID(1), "expired at now + 10 but still there")
        XCTAssertEqual(cache.entries().map(\.certID), [certID(2), certID(1)], "peek did not refresh it")
        cache.insert(status(certID(3)))
        XCTAssertNil(cache.peek(certID(1)), "still the least recently used, so evicted")
    }

    func testALookupRefreshesRecencySoTheUntouchedEntryIsEvicted() {
        let cache = OCSPStatusCache(capacity: 3)
        for serial: UInt8 in 1...3 { cache.insert(status(certID(serial))) }
        XCTAssertNotNil(cache.lookup(certID(1), now: now))
        cache.insert(status(certID(4)))
        XCTAssertNil(cache.peek(certID(2)), "2 was the least recently used")
        XCTAssertEqual(cache.entries().map(\.certID), [certID(4), certID(1), certID(3)])
        cache.insert(status(certID(5)))
        XCTAssertEqual(cache.entries().map(\.certID), [certID(5), certID(4), certID(1)])
        XCTAssertEqual(cache.count, 3)
    }

    func testCapacityOne() {
        let cache = OCSPStatusCache(capacity: 1)
        cache.insert(status(certID(1)))
        cache.insert(status(certID(2)))
        XCTAssertNil(cache.lookup(certID(1), now: now))
        XCTAssertNotNil(cache.lookup(certID(2), now: now))
        cache.insert(status(certID(2), .unknown))
        XCTAssertEqual(cache.entries().map(\.outcome), [.unknown])
    }

    func testReplacingKeepsOneEntryAndMakesItNewest() {
        let cache = OCSPStatusCache(capacity: 3)
        cache.insert(status(certID(1)))
        cache.insert(status(certID(2)))
        let revoked = status(certID(1), .revoked(at: now - 10, reason: .keyCompromise), checked: 5)
        cache.insert(revoked)
        XCTAssertEqual(cache.count, 2)
        XCTAssertEqual(cache.entries(), [revoked, status(certID(2))])
    }

    func testFailuresAreCachedInMemoryButNotPersisted() throws {
        let store = try openStore()
        let cache = OCSPStatusCache(capacity: 10, store: store)
        let answer = status(certID(1))
        cache.insert(answer)
        let failure = status(certID(1), .failed("connection refused"), checked: 30, expires: 60)
        cache.insert(failure)
        cache.insert(status(certID(2), .failed("timed out")))
        XCTAssertEqual(cache.lookup(certID(1), now: now + 30), failure)
        XCTAssertEqual(cache.count, 2)
        store.flush()
        XCTAssertEqual(try store.loadAll(notExpiredAt: now), [answer], "the last verified answer stays on disk")
        store.save(status(certID(3), .failed("refused")))
        store.flush()
        XCTAssertEqual(try store.loadAll(notExpiredAt: now).count, 1)
        XCTAssertNil(store.lastWriteError)
    }

    // MARK: Persistence

    func testARestartedCacheLoadsWhatWasPersisted() throws {
        let revoked = status(certID(1), .revoked(at: now - 86400, reason: .keyCompromise), checked: 30)
        let revokedWithoutReason = status(certID(2), .revoked(at: now - 3600, reason: nil), checked: 20)
        let good = status(certID(3), .good, checked: 10)
        let unknown = status(certID(4, issuer: 9), .unknown, checked: 0)
        let expired = status(certID(5), .good, checked: 40, expires: -1)
        do {
            let cache = OCSPStatusCache(capacity: 10, store: try openStore())
            for entry in [unknown, good, revokedWithoutReason, revoked, expired] { cache.insert(entry) }
            cache.store?.flush()
        }
        let cache = OCSPStatusCache(capacity: 10, store: try openStore())
        XCTAssertEqual(try cache.loadPersisted(now: now + 45), 4)
        XCTAssertEqual(cache.entries(), [revoked, revokedWithoutReason, good, unknown],
                       "every field back, most recently checked first, the expired one left out")
        XCTAssertEqual(cache.lookup(certID(1), now: now + 45)?.outcome, .revoked(at: now - 86400, reason: .keyCompromise))
        XCTAssertEqual(try cache.loadPersisted(now: now + 45), 0, "what memory has is not reloaded")
        XCTAssertEqual(try OCSPStatusCache(capacity: 10).loadPersisted(now: now), 0, "no store, nothing to load")
    }

    func testLoadPersistedRespectsTheCapacityKeepingTheMostRecentlyChecked() throws {
        let store = try openStore()
        let writer = OCSPStatusCache(capacity: 10, store: store)
        for serial: UInt8 in 1...5 { writer.insert(status(certID(serial), checked: Double(serial))) }
        store.flush()
        let cache = OCSPStatusCache(capacity: 3, store: store)
        XCTAssertEqual(try cache.loadPersisted(now: now), 3)
        XCTAssertEqual(cache.entries().map(\.certID), [certID(5), certID(4), certID(3)])
    }

    func testSaveReturnsAtOnceAndFlushMakesItVisible() throws {
        let store = try openStore()
        let started = Date()
        for serial in 0..<1000 {
            let id = CertID(issuerNameHash: [1], issuerKeyHash: [2], serialNumber: [UInt8(serial >> 8), UInt8(serial & 0xFF), 1])
            store.save(status(id, checked: Double(serial)))
        }
        let elapsed = Date().timeIntervalSince(started)
        // A thousand separate transactions would take far longer than queueing a thousand items.
        XCTAssertLessThan(elapsed, 1.0)
        store.flush()
        let loaded = try store.loadAll(notExpiredAt: now)
        XCTAssertEqual(loaded.count, 1000)
        XCTAssertEqual(loaded.first?.checkedAt, now + 999, "most recently checked first")
        XCTAssertNil(store.lastWriteError)
        XCTAssertEqual(store.writeErrorCount, 0)
    }

    func testRowsExpiredByTheClockArePurgedOnFlush() throws {
        let store = try openStore()
        let real = Date()
        var stale = status(certID(1))
        stale.checkedAt = real - 7200
        stale.expiresAt = real - 3600
        store.save(stale)
        store.save(status(certID(2)))
        store.flush()
        XCTAssertEqual(try store.loadAll(notExpiredAt: .distantPast).map(\.certID), [certID(2)])
    }

    func testAStoreThatCannotBeCreatedNamesItsPath() throws {
        let file = try directory.write("afile", "not a folder")
        let path = "\(file)/db.sqlite"
        XCTAssertThrowsError(try OCSPCacheStore(path: path)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix("cannot open the OCSP cache \(path): "), text)
        }
    }

    // MARK: Concurrency

    func testConcurrentLookupsAndInsertsStayWithinCapacity() throws {
        let store = try openStore()
        let cache = OCSPStatusCache(capacity: 100, store: store)
        let base = now
        let largestCount = NSLock()
        var largest = 0
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            var seen = 0
            var generator = SystemRandomNumberGenerator()
            for step in 0..<10_000 {
                let id = CertID(issuerNameHash: [UInt8(thread % 2)], issuerKeyHash: [7],
                                serialNumber: [UInt8.random(in: 0...149, using: &generator)])
                if step % 3 == 0 {
                    let outcome: CachedOCSPStatus.Outcome = step % 7 == 0 ? .failed("busy") : .good
                    cache.insert(CachedOCSPStatus(certID: id, outcome: outcome, thisUpdate: nil, nextUpdate: nil,
                                                  checkedAt: base, expiresAt: base + Double(step % 50),
                                                  responderURL: "http://ocsp", subject: "CN=load"))
                } else if step % 101 == 0 {
                    _ = cache.entries()
                } else {
                    _ = cache.lookup(id, now: base + Double(step % 60))
                }
                seen = max(seen, cache.count)
            }
            largestCount.lock()
            largest = max(largest, seen)
            largestCount.unlock()
        }
        XCTAssertLessThanOrEqual(largest, 100)
        XCTAssertLessThanOrEqual(cache.count, 100)
        XCTAssertEqual(cache.entries().count, cache.count)
        store.flush()
        XCTAssertNil(store.lastWriteError)
    }
}
