import Foundation
import TestSupport
import XCTest

/// The harness the integration tests stand on: if these fail, the others prove nothing.
final class TestHarnessTests: XCTestCase {
    override class func setUp() {
        super.setUp()
        ProcessRegistry.install()
    }

    /// Children must honour SIGTERM even when spawned from a Swift concurrency thread (whose
    /// signal mask blocks nearly everything and would otherwise be inherited).
    func testTerminateStopsChildWithSIGTERM() async throws {
        let child = try ManagedProcess("sleep", ["60"])
        XCTAssertTrue(child.isRunning)

        await child.terminate(grace: .seconds(3))

        XCTAssertEqual(child.exitStatus, .signaled(SIGTERM))
    }

    func testOutputIsCapturedWhileTheProcessRuns() async throws {
        let child = try ManagedProcess("sh", ["-c", "echo ready; echo oops >&2; exec sleep 60"])

        try await child.waitForOutput("ready", timeout: .seconds(5))
        try await child.waitForOutput("oops", timeout: .seconds(5))

        XCTAssertTrue(child.isRunning)
        XCTAssertEqual(child.stdout.lines, ["ready"])
        XCTAssertEqual(child.stderr.lines, ["oops"])
        await child.terminate()
    }

    func testExitStatusIsReported() async throws {
        let failing = try ManagedProcess("sh", ["-c", "exit 3"])
        let status = try await failing.waitForExit(timeout: .seconds(5))
        XCTAssertEqual(status, .exited(3))
        XCTAssertFalse(status.succeeded)
    }

    func testWaitUntilThrowsDescriptiveErrorAtDeadline() async throws {
        let started = ContinuousClock.now
        do {
            try await waitUntil(timeout: .milliseconds(200), "a condition that never holds", details: { "some details" }) { false }
            XCTFail("waitUntil returned for a condition that never held")
        } catch let error as WaitTimeoutError {
            XCTAssertTrue(error.description.contains("a condition that never holds"), error.description)
            XCTAssertTrue(error.description.contains("some details"), error.description)
        }
        XCTAssertGreaterThanOrEqual(started.duration(to: .now), .milliseconds(200))
    }

    func testBrokerRestartsOnTheSamePort() async throws {
        let broker = try await MosquittoBroker.start()
        defer { broker.remove() }
        let restartedPort = try XCTUnwrap(broker.port)
        XCTAssertGreaterThan(restartedPort, 0)
        try await broker.restart()
        XCTAssertEqual(broker.port, restartedPort)
        XCTAssertTrue(broker.isRunning)
        let result = try await mosquittoPub(.broker(broker), topic: "harness/restart", payload: .message("up"))
        XCTAssertEqual(result.status, .exited(0), "\(result)")
    }
}
