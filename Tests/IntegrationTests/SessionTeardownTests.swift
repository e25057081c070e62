import Foundation
import TestSupport
import XCTest

/// The end of a device's session ends the broker's session, cleanly when the device was clean.
final class SessionTeardownTests: GatewayTestCase {
    func testCleanDisconnectLeavesNoLingeringSession() async throws {
        let gateway = try await startGateway()
        let clientID = uniqueClientID("clean")
        let topic = uniqueTopic("teardown/clean")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let result = try await mosquittoPub(gateway.target(pki), topic: topic, payload: .message("bye"), qos: 1, clientID: clientID)

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        try await subscriber.waitForMessages(1)
        // The broker saw an MQTT DISCONNECT, not a dropped socket...
        try await broker.waitForLog("Client \(clientID) disconnected.")
        XCTAssertFalse(broker.log.contains("Client \(clientID) closed its connection"), broker.log)
        // ...and the gateway closed the device connection (and with it the broker connection).
        try await gateway.log.waitFor("connection closed")
        XCTAssertEqual(gateway.log.entries(containing: "device connection accepted").count, 1)
        XCTAssertEqual(gateway.log.entries(containing: "connection closed").count, 1)
    }

    /// Negative counterpart: a device that vanishes without DISCONNECT is a dropped session for
    /// the broker (it would publish the device's will), and the gateway still cleans up.
    func testAbruptlyKilledDeviceIsDroppedAtBroker() async throws {
        let gateway = try await startGateway()
        let subscriber = try await MosquittoSubscriber.start(gateway.target(pki, device: "device-2"), broker: broker,
                                                             topic: uniqueTopic("teardown/abrupt"))
        try await gateway.log.waitFor("connected to broker", where: { $0.metadata["device"] == "device-2" })

        subscriber.process.signal(SIGKILL)

        try await broker.waitForLog("Client \(subscriber.clientID) closed its connection.")
        XCTAssertFalse(broker.log.contains("Client \(subscriber.clientID) disconnected."), broker.log)
        try await gateway.log.waitFor("connection closed")
    }

    /// `Gateway.stop()` "stops accepting and closes every connection", also when the event loops
    /// are not the gateway's own (here they outlive it until the test's teardown).
    func testStoppingTheGatewayClosesOpenSessions() async throws {
        let gateway = try await startGateway()
        let subscriber = try await MosquittoSubscriber.start(gateway.target(pki, device: "device-2"), broker: broker,
                                                             topic: uniqueTopic("teardown/stop"))

        try await gateway.gateway.stop()

        XCTAssertThrowsError(try RawTCPClient(port: gateway.port), "still accepting after stop()")
        // The open session ends, so the broker sees its client go (mosquitto_sub itself would just reconnect).
        try await broker.waitForLog("Client \(subscriber.clientID) closed its connection.", timeout: .seconds(5))
    }
}
