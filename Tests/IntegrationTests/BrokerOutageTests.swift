import Foundation
import TestSupport
import XCTest

/// While Mosquitto is down, devices are turned away promptly and told nothing false; the gateway
/// itself keeps running and serves them again as soon as the broker is back.
final class BrokerOutageTests: GatewayTestCase {
    func testDevicesAreDisconnectedPromptlyWhileBrokerIsDownAndServedAfterRestart() async throws {
        // A long handshake timeout: a prompt disconnect cannot be the handshake deadline.
        let gateway = try await startGateway(handshakeTimeout: .seconds(30))
        let topic = uniqueTopic("outage")
        await broker.stop()
        XCTAssertFalse(broker.isRunning)

        for attempt in 1...2 {
            let started = ContinuousClock.now
            let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic,
                                                message: "while down \(attempt)")
            let elapsed = started.duration(to: .now)
            XCTAssertNotEqual(result.status, .exited(0), "published with the broker down:\n\(result)")
            XCTAssertLessThan(elapsed, .seconds(5), "the device was not disconnected promptly")

            // The gateway kept serving: the handshake of every attempt completed, then the broker was unreachable.
            try await waitUntil(timeout: .seconds(5), "attempt \(attempt) to be logged", details: { gateway.log.text }) {
                gateway.log.entries(containing: "broker unreachable").count == attempt
            }
            XCTAssertEqual(gateway.log.entries(containing: "TLS handshake completed").count, attempt)
        }
        let unreachable = try XCTUnwrap(gateway.log.entries(containing: "broker unreachable").first)
        XCTAssertTrue(unreachable.message.contains("127.0.0.1:\(broker.port!)"), "\(unreachable)")
        XCTAssertTrue(unreachable.message.contains(": Connection refused;"), "the reason in plain words: \(unreachable)")
        XCTAssertFalse(gateway.log.contains("connected to broker"))

        try await broker.restart()
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "back again")

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["back again"])
        try await gateway.log.waitFor("connected to broker")
    }
}
