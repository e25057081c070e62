import Foundation
@testable import StapleGateOCSP
import TestSupport
import XCTest

/// What an operator's recheck finds in the device-status cache: every certificate of a device
/// identity or serial, in memory and on disk; how a serial may be typed; dropping an answer.
extension OCSPStatusCacheTests {
    private func status(_ id: CertID, identity: String?, checked: TimeInterval = 0) -> CachedOCSPStatus {
        var entry = status(id, checked: checked)
        entry.identity = identity
        return entry
    }

    func testStatusesMatchingAnIdentityOrSerialComeFromMemoryAndFromTheStore() async throws {
        let store = try openStore()
        // Room for two in memory: the first two inserted live on disk only.
        let cache = OCSPStatusCache(capacity: 2, store: store)
        cache.insert(status(certID(1), identity: "dev-a", checked: 1))
        cache.insert(status(certID(0xAB, issuer: 2), identity: "dev-d", checked: 2))
        cache.insert(status(certID(2), identity: "dev-a", checked: 3))
        cache.insert(status(certID(0xAB), identity: "dev-c", checked: 4))
        XCTAssertEqual(cache.entries().map(\.certID), [certID(0xAB), certID(2)])

        let deviceA = try await cache.statuses(matching: .identity("dev-a"))
        XCTAssertEqual(deviceA.map(\.certID), [certID(2), certID(1)], "in memory first, then the store's")
        XCTAssertEqual(deviceA.map(\.identity), ["dev-a", "dev-a"])
        let serial = try await cache.statuses(matching: .serial("0AAB"))
        XCTAssertEqual(Set(serial.map(\.certID)), [certID(0xAB), certID(0xAB, issuer: 2)], "every issuer")
        let nobody = try await cache.statuses(matching: .identity("dev-z"))
        XCTAssertEqual(nobody, [])
        let otherSerial = try await cache.statuses(matching: .serial("0A09"))
        XCTAssertEqual(otherSerial, [])
    }

    func testWithoutAStoreOnlyMemoryIsSearched() async throws {
        let cache = OCSPStatusCache(capacity: 1)
        cache.insert(status(certID(1), identity: "dev-a"))
        cache.insert(status(certID(2), identity: "dev-a"))
        let found = try await cache.statuses(matching: .identity("dev-a"))
        XCTAssertEqual(found.map(\.certID), [certID(2)])
    }

    func testDiscardingAnAnswerForgetsItInMemoryAndOnDiskButKeepsAFailure() async throws {
        let store = try openStore()
        let cache = OCSPStatusCache(capacity: 10, store: store)
        cache.insert(status(certID(1), identity: "dev-a"))
        cache.insert(status(certID(2), identity: "dev-b"))
        cache.discardAnswer(for: certID(1))
        XCTAssertNil(cache.peek(certID(1)))
        store.flush()
        XCTAssertEqual(try store.loadAll(notExpiredAt: now).map(\.certID), [certID(2)])

        // A failure replaced the answer in memory (the disk keeps the answer): the failure stays
        // in memory until it expires, the answer on disk goes.
        let failure = status(certID(2), .failed("connection refused"), checked: 10, expires: 30)
        cache.insert(failure)
        cache.discardAnswer(for: certID(2))
        XCTAssertEqual(cache.peek(certID(2)), failure)
        store.flush()
        XCTAssertEqual(try store.loadAll(notExpiredAt: now), [])
        let found = try await cache.statuses(matching: .identity("dev-b"))
        XCTAssertEqual(found, [], "the failure carries no identity of its own here, and the disk row is gone")
    }

    func testIdentitiesSurviveARestart() throws {
        let store = try openStore()
        let cache = OCSPStatusCache(capacity: 10, store: store)
        cache.insert(status(certID(1), identity: "dev-a"))
        store.flush()
        let reopened = OCSPStatusCache(capacity: 10, store: try openStore())
        XCTAssertEqual(try reopened.loadPersisted(now: now), 1)
        XCTAssertEqual(reopened.peek(certID(1))?.identity, "dev-a")
    }

    /// A cache file written before identities were recorded (the first schema, made here with
    /// Python's sqlite3) is migrated in place: its rows load, without an identity.
    func testACacheFileFromBeforeIdentitiesIsMigrated() throws {
        let path = directory.file("old.sqlite")
        let script = """
        import sqlite3, sys
        db = sqlite3.connect(sys.argv[1])
        db.executescript('''
        CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
        INSERT INTO grdb_migrations VALUES ('device_ocsp_status');
        CREATE TABLE device_ocsp_status (issuer_name_hash BLOB NOT NULL, issuer_key_hash BLOB NOT NULL,
          serial BLOB NOT NULL, serial_hex TEXT NOT NULL, outcome TEXT NOT NULL, revoked_at DATETIME,
          revocation_reason TEXT, this_update DATETIME, next_update DATETIME, checked_at DATETIME NOT NULL,
          expires_at DATETIME NOT NULL, responder_url TEXT NOT NULL, subject TEXT NOT NULL,
          PRIMARY KEY (issuer_name_hash, issuer_key_hash, serial));
        INSERT INTO device_ocsp_status VALUES (zeroblob(20), zeroblob(20), X'0A01', '0A01', 'good', NULL, NULL,
          NULL, NULL, '2096-10-02 07:06:40.000', '2096-10-02 08:06:40.000', 'http://ocsp', 'CN=old');
        ''')
        db.commit()
        """
        let python = try ManagedProcess("python3", ["-c", script, path])
        XCTAssertEqual(try python.waitForExitBlocking(timeout: .seconds(20)), .exited(0), python.output)

        let store = try OCSPCacheStore(path: path)
        let rows = try store.loadAll(notExpiredAt: now)
        XCTAssertEqual(rows.map(\.subject), ["CN=old"])
        XCTAssertNil(rows.first?.identity)
        var updated = try XCTUnwrap(rows.first)
        updated.identity = "old"
        store.save(updated)
        store.flush()
        XCTAssertEqual(try store.loadAll(notExpiredAt: now).first?.identity, "old")
    }
}

/// How operators may type a serial: as `openssl x509 -serial` or `-text` prints it.
final class CertificateSelectorTests: XCTestCase {
    func testSerialSpellings() {
        for text in ["0AAB", "0aab", "AAB", "00AAB", "serial=0AAB", "0a:ab", "0x0aab", " 0AAB "] {
            XCTAssertEqual(CertificateSelector.serial(parsing: text), .serial("0AAB"), text)
        }
        XCTAssertEqual(CertificateSelector.serial(parsing: "0"), .serial("00"))
        XCTAssertEqual(CertificateSelector.serial(parsing: "5B1F03A2"), .serial("5B1F03A2"))
    }

    func testWhatIsNotASerialIsRefusedWithTheText() {
        for text in ["", "not-hex", "0AAG", ":", "serial="] {
            XCTAssertNil(CertificateSelector.serial(parsing: text), text)
            XCTAssertEqual(CertificateSelector.serialProblem(text),
                           "a serial number must be hexadecimal (e.g. 5B1F03A2 or 5b:1f:03:a2), not \"\(text)\"")
        }
        XCTAssertNil(CertificateSelector.serialProblem("0AAB"))
    }

    func testMatchingAConnectedCertificate() {
        XCTAssertTrue(CertificateSelector.serial("0AAB").matches(serialHex: "0AAB", identity: "x"))
        XCTAssertTrue(CertificateSelector.identity("dev-1").matches(serialHex: "01", identity: "dev-1"))
        XCTAssertFalse(CertificateSelector.identity("dev-1").matches(serialHex: "01", identity: "dev-10"))
        XCTAssertFalse(CertificateSelector.serial("0AAB").matches(serialHex: "0AAC", identity: "x"))
    }
}
