import Foundation
import TestSupport
import XCTest

/// `upstream.idle_timeout`: a session with no bytes in either direction for that long is closed,
/// and a session that keeps talking is not, however long it lasts.
///
/// (The connect timeout's visible effect, a device disconnected promptly with "broker
/// unreachable" when nothing listens upstream, is covered by BrokerOutageTests.)
final class SessionTimeoutTests: GatewayTestCase {
    static let idleTimeout: Duration = .seconds(1)

    private func startGatewayWithShortIdleTimeout() async throws -> GatewayUnderTest {
        try await startConfiguredGateway(GatewayUnderTest.configuration(
            pki: pki, upstream: broker.endpoint, idleTimeout: Self.idleTimeout))
    }

    func testSilentSessionIsClosedAtIdleTimeout() async throws {
        let gateway = try await startGatewayWithShortIdleTimeout()
        let started = ContinuousClock.now
        let client = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-1",
                                               clientID: uniqueClientID("silent"), directory: try makeTemporaryDirectory())

        try await client.waitForHandshake()
        try await client.connect(keepalive: 0)
        try await gateway.log.waitFor("connected to broker", where: { $0.metadata["device"] == "device-1" })
        // Its input stays open and it sends nothing more: only the gateway can end this session.
        let status = try await client.process.waitForExit(timeout: .seconds(10))

        let lifetime = started.duration(to: .now)
        XCTAssertGreaterThanOrEqual(lifetime, Self.idleTimeout, "closed before the idle timeout (\(status))")
        XCTAssertLessThan(lifetime, .seconds(6), "not closed promptly at the idle timeout")
        let idle = try await gateway.log.waitFor("session idle too long")
        XCTAssertEqual(idle.metadata["device"], "device-1", "\(idle)")
        try await gateway.log.waitFor("connection closed")
        XCTAssertFalse(gateway.log.contains("TLS handshake failed"), gateway.log.text)
    }

    /// Negative counterpart: the same timeout does not cut a device that keeps talking, here
    /// a PINGREQ every 200 ms for several idle periods, each answered by the broker. When the
    /// device then falls silent, the very same session is closed: the timer was armed all along.
    func testTalkingSessionOutlivesSeveralIdlePeriodsThenIdlesOut() async throws {
        let gateway = try await startGatewayWithShortIdleTimeout()
        let clientID = uniqueClientID("pinger")
        let device = try HandwrittenMQTTClient(port: gateway.port, pki: pki, device: "device-2",
                                               clientID: clientID, directory: try makeTemporaryDirectory())
        defer { device.input.close() }

        try await device.waitForHandshake()
        try await device.connect()
        try await broker.waitForLog("as \(clientID)")

        let pings = 20
        let pingInterval: Duration = .milliseconds(200)
        let talkingSince = ContinuousClock.now
        for count in 1...pings {
            // The device's own pace (a fifth of the idle timeout), not a wait for anything.
            try await Task.sleep(for: pingInterval)
            try device.ping()
            try await device.waitForPingResponses(count)
        }
        let talked = talkingSince.duration(to: .now)

        XCTAssertGreaterThanOrEqual(talked, Self.idleTimeout * 3, "the session did not span several idle periods")
        XCTAssertTrue(device.process.isRunning, "the gateway closed a talking session:\n\(device.process.output)")
        XCTAssertEqual(device.pingResponses, pings)
        XCTAssertFalse(gateway.log.contains("session idle too long"), gateway.log.text)
        XCTAssertFalse(broker.log.contains("Client \(clientID) closed its connection"), broker.log)
        XCTAssertEqual(gateway.log.entries(containing: "device connection accepted").count, 1, "the device reconnected")

        // Silence from here on: now the idle timeout applies.
        let silentSince = ContinuousClock.now
        try await device.process.waitForExit(timeout: .seconds(10))
        XCTAssertLessThan(silentSince.duration(to: .now), .seconds(6), "not closed promptly once silent")
        let idle = try await gateway.log.waitFor("session idle too long")
        XCTAssertEqual(idle.metadata["device"], "device-2", "\(idle)")
        // A dropped session for the broker (no DISCONNECT was sent).
        try await broker.waitForLog("Client \(clientID) closed its connection.")
    }
}
