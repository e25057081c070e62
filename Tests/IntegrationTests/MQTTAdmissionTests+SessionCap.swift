import Foundation
import StapleGateTrace
import TestSupport
import XCTest

/// `listen.max_sessions`: at the cap, a further device completes TLS and its CONNECT and is
/// refused with a CONNACK in its own MQTT version, without the broker ever hearing of it; the
/// sessions already admitted carry on, and a slot freed by one leaving goes to the next device.
extension MQTTAdmissionTests {
    func testAtTheSessionCapTheNextDeviceIsRefusedServerBusyAndTheAdmittedOnesCarryOn() async throws {
        let gateway = try await startAdmissionGateway(listen: ["max_sessions: 3"])
        try await gateway.waitForOutput("at most 3 device sessions at once (listen.max_sessions)")
        let topic = uniqueTopic("admission/session-cap")
        var subscribers: [MosquittoSubscriber] = []
        for _ in 0..<3 {
            subscribers.append(try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: "device-1"),
                                                                   broker: broker, topic: topic))
        }

        // The fourth device, in 3.1.1 and in 5.0; mosquitto_pub exits with the CONNACK's code.
        let refusedIDs = [uniqueClientID("over-cap-v311"), uniqueClientID("over-cap-v5")]
        let refused311 = try await publish(through: gateway, topic: topic, message: "over the cap", clientID: refusedIDs[0],
                                           version: "mqttv311")
        XCTAssertEqual(refused311.status, .exited(0x03), "\(refused311)")
        XCTAssertTrue(refused311.stderr.contains("Connection error: Connection Refused: broker unavailable."), "\(refused311)")
        let refused5 = try await publish(through: gateway, topic: topic, message: "over the cap", clientID: refusedIDs[1],
                                         version: "mqttv5")
        XCTAssertEqual(refused5.status, .exited(0x89), "\(refused5)")
        XCTAssertTrue(refused5.stderr.contains("Connection error: Server busy"), "\(refused5)")

        // The admitted three still get what is published.
        let published = try await mosquittoPub(.broker(broker), topic: topic, payload: .message("to the admitted three"))
        XCTAssertEqual(published.status, .exited(0), "\(published)")
        for subscriber in subscribers {
            let messages = try await subscriber.waitForMessages(1)
            XCTAssertEqual(messages.map(\.payload), ["to the admitted three"], subscriber.clientID)
        }
        for id in refusedIDs {
            XCTAssertFalse(broker.log.contains(id), "the broker heard from refused client id \(id):\n\(broker.log)")
        }

        // The trace says why, and that the broker was never dialled for them.
        let reason = "session cap of 3 reached"
        let events = try await traceEvents(gateway, ["device-1"]) { events in
            events.filter { $0.kind == .admission && $0.isFailure }.count == 2
        }
        let refusals = events.filter { $0.kind == .admission && $0.isFailure }
        XCTAssertEqual(refusals.map { $0.details["reason"] }, [reason, reason])
        XCTAssertEqual(refusals.map(\.summary), ["refused: \(reason)", "refused: \(reason)"])
        for refusal in refusals {
            let session = events.filter { $0.connectionID == refusal.connectionID }
            XCTAssertEqual(session.filter { $0.kind == .connect }.count, 1, "the CONNECT was read first: \(session)")
            XCTAssertFalse(session.contains { $0.kind == .upstream }, "a refused device was forwarded: \(session)")
        }
        try await traceText(gateway, ["--failures"], containing: ["refused: \(reason)"])
        // Logged at warning (at most a line a second, however many are refused).
        try await gateway.waitForOutput("session cap of 3 reached: refused")

        // One leaves; its slot goes to the next device (once the gateway has seen it go).
        await subscribers[0].stop()
        let nextID = uniqueClientID("after-one-left")
        var attempt = ""
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(200), "a device to be admitted after one left",
                            details: { attempt }) {
            let result = try await self.publish(through: gateway, topic: topic, message: "after one left", clientID: nextID)
            attempt = "\(result)"
            return result.status == .exited(0)
        }
        for subscriber in subscribers.dropFirst() {
            let messages = try await subscriber.waitForMessages(2)
            XCTAssertEqual(messages.map(\.payload), ["to the admitted three", "after one left"], subscriber.clientID)
        }
    }
}
