import Dispatch
import Logging
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import StapleGateOCSP
@testable import StapleGateServer
import StapleGateTLS
import TestSupport
import XCTest

/// The session cap's bookkeeping (`LiveSessions.reserveSlot`): slots up to the cap, given back
/// when the connection closes, never over-sold under concurrent reservations; and each refusal
/// counted and logged without one line per device.
final class SessionCapTests: XCTestCase {
    func testSlotsAreGivenUpToTheCapAndTheRestRefusedAndCounted() throws {
        let metrics = TestMetrics()
        let sessions = LiveSessions(capacity: 3, logger: Logger.recording(into: LogRecorder()), metricsFactory: metrics)
        let keys = (0..<5).map { _ in Key() }
        XCTAssertEqual(keys.map { sessions.reserveSlot($0.id) }, [true, true, true, false, false])
        XCTAssertEqual(sessions.slotsTaken, 3)
        XCTAssertTrue(sessions.reserveSlot(keys[0].id), "a slot already held is held, not taken twice")
        XCTAssertEqual(sessions.slotsTaken, 3)
        XCTAssertEqual(try metrics.expectCounter("staplegate_sessions_refused_total", [("reason", "session_cap")]).totalValue, 2)
        XCTAssertEqual(sessions.capReachedReason, "session cap of 3 reached")

        sessions.releaseSlot(keys[1].id)
        XCTAssertTrue(sessions.reserveSlot(keys[3].id), "a slot given back goes to the next device")
        XCTAssertFalse(sessions.reserveSlot(keys[4].id))
        XCTAssertEqual(try metrics.expectCounter("staplegate_sessions_refused_total", [("reason", "session_cap")]).totalValue, 3)
    }

    func testWithoutACapEveryDeviceGetsASlotAndNothingIsCounted() throws {
        let metrics = TestMetrics()
        let sessions = LiveSessions(capacity: nil, metricsFactory: metrics)
        let keys = (0..<1000).map { _ in Key() }
        XCTAssertTrue(keys.allSatisfy { sessions.reserveSlot($0.id) })
        XCTAssertThrowsError(try metrics.expectCounter("staplegate_sessions_refused_total", [("reason", "session_cap")]))
    }

    /// The slot follows the connection: closing it frees the slot, whether the device was only
    /// being admitted or its session registered too (which takes no second slot).
    func testClosingTheConnectionGivesTheSlotBack() throws {
        let sessions = LiveSessions(capacity: 1, logger: Logger.recording(into: LogRecorder()), metricsFactory: TestMetrics())
        let first = EmbeddedChannel()
        XCTAssertTrue(sessions.reserveSlot(for: first))
        let second = EmbeddedChannel()
        XCTAssertFalse(sessions.reserveSlot(for: second))
        XCTAssertNoThrow(try first.close().wait())
        first.embeddedEventLoop.run()
        XCTAssertEqual(sessions.slotsTaken, 0)

        XCTAssertTrue(sessions.reserveSlot(for: second))
        XCTAssertTrue(sessions.admitted(second, certificate: try Self.certificate(), identity: "device-1", connectionID: 2))
        XCTAssertEqual(sessions.count, 1)
        XCTAssertEqual(sessions.slotsTaken, 1, "the admitted session keeps the slot it reserved")
        XCTAssertNoThrow(try second.close().wait())
        second.embeddedEventLoop.run()
        XCTAssertEqual(sessions.count, 0)
        XCTAssertEqual(sessions.slotsTaken, 0)
    }

    /// A session is closed, and counted closed, by one closer only, even while its channel has not
    /// finished closing: a fleet gateway got a device's refusal and, behind it, the operator's
    /// close request for the same device, and reported its one session closed twice. Closed,
    /// the session can no longer be claimed; a new one on the same channel object can.
    func testEachSessionIsClaimedForClosingOnce() throws {
        let sessions = LiveSessions(capacity: nil, logger: Logger.recording(into: LogRecorder()), metricsFactory: TestMetrics())
        let certificate = try Self.certificate()
        let channels = (0..<2).map { _ in EmbeddedChannel() }
        for (index, channel) in channels.enumerated() {
            XCTAssertTrue(sessions.admitted(channel, certificate: certificate, identity: "device-1", connectionID: UInt64(index)))
        }
        let live = sessions.all
        XCTAssertEqual(sessions.claimForClosing([live[0]]).map(\.connectionID), [live[0].connectionID])
        XCTAssertEqual(sessions.claimForClosing(live).map(\.connectionID), [live[1].connectionID],
                       "the session claimed already is not claimed again")
        XCTAssertEqual(sessions.claimForClosing(live).count, 0)
        XCTAssertEqual(sessions.count, 2, "claimed sessions stay listed until their channel has closed")

        for channel in channels {
            XCTAssertNoThrow(try channel.close().wait())
            channel.embeddedEventLoop.run()
        }
        XCTAssertEqual(sessions.count, 0)
        XCTAssertEqual(sessions.claimForClosing(live).count, 0, "a session that has ended is not claimed")

        // Two closers at the same moment, many times: each session goes to one of them.
        for round in 0..<200 {
            let channel = EmbeddedChannel()
            XCTAssertTrue(sessions.admitted(channel, certificate: certificate, identity: "device-1", connectionID: 9))
            let session = try XCTUnwrap(sessions.all.first)
            let claims = NIOLockedValueBox(0)
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                claims.withLockedValue { $0 += sessions.claimForClosing([session]).count }
            }
            XCTAssertEqual(claims.withLockedValue { $0 }, 1, "round \(round)")
            XCTAssertNoThrow(try channel.close().wait())
            channel.embeddedEventLoop.run()
        }
    }

    /// Many threads reserving at once never get more slots than the cap, and with one slot left
    /// two devices at the same moment never both get it.
    func testConcurrentReservationsNeverExceedTheCap() {
        let sessions = LiveSessions(capacity: 100, logger: Logger.recording(into: LogRecorder()), metricsFactory: TestMetrics())
        let keys = (0..<2000).map { _ in Key() }
        let granted = NIOLockedValueBox(0)
        DispatchQueue.concurrentPerform(iterations: keys.count) { index in
            if sessions.reserveSlot(keys[index].id) { granted.withLockedValue { $0 += 1 } }
        }
        XCTAssertEqual(granted.withLockedValue { $0 }, 100)
        XCTAssertEqual(sessions.slotsTaken, 100)

        for round in 0..<500 {
            let pair = LiveSessions(capacity: 2, logger: Logger.recording(into: LogRecorder()), metricsFactory: TestMetrics())
            let holder = Key()  // kept alive with the contenders: identifiers of freed objects are reused
            XCTAssertTrue(pair.reserveSlot(holder.id))  // cap − 1 taken
            let contenders = [Key(), Key()]
            let admitted = NIOLockedValueBox(0)
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                if pair.reserveSlot(contenders[index].id) { admitted.withLockedValue { $0 += 1 } }
            }
            XCTAssertEqual(admitted.withLockedValue { $0 }, 1, "round \(round)")
            withExtendedLifetime(holder) {}
        }
    }

    /// A flood of refusals makes one warning per interval, each with the count since the last.
    func testRefusalsAreLoggedAtMostOncePerIntervalWithACount() throws {
        let recorder = LogRecorder()
        let clock = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        let metrics = TestMetrics()
        let refusals = SessionCapRefusals(capacity: 3, logger: Logger.recording(into: recorder), metricsFactory: metrics,
                                          logInterval: .seconds(1), now: { clock.withLockedValue { $0 } })
        refusals.refused()
        for _ in 0..<4 {
            clock.withLockedValue { $0 = $0 + .milliseconds(200) }
            refusals.refused()
        }
        XCTAssertEqual(recorder.entries.count, 1, recorder.text)
        clock.withLockedValue { $0 = $0 + .milliseconds(200) }  // 1 s after the first line
        refusals.refused()

        let warnings = recorder.entries
        XCTAssertEqual(warnings.map(\.level), [.warning, .warning])
        XCTAssertEqual(warnings.map(\.message), [
            "session cap of 3 reached: refused 1 device (CONNACK \"server busy\")",
            "session cap of 3 reached: refused 5 devices (CONNACK \"server busy\")",
        ])
        XCTAssertEqual(warnings.map { $0.metadata["refused"] }, ["1", "5"])
        XCTAssertEqual(warnings.map { $0.metadata["max_sessions"] }, ["3", "3"])
        XCTAssertEqual(try metrics.expectCounter("staplegate_sessions_refused_total", [("reason", "session_cap")]).totalValue, 6,
                       "every refusal is counted, logged or not")
    }

    func testAutomaticCapLeavesTheReserveAndTwoDescriptorsPerSession() {
        XCTAssertEqual(SessionCapacity.automatic(openFileLimit: 262_144), 131_008)
        XCTAssertEqual(SessionCapacity.automatic(openFileLimit: 1024), 448)
        XCTAssertEqual(SessionCapacity.automatic(openFileLimit: 100), 1, "a tiny limit still allows one session")
    }

    func testResolvingLogsTheCapAndWarnsWhenAnExplicitOneExceedsTheDescriptors() throws {
        let recorder = LogRecorder()
        let logger = Logger.recording(into: recorder)
        let openFiles = try XCTUnwrap(SessionCapacity.currentOpenFileLimit())
        XCTAssertEqual(SessionCapacity.resolve(.automatic, logger: logger), SessionCapacity.automatic(openFileLimit: openFiles))
        XCTAssertTrue(recorder.contains("listen.max_sessions: auto; open-files limit \(openFiles)"), recorder.text)
        XCTAssertEqual(SessionCapacity.resolve(.fixed(3), logger: logger), 3)
        XCTAssertFalse(recorder.entries.contains { $0.level == .warning }, recorder.text)
        let tooMany = Int(openFiles)  // needs twice as many descriptors
        XCTAssertEqual(SessionCapacity.resolve(.fixed(tooMany), logger: logger), tooMany)
        XCTAssertTrue(recorder.entries.contains { $0.level == .warning && $0.message.contains("raise LimitNOFILE") }, recorder.text)
    }

    /// A recheck's bar (`LiveSessions.bar`): while it lasts, a session with the barred certificate
    /// does not register (the device is refused) and takes no slot; another certificate does;
    /// once the admission window has passed, the bar is gone. The window only ever widens.
    func testABarredCertificateCannotRegisterUntilTheAdmissionWindowHasPassed() throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let device = try PEMFile.certificateChain(at: pki.certificate("device-1"))
        let other = try PEMFile.certificateChain(at: pki.certificate("device-2"))[0]
        let certID = try CertID(certificate: device[0], issuer: device[1])
        let sessions = LiveSessions(capacity: nil, metricsFactory: TestMetrics())
        sessions.widenAdmissionWindow(to: .seconds(30))
        sessions.widenAdmissionWindow(to: .seconds(5))  // narrower: ignored
        let start = NIODeadline.now()
        sessions.bar(certID, now: start)

        let barred = EmbeddedChannel()
        XCTAssertFalse(sessions.admitted(barred, certificate: device[0], identity: "device-1", connectionID: 1,
                                         now: start + .seconds(29)))
        XCTAssertEqual(sessions.count, 0)
        XCTAssertEqual(sessions.slotsTaken, 0, "a refused registration takes no slot")
        XCTAssertTrue(sessions.admitted(EmbeddedChannel(), certificate: other, identity: "device-2", connectionID: 2,
                                        now: start + .seconds(29)), "negative control: another certificate")
        XCTAssertTrue(sessions.admitted(EmbeddedChannel(), certificate: device[0], identity: "device-1", connectionID: 3,
                                        now: start + .seconds(31)), "after the window, the cache's answer decides again")
        XCTAssertEqual(sessions.count, 2)
        // What a closer finds since it looked: the sessions registered after its mark, only.
        let mark = sessions.registrationMark
        XCTAssertEqual(sessions.registered(after: mark).count, 0)
        XCTAssertTrue(sessions.admitted(EmbeddedChannel(), certificate: other, identity: "device-2", connectionID: 4,
                                        now: start + .seconds(31)))
        XCTAssertEqual(sessions.registered(after: mark).map(\.connectionID), [4])
        XCTAssertEqual(sessions.registered(after: 0).count, 3)
    }

    private static func certificate() throws -> X509Certificate {
        let pki = try TestPKI()
        defer { pki.remove() }
        return try PEMFile.certificateChain(at: pki.certificate("device-1"))[0]
    }
}

/// An object whose identity stands for a connection; kept alive so no two keys are equal.
private final class Key {
    var id: ObjectIdentifier { ObjectIdentifier(self) }
}
