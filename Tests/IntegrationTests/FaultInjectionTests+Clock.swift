import Foundation
import TestSupport
import XCTest

/// The wall clock stepped under the running gateway, as NTP or a resumed VM steps it: forward past
/// its staple's nextUpdate, then back. The gateway, its responder and its devices share the
/// machine's clock (`FakeClock`: libfaketime reading an offset from a file, the monotonic clock
/// left alone). What clients see is judged with `openssl s_client -status` against that clock,
/// and with `staplegate simulate`, a libmosquitto device that demands a valid staple: an expired
/// staple is never served (none under the lenient policy until the refresh), the gateway
/// refreshes at once after either jump, and devices keep being admitted.
extension FaultInjectionTests {
    func testAClockJumpingPastTheStaplesNextUpdateNeverStaplesAnExpiredResponseAndBackItKeepsStapling() async throws {
        let directory = try makeTemporaryDirectory()
        let clock = try FakeClock(in: directory)
        let responder = try await OCSPResponder.start(pki: pki, clock: clock)
        addTeardownBlock { await responder.stop() }
        let gateway = try await startStapleGate(directory: directory, stapling: true, deviceChecks: true,
                                                environment: clock.environment)
        let root = uniqueTopic("fault/clock")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: "\(root)/#")
        addTeardownBlock { await subscriber.stop() }

        let first = try await staple(seenAt: gateway, clock: clock)
        guard case let .stapled(_, _, firstNextUpdate) = first.seen else {
            return XCTFail("no staple at the start:\n\(first.output)")
        }
        try await assertADeviceDemandingAStapleConnects(to: gateway, clock: clock)

        // Forward, five minutes past the staple's nextUpdate.
        let forward = Int(firstNextUpdate.timeIntervalSince(clock.now)) + 300
        try clock.jump(toOffset: forward)
        let jumpedAt = clock.now
        let afterForward = try await watchStaples(of: gateway, clock: clock, "a staple fetched after the jump forward") { seen in
            guard case let .stapled(_, thisUpdate, _) = seen else { return false }
            return thisUpdate >= jumpedAt.addingTimeInterval(-60)
        }
        try await newDevicePublishes("device-2", through: gateway, to: subscriber, topic: "\(root)/forward", message: "clock forward")
        try await assertADeviceDemandingAStapleConnects(to: gateway, clock: clock)

        // Back to the real time: the staple held now was made ten minutes "in the future".
        try clock.jump(toOffset: 0)
        let backAt = clock.now
        let afterBack = try await watchStaples(of: gateway, clock: clock, "a staple fetched after the jump back",
                                               stapledThroughout: true) { seen in
            guard case let .stapled(_, thisUpdate, _) = seen else { return false }
            return thisUpdate <= backAt.addingTimeInterval(60)
        }
        try await newDevicePublishes("device-3", through: gateway, to: subscriber, topic: "\(root)/back", message: "clock back")
        try await assertADeviceDemandingAStapleConnects(to: gateway, clock: clock)
        XCTAssertTrue(gateway.process.isRunning)
        let refreshes = logLines(gateway, containing: "OCSP staple refreshed").count
        XCTAssertGreaterThanOrEqual(refreshes, 3, "one at the start, one after each jump")
        print("FaultInjectionTests clock jumps: +\(forward) s then back; after the jump forward \(afterForward), "
              + "after the jump back \(afterBack); \(refreshes) refreshes")
    }

    // MARK: Helpers

    enum SeenStaple: CustomStringConvertible {
        case none
        case stapled(status: String, thisUpdate: Date, nextUpdate: Date)

        var description: String {
            switch self {
            case .none: return "no staple"
            case let .stapled(status, thisUpdate, nextUpdate): return "\(status), thisUpdate \(thisUpdate), nextUpdate \(nextUpdate)"
            }
        }
    }

    /// What `openssl s_client -status` (as device-1, on `clock`) was stapled.
    func staple(seenAt gateway: StapleGateProcess, clock: FakeClock) async throws -> (seen: SeenStaple, output: String) {
        let result = try await ManagedProcess("openssl", [
            "s_client", "-connect", "127.0.0.1:\(gateway.port)", "-servername", "localhost", "-CAfile", pki.caChain,
            "-cert", pki.certificate("device-1"), "-key", pki.key("device-1"), "-status",
        ], environment: clock.environment).commandResult(timeout: .seconds(30))
        let output = result.output
        if output.contains("OCSP response: no response sent") { return (.none, output) }
        func field(_ name: String) -> String? {
            output.split(separator: "\n").first { $0.contains(name) }
                .map { $0[$0.range(of: name)!.upperBound...].trimmingCharacters(in: .whitespaces) }
        }
        guard let status = field("Cert Status:"), let thisUpdate = field("This Update:").flatMap(Self.opensslDate),
              let nextUpdate = field("Next Update:").flatMap(Self.opensslDate) else {
            throw ReloadTestFailure("cannot read the staple s_client printed:\n\(output)")
        }
        return (.stapled(status: status, thisUpdate: thisUpdate, nextUpdate: nextUpdate), output)
    }

    /// "Dec  7 22:38:30 2026 GMT", as OpenSSL prints ASN.1 times.
    static func opensslDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "MMM d HH:mm:ss yyyy"
        let words = text.split(separator: " ").filter { $0 != "GMT" }
        return formatter.date(from: words.joined(separator: " "))
    }

    /// Handshakes with s_client until one sees what `done` wants (within 60 s), checking each
    /// (the processes see a jump at once: `FakeClock` has libfaketime re-read the file at every
    /// clock read): none stapled a response expired by the clock; with `stapledThroughout`, none
    /// came without a staple. Returns what the client saw and when.
    func watchStaples(of gateway: StapleGateProcess, clock: FakeClock, _ what: String, stapledThroughout: Bool = false,
                      until done: @escaping (SeenStaple) -> Bool) async throws -> String {
        let jumped = ContinuousClock.now
        var seen: [(after: Duration, staple: SeenStaple)] = []
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(250), what,
                            details: { seen.map { "\($0.after): \($0.staple)" }.joined(separator: "\n") }) {
            let (staple, output) = try await self.staple(seenAt: gateway, clock: clock)
            let after = ContinuousClock.now - jumped
            seen.append((after, staple))
            switch staple {
            case let .stapled(_, _, nextUpdate) where nextUpdate <= clock.now:
                throw ReloadTestFailure("an expired staple, \(after) after the jump (the clock reads \(clock.now)):\n\(output)")
            case .none where stapledThroughout:
                throw ReloadTestFailure("no staple \(after) after the jump:\n\(output)")
            default:
                return done(staple)
            }
        }
        let unstapled = seen.filter { if case .none = $0.staple { return true } else { return false } }.count
        return "\(seen.count) handshakes, \(unstapled) without a staple, the fresh one after \(seen.last?.after ?? .zero)"
    }

    /// `staplegate simulate`: libmosquitto with MOSQ_OPT_TLS_OCSP_REQUIRED, which refuses a staple
    /// that is missing, expired, or dated more than 5 min ahead of its clock (`clock`); it
    /// publishes and receives its message back. Tried until it succeeds, within 60 s.
    func assertADeviceDemandingAStapleConnects(to gateway: StapleGateProcess, clock: FakeClock) async throws {
        let executable = try CommandLineTests.findExecutable()
        var last: CommandResult?
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(500), "a device demanding a staple to connect",
                            details: { last.map { "\($0)" } ?? "" }) {
            last = try await ManagedProcess(executable, [
                "simulate", "--port", "\(gateway.port)", "--cafile", self.pki.caChain,
                "--cert", self.pki.certificate("device-1"), "--key", self.pki.key("device-1"),
                "--client-id", uniqueClientID("sim"),
            ], environment: clock.environment).commandResult(timeout: .seconds(30))
            return last?.status == .exited(0)
        }
    }
}
