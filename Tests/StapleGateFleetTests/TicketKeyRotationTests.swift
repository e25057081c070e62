import Foundation
import StapleGateFleet
import XCTest

/// The fleet's rotation rules, pure: when a key is due, from when it encrypts, and which keys a
/// gateway encrypts and decrypts with at a given time.
final class TicketKeyRotationTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 2_000_000_000)
    private let rotation = TicketKeyRotation(rotation: .seconds(12 * 3600))

    private func key(_ id: String, made hours: Double, activeAfter seconds: TimeInterval = 600) -> TicketKeyEntry {
        let created = t0 + hours * 3600
        return TicketKeyEntry(id: id, createdAt: created, activeFrom: created + seconds)
    }

    func testAKeyIsDueWhenThereIsNoneOrTheNewestIsARotationOld() {
        XCTAssertTrue(rotation.isDue([], now: t0))
        let keys = [key("a", made: 0), key("b", made: 12)]
        XCTAssertFalse(rotation.isDue(keys, now: t0 + 23.9 * 3600), "b is not 12 h old yet")
        XCTAssertTrue(rotation.isDue(keys, now: t0 + 24 * 3600))
        XCTAssertFalse(rotation.isDue(keys.reversed(), now: t0 + 23.9 * 3600), "the newest counts, whatever the order")
    }

    func testTheFirstKeyEncryptsAtOnceAndTheNextOnlyAfterTwoRefreshes() {
        XCTAssertEqual(rotation.refreshInterval, .seconds(300), "12 h: every 5 min (the cap)")
        XCTAssertEqual(rotation.activationDelay, .seconds(600))
        XCTAssertEqual(rotation.activeFrom(createdAt: t0, isFirst: true), t0)
        XCTAssertEqual(rotation.activeFrom(createdAt: t0, isFirst: false), t0 + 600)
        let fast = TicketKeyRotation(rotation: .seconds(6))
        XCTAssertEqual(fast.refreshInterval, .seconds(1), "at least a second")
        XCTAssertEqual(fast.activationDelay, .seconds(2))
        XCTAssertEqual(TicketKeyRotation(rotation: .seconds(600)).refreshInterval, .seconds(60), "a tenth of the rotation")
    }

    func testANewKeyDecryptsBeforeItEncryptsThenReplacesTheOldOne() throws {
        let first = key("a", made: 0, activeAfter: 0)
        let next = key("b", made: 12)
        let before = try XCTUnwrap(rotation.plan([first, next], now: next.createdAt + 1))
        XCTAssertEqual(before.encrypting, "a", "b is written but not active yet")
        XCTAssertEqual(before.decrypting, ["a", "b"], "b already decrypts: another gateway may switch first")
        let after = try XCTUnwrap(rotation.plan([first, next], now: next.activeFrom))
        XCTAssertEqual(after.encrypting, "b")
        XCTAssertEqual(after.decrypting, ["b", "a"], "a still decrypts the tickets it made")
        XCTAssertEqual(after.obsolete, [])
    }

    func testTwoPreviousKeysAreKeptAndOlderOnesAreObsolete() throws {
        let keys = (0..<5).map { key("k\($0)", made: Double($0) * 12) }
        let plan = try XCTUnwrap(rotation.plan(keys.shuffled(), now: t0 + 48 * 3600 + 601))
        XCTAssertEqual(plan.encrypting, "k4")
        XCTAssertEqual(plan.decrypting, ["k4", "k3", "k2"])
        XCTAssertEqual(Set(plan.obsolete), ["k1", "k0"])
    }

    func testWithOnlyKeysNotYetActiveTheSoonestEncryptsAndWithNoneThereIsNoPlan() throws {
        XCTAssertNil(rotation.plan([], now: t0))
        let plan = try XCTUnwrap(rotation.plan([key("late", made: 1), key("soon", made: 0)], now: t0))
        XCTAssertEqual(plan.encrypting, "soon")
        XCTAssertEqual(plan.decrypting, ["soon", "late"])
    }

    func testEveryGatewayAgreesOnKeysMadeAtTheSameInstant() throws {
        let same = [TicketKeyEntry(id: "x", createdAt: t0, activeFrom: t0), TicketKeyEntry(id: "y", createdAt: t0, activeFrom: t0)]
        XCTAssertEqual(rotation.plan(same, now: t0)?.encrypting, rotation.plan(same.reversed(), now: t0)?.encrypting)
    }
}
