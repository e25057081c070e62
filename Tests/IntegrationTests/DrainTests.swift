import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM (`systemctl stop`) drains the real binary: readiness drops and the listener closes
/// first, open sessions go on relaying for the grace period, the rest are closed after it, and
/// the exit status is 0.
final class DrainTests: GatewayTestCase {
    private func startGateway(gracePeriod: String) async throws -> StapleGateProcess {
        try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                          sections: ["device_ocsp: { enabled: false }"],
                                          listen: ["drain_grace_period: \(gracePeriod)"])
    }

    func testReadinessDropsFirstThenSessionsCloseAfterTheGracePeriodAndTheExitStatusIsZero() async throws {
        let gateway = try await startGateway(gracePeriod: "4s")
        let adminPort = try XCTUnwrap(gateway.adminPort)
        let topic = uniqueTopic("drain/grace")
        let subscriber = try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: "device-1"),
                                                             broker: broker, topic: topic)
        let ready = try await adminRequest(port: adminPort, "/readyz")
        XCTAssertEqual(ready.status, 200, "\(ready)")

        let signalled = ContinuousClock.now
        gateway.process.signal(SIGTERM)
        var notReady = ready
        try await waitUntil(timeout: .seconds(5), "/readyz to turn 503", details: { "\(notReady)\n\(gateway.output)" }) {
            notReady = try await adminRequest(port: adminPort, "/readyz")
            return notReady.status == 503
        }
        XCTAssertTrue(notReady.body.contains("\"listener\""), "\(notReady)")
        XCTAssertFalse(MosquittoBroker.acceptsTCP(port: gateway.port), "the listener still accepts devices while draining")

        // Within the grace period the open session still relays.
        let published = try await mosquittoPub(.broker(broker), topic: topic, payload: .message("during the drain"))
        XCTAssertEqual(published.status, .exited(0), "\(published)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.last?.payload, "during the drain")
        XCTAssertFalse(gateway.output.contains("drain grace period over"), "closed before the grace period: \(gateway.output)")

        let exit = try await gateway.process.waitForExit(timeout: .seconds(20))
        let elapsed = ContinuousClock.now - signalled
        XCTAssertEqual(exit, .exited(0), gateway.output)
        XCTAssertGreaterThanOrEqual(elapsed, .seconds(4), "exited before the grace period was over")
        let output = gateway.output
        let draining = try XCTUnwrap(output.range(of: "draining: the listener is closed; 1 connections may finish within 4"), output)
        let closing = try XCTUnwrap(output.range(of: "drain grace period over: closing 1 connections still open"), output)
        XCTAssertLessThan(draining.lowerBound, closing.lowerBound, output)
        // The broker saw the session end: the gateway closed it, not the device.
        try await waitUntil(timeout: .seconds(10), "the broker to see the subscriber leave", details: { self.broker.log }) {
            self.broker.log.contains("Client \(subscriber.clientID) closed its connection")
                || self.broker.log.contains("Client \(subscriber.clientID) disconnected")
        }
    }

    func testTheDrainEndsAsSoonAsTheLastSessionLeaves() async throws {
        let gateway = try await startGateway(gracePeriod: "60s")
        let subscriber = try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: "device-1"),
                                                             broker: broker, topic: uniqueTopic("drain/early"))
        gateway.process.signal(SIGTERM)
        try await gateway.waitForOutput("draining: the listener is closed; 1 connections may finish within 60", timeout: .seconds(10))
        XCTAssertTrue(gateway.process.isRunning, "did not wait for the open session")

        await subscriber.stop()
        // Far less than the 60 s grace period: the gateway stops waiting once nobody is left.
        let exit = try await gateway.process.waitForExit(timeout: .seconds(20))
        XCTAssertEqual(exit, .exited(0), gateway.output)
        XCTAssertFalse(gateway.output.contains("drain grace period over"), gateway.output)
    }

    func testWithNoSessionOpenSIGTERMExitsAtOnce() async throws {
        let gateway = try await startGateway(gracePeriod: "60s")
        gateway.process.signal(SIGTERM)
        let exit = try await gateway.process.waitForExit(timeout: .seconds(15))
        XCTAssertEqual(exit, .exited(0), gateway.output)
        XCTAssertFalse(gateway.output.contains("draining: the listener is closed"), gateway.output)
    }
}
