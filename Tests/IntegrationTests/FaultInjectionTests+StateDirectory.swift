import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The state directory full (a 16 MiB tmpfs, filled up once the gateway runs): devices keep
/// connecting and publishing; the trace and OCSP cache writes that fail are counted in
/// `/metrics` and logged at a limited rate; once there is room again the OCSP cache file holds
/// every answer given meanwhile, so that after a crash, with the responder down, the devices
/// checked while the disk was full are admitted from it.
extension FaultInjectionTests {
    func testAFullStateDirectoryCostsDevicesNothingAndTheOCSPCacheIsCompleteOnceThereIsRoomAgain() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let directory = try makeTemporaryDirectory()
        let state = try Self.mountSmallTmpfs(at: directory.file("state"), self)

        let gateway = try await startStapleGate(directory: directory, deviceChecks: true)
        let root = uniqueTopic("fault/state-full")
        let (subscriber, publisher, publishing) = try await steadySession(through: gateway, root: root, directory: directory)
        // device-1's answer is in the file before the disk fills (the writer batches for 100 ms).
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(100), "device-1's answer in the trace") {
            try await self.metricValue("staplegate_trace_events_written_total", of: gateway) >= 4
        }

        // The disk fills up.
        let filler = "\(state)/filler"
        let dd = try await ManagedProcess("dd", ["if=/dev/zero", "of=\(filler)", "bs=64k"]).commandResult(timeout: .seconds(30))
        XCTAssertTrue(dd.stderr.contains("No space left on device"), "\(dd)")

        // New devices are checked, admitted and relayed; their answers and traces cannot be written.
        try await newDevicePublishes("device-2", through: gateway, to: subscriber, topic: "\(root)/new", message: "while full 2")
        try await newDevicePublishes("device-3", through: gateway, to: subscriber, topic: "\(root)/new", message: "while full 3")
        // Several retries of the cache's writer (one every 2 s), for the log's rate.
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(250), "failed writes counted",
                            details: { gateway.output.suffix(5_000).description }) {
            let cacheFailures = try await self.metricValue("staplegate_device_ocsp_cache_write_failures_total", of: gateway)
            let dropped = try await self.metricValue("staplegate_trace_events_dropped_total", of: gateway)
            return cacheFailures >= 3 && dropped >= 1
        }
        let cacheWarnings = logLines(gateway, containing: "cannot write the OCSP cache")
        XCTAssertEqual(cacheWarnings.count, 1, "once a minute at most:\n\(cacheWarnings.joined(separator: "\n"))")
        XCTAssertTrue(cacheWarnings.first?.contains("database or disk is full") ?? false, "\(cacheWarnings)")
        XCTAssertEqual(logLines(gateway, containing: "trace store failing").count, 1, gateway.output)

        // Room again: the kept answers are written (on the writer's next try), traces resume.
        try FileManager.default.removeItem(atPath: filler)
        try await gateway.waitForOutput("is written again", timeout: .seconds(30))
        try await newDevicePublishes("device-2", through: gateway, to: subscriber, topic: "\(root)/new", message: "room again")
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(250), "device-2's session in the trace again") {
            let trace = try await gateway.command(["trace", "device-2"])
            return trace.stdout.contains("room again") || trace.stdout.contains("connected to the broker")
        }

        // Nothing lost on the session that was open all along.
        try await assertNothingLost(publisher, publishing: publishing, subscriber: subscriber)

        try await assertCheckedDevicesSurviveACrash(gateway, directory: directory, responder: responder, topic: "\(root)/restart",
                                                    while: "the disk was full")
        print("FaultInjectionTests state directory full: \(publisher.sent) QoS 1 messages relayed; the log said:\n"
              + (logLines(gateway, containing: "OCSP cache") + logLines(gateway, containing: "trace store")).joined(separator: "\n"))
    }

    /// Mounts a 16 MiB tmpfs at `path` (created), unmounted at the end of `test`; skips the test
    /// where mounting is not allowed (not root, or a container without CAP_SYS_ADMIN).
    static func mountSmallTmpfs(at path: String, _ test: XCTestCase) throws -> String {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", path]
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else { throw XCTSkip("cannot mount a tmpfs at \(path) (needs root)") }
        // Registered before the gateway's own teardown, so it runs after the gateway has stopped.
        test.addTeardownBlock {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = ["--lazy", path]
            try? umount.run()
            umount.waitUntilExit()
        }
        return path
    }
}
