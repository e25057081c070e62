import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The gateway's open-files limit reached (lowered with `prlimit` on the running process, then
/// filled by silent TCP connections): the session already open keeps relaying, the listener
/// neither spins nor floods the log while it cannot accept, and once the connections close a new
/// device is served by the same process.
extension FaultInjectionTests {
    func testAtTheOpenFilesLimitOpenSessionsGoOnTheListenerBacksOffQuietlyAndDevicesAreServedOnceDescriptorsFree() async throws {
        let directory = try makeTemporaryDirectory()
        // A long handshake timeout: only the test's closing them frees the silent connections' descriptors.
        let gateway = try await startStapleGate(directory: directory, tls: ["handshake_timeout: 300s"])
        let pid = gateway.process.pid
        let root = uniqueTopic("fault/descriptors")
        let (subscriber, publisher, publishing) = try await steadySession(through: gateway, root: root, directory: directory)
        try await waitUntil(timeout: .seconds(30), "the first messages acknowledged") {
            publisher.acknowledgements().acknowledged.count >= 5
        }

        // Eight descriptors to spare, then thirty connections: the gateway takes what it can.
        let limit = try Self.openDescriptors(pid) + 8
        let prlimit = try await ManagedProcess("prlimit", ["--pid", "\(pid)", "--nofile=\(limit):\(limit)"])
            .commandResult(timeout: .seconds(10))
        XCTAssertEqual(prlimit.status, .exited(0), "\(prlimit)")
        var silent = try (0..<30).map { _ in try RawTCPClient(port: gateway.port) }
        defer { for connection in silent { connection.closeSocket() } }
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(100), "the gateway to hold all \(limit) descriptors",
                            details: { "open: \((try? Self.openDescriptors(pid)) ?? -1)" }) {
            try Self.openDescriptors(pid) >= limit
        }
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(100), "connections waiting in the accept queue") {
            try listenerAcceptQueue(port: gateway.port) > 0
        }

        // Over a few seconds out of descriptors: the open session relays; the gateway stays
        // near idle (a listener retrying accept() in a loop would burn a whole core).
        let cpuBefore = try Self.cpuSeconds(pid)
        let window = ContinuousClock.now
        let sentBefore = publisher.sent
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(100), "messages published and acknowledged while out of descriptors") {
            ContinuousClock.now - window >= .seconds(4)
                && publisher.acknowledgements().acknowledged.isSuperset(of: Set(1...(sentBefore + 20)))
        }
        let cpu = try Self.cpuSeconds(pid) - cpuBefore
        let elapsed = (ContinuousClock.now - window).seconds
        XCTAssertLessThan(cpu, elapsed / 4, "the gateway used \(cpu) s of CPU in \(elapsed) s out of descriptors")
        XCTAssertTrue(gateway.process.isRunning)
        XCTAssertGreaterThan(try listenerAcceptQueue(port: gateway.port), 0, "the connections past the limit wait in the kernel")
        // Logged, but not once per attempt: at most one line per 10 s, for about two attempts a second.
        let warnings = logLines(gateway, containing: "cannot accept new device connections")
        XCTAssertTrue((1...2).contains(warnings.count), "\(warnings.count) lines:\n\(warnings.joined(separator: "\n"))")
        XCTAssertTrue(warnings.first?.contains("Too many open files (EMFILE: the open-files limit, \(limit), is reached)") ?? false,
                      "\(warnings)")

        // The connections close: descriptors free, the same gateway serves a new device.
        for connection in silent { connection.closeSocket() }
        silent = []
        // Before a device needs two of them (its own and the broker's): the closed connections
        // given back, the queue they waited in emptied.
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(100), "descriptors given back",
                            details: { "open: \((try? Self.openDescriptors(pid)) ?? -1)" }) {
            try Self.openDescriptors(pid) < limit - 4 && listenerAcceptQueue(port: gateway.port) == 0
        }
        try await newDevicePublishes("device-2", through: gateway, to: subscriber, topic: "\(root)/new", message: "served again")
        try await gateway.waitForOutput("accepting device connections again", timeout: .seconds(30))
        let failures = try await metric(#"staplegate_accept_failures_total{listener="device",error="EMFILE"}"#, of: gateway)
        XCTAssertGreaterThan(failures ?? 0, Double(warnings.count), "failed accepts counted, each one")

        // The open session lost nothing, and was never dropped.
        try await publishing.stop()
        try await publisher.waitUntilAllDone()
        let acknowledged = publisher.acknowledgements().acknowledged
        XCTAssertEqual(acknowledged, Set(1...publisher.sent))
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(50), "every acknowledged message at the subscriber",
                            details: { "missing: \(acknowledged.subtracting(publisher.numbers(receivedBy: subscriber)).sorted().prefix(20))" }) {
            acknowledged.isSubset(of: publisher.numbers(receivedBy: subscriber))
        }
        XCTAssertTrue(publisher.isConnected, publisher.client.process.output)
        print("FaultInjectionTests open-files limit \(limit): \(String(format: "%.2f", cpu)) s CPU in \(String(format: "%.1f", elapsed)) s "
              + "out of descriptors, \(warnings.count) log line(s) for \(Int(failures ?? 0)) failed accepts, \(publisher.sent) messages relayed")
    }

    /// Descriptors `pid` holds open now.
    static func openDescriptors(_ pid: Int32) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
    }

    /// CPU time (user + system) `pid` has used so far, in seconds.
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // After "pid (comm) ": state is field 3, utime and stime fields 14 and 15.
        let fields = stat[stat.range(of: ") ")!.upperBound...].split(separator: " ")
        let ticks = Double(fields[11])! + Double(fields[12])!
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
