import Foundation
import TestSupport
import XCTest

/// Messages cross the gateway unchanged, in both directions.
final class MessageRelayTests: GatewayTestCase {
    /// Device → gateway → broker: every byte value survives.
    func testPublishThroughGatewayArrivesAtBrokerByteForByte() async throws {
        let gateway = try await startGateway()
        let files = try makeTemporaryDirectory()
        let payload = Data((0...255).map { UInt8($0) })
        let payloadFile = try files.write("all-byte-values.bin", payload)
        let topic = uniqueTopic("relay/up")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic,
                                                             output: .raw(count: 1))

        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, file: payloadFile)

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let received = try await subscriber.waitForRawPayload()
        XCTAssertEqual(received.count, 256)
        XCTAssertEqual(received, payload, "the payload changed on its way through the gateway")
        try await gateway.log.waitFor("TLS handshake completed", where: { $0.metadata["device"] == "device-1" })
    }

    /// Broker → gateway → device: a device subscribed through the gateway gets what is
    /// published straight on the broker.
    func testDeviceSubscribedThroughGatewayReceivesBrokerMessages() async throws {
        let gateway = try await startGateway()
        let topic = uniqueTopic("relay/down")
        let subscriber = try await MosquittoSubscriber.start(gateway.target(pki, device: "device-2"), broker: broker,
                                                             topic: topic)
        // The subscription went through the gateway: it admitted device-2 and joined it to the broker.
        try await gateway.log.waitFor("connected to broker", where: { $0.metadata["device"] == "device-2" })

        let message = "downlink \(UUID().uuidString) äöü ✓"
        let result = try await mosquittoPub(.broker(broker), topic: topic, payload: .message(message))

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.count, 1)
        XCTAssertEqual(messages.first?.topic, topic)
        XCTAssertEqual(messages.first?.payload, message)
    }

    /// Negative control for the relay: a subscriber on another topic gets nothing of it, while
    /// a later message on its own topic does arrive (so "nothing" is not just "not yet").
    func testMessagesOnlyReachMatchingSubscriptions() async throws {
        let gateway = try await startGateway()
        let topic = uniqueTopic("relay/only")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let other = try await mosquittoPub(port: gateway.port, pki: pki, topic: topic + "-other", message: "not for you")
        let mine = try await mosquittoPub(port: gateway.port, pki: pki, topic: topic, message: "for you")

        XCTAssertEqual(other.status, .exited(0), "\(other)")
        XCTAssertEqual(mine.status, .exited(0), "\(mine)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["for you"])
    }
}
