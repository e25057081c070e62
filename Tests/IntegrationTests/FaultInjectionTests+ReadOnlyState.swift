import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The state directory turned read-only under the running gateway, and back: devices keep
/// connecting and publishing; the trace and OCSP cache writes that fail are counted in
/// `/metrics` and logged at a limited rate; once it is writable again the OCSP cache file holds
/// every answer given meanwhile (after a crash, with the responder down, those devices are
/// admitted from it).
///
/// Read-only the way a running process meets it: its files are open for writing, so neither a
/// remount nor a read-only bind mount is allowed (EBUSY), and permissions are only checked at
/// open. The immutable attribute (`chattr +i`, ext4) refuses writes through descriptors already
/// open (EPERM), on the SQLite databases, their WAL files and the directory. The `-shm` WAL
/// index is left alone: SQLite maps it, and a write fault on an immutable mapping is SIGBUS,
/// where a file system that fails to read-only (ext4 `errors=remount-ro`) lets mapped pages be
/// written in memory.
extension FaultInjectionTests {
    func testAReadOnlyStateDirectoryCostsDevicesNothingAndTheOCSPCacheIsCompleteOnceWritableAgain() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let directory = try makeTemporaryDirectory()
        let gateway = try await startStapleGate(directory: directory, deviceChecks: true)
        let state = gateway.stateDirectory
        let root = uniqueTopic("fault/state-read-only")
        let (subscriber, publisher, publishing) = try await steadySession(through: gateway, root: root, directory: directory)
        // device-1's answer is in the file before it turns read-only (the writer batches for 100 ms).
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(100), "device-1's answer in the trace") {
            try await self.metricValue("staplegate_trace_events_written_total", of: gateway) >= 4
        }

        // Read-only.
        let frozen = try Self.makeImmutable(state, self)
        XCTAssertTrue(frozen.contains { $0.hasSuffix("ocsp-cache.sqlite") } && frozen.contains { $0.hasSuffix("trace.sqlite") },
                      "\(frozen)")
        XCTAssertThrowsError(try Data("x".utf8).write(to: URL(fileURLWithPath: "\(state)/probe")), "the directory is still writable")

        // New devices are checked, admitted and relayed; their answers and traces cannot be written.
        try await newDevicePublishes("device-2", through: gateway, to: subscriber, topic: "\(root)/new", message: "read-only 2")
        try await newDevicePublishes("device-3", through: gateway, to: subscriber, topic: "\(root)/new", message: "read-only 3")
        // Several retries of the cache's writer (one every 2 s), for the log's rate.
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(250), "failed writes counted",
                            details: { gateway.output.suffix(5_000).description }) {
            let cacheFailures = try await self.metricValue("staplegate_device_ocsp_cache_write_failures_total", of: gateway)
            let dropped = try await self.metricValue("staplegate_trace_events_dropped_total", of: gateway)
            return cacheFailures >= 3 && dropped >= 1
        }
        let cacheWarnings = logLines(gateway, containing: "cannot write the OCSP cache")
        XCTAssertEqual(cacheWarnings.count, 1, "once a minute at most:\n\(cacheWarnings.joined(separator: "\n"))")
        XCTAssertEqual(logLines(gateway, containing: "trace store failing").count, 1, gateway.output)
        XCTAssertTrue(gateway.process.isRunning)

        // Writable again: the kept answers are written (on the writer's next try), traces resume.
        try Self.clearImmutable(frozen)
        try await gateway.waitForOutput("is written again", timeout: .seconds(30))
        try await newDevicePublishes("device-2", through: gateway, to: subscriber, topic: "\(root)/new", message: "writable again")
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(250), "device-2's session in the trace again") {
            let trace = try await gateway.command(["trace", "device-2"])
            return trace.stdout.contains("connected to the broker")
        }

        // Nothing lost on the session that was open all along.
        try await assertNothingLost(publisher, publishing: publishing, subscriber: subscriber)

        try await assertCheckedDevicesSurviveACrash(gateway, directory: directory, responder: responder, topic: "\(root)/restart",
                                                    while: "the directory was read-only")
        print("FaultInjectionTests state directory read-only (\(frozen.count) paths immutable): \(publisher.sent) QoS 1 messages "
              + "relayed; the log said:\n"
              + (logLines(gateway, containing: "OCSP cache") + logLines(gateway, containing: "trace store")).joined(separator: "\n"))
    }

    /// `chattr +i` on the regular files of `state` except SQLite's mapped `-shm` files, then on
    /// `state` itself; cleared at the end of `test` whatever happens (an immutable folder cannot
    /// be removed). Skips the test where the file system has no such attribute (tmpfs).
    static func makeImmutable(_ state: String, _ test: XCTestCase) throws -> [String] {
        let files = try FileManager.default.contentsOfDirectory(atPath: state).sorted()
            .map { "\(state)/\($0)" }
            .filter { path in
                var info = stat()
                return !path.hasSuffix("-shm") && stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
            }
        let paths = files + [state]
        test.addTeardownBlock { try? clearImmutable(paths) }
        let result = try chattr(["+i"] + paths)
        guard result.status == 0 else {
            throw XCTSkip("cannot make the state directory immutable (chattr +i needs root and ext4 or the like): \(result.output)")
        }
        return paths
    }

    static func clearImmutable(_ paths: [String]) throws {
        let result = try chattr(["-i"] + paths)
        guard result.status == 0 else { throw ReloadTestFailure("chattr -i failed: \(result.output)") }
    }

    private static func chattr(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/chattr")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
