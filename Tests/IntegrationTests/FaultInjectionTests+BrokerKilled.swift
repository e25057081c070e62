import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Mosquitto killed (SIGKILL) while a device streams numbered QoS 1 or QoS 2 messages through the
/// gateway: the gateway never answers for the broker, so every message the device saw
/// acknowledged (PUBACK; PUBCOMP at QoS 2) reached the broker's subscriber, and no answer came
/// for a message never sent or released; the device's session is closed promptly, and its trace
/// says the broker closed it. The gateway then serves devices again once the broker is back.
extension FaultInjectionTests {
    func testABrokerKilledWithQoS1MessagesInFlightLeavesNoMessageAcknowledgedThatItDidNotDeliver() async throws {
        try await killBrokerMidStream(qos: 1)
    }

    func testABrokerKilledWithQoS2MessagesInFlightLeavesNoMessageCompletedThatItDidNotDeliver() async throws {
        try await killBrokerMidStream(qos: 2)
    }

    private func killBrokerMidStream(qos: UInt8) async throws {
        let directory = try makeTemporaryDirectory()
        let gateway = try await startStapleGate(directory: directory)
        let root = uniqueTopic("fault/broker-killed")
        // At QoS 0 the subscriber sends the broker nothing back, so the killed broker's socket
        // closes with a FIN after what it had written, not a reset that would discard it: what
        // Mosquitto wrote before it acknowledged the publisher reaches the subscriber.
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: "\(root)/#", qos: 0)
        addTeardownBlock { await subscriber.stop() }
        let publisher = try await SequencedPublisher.connect(port: gateway.port, pki: pki, device: "device-1",
                                                             topic: "\(root)/stream", qos: qos, directory: directory)
        let publishing = SteadyPublishing(publisher, every: .milliseconds(5), window: 20)
        try await waitUntil(timeout: .seconds(30), "50 messages done before the kill") {
            publisher.acknowledgements().done(qos: qos).count >= 50
        }

        // Killed mid-stream: 20 messages are in flight at any moment.
        try await broker.kill(signal: SIGKILL)
        let killed = ContinuousClock.now
        let sentAtKill = publisher.sent
        let closed = try await publisher.client.waitForClose(timeout: .seconds(20))
        let closedAfter = ContinuousClock.now - killed
        XCTAssertLessThan(closedAfter, .seconds(10), "the device's session was not closed promptly")
        try await publishing.stop()

        let answers = publisher.acknowledgements()
        let done = answers.done(qos: qos)
        let sent = Set(1...publisher.sent)
        XCTAssertEqual(answers.repeated, [], "an answer came twice")
        if qos == 1 {
            XCTAssertTrue(answers.acknowledged.isSubset(of: sent), "PUBACK for messages never sent: \(answers.acknowledged.subtracting(sent).sorted())")
            XCTAssertTrue(answers.received.isEmpty && answers.completed.isEmpty, "QoS 2 answers to QoS 1 messages")
        } else {
            XCTAssertTrue(answers.received.isSubset(of: sent), "PUBREC for messages never sent: \(answers.received.subtracting(sent).sorted())")
            XCTAssertTrue(answers.completed.isSubset(of: answers.received),
                          "PUBCOMP without PUBREC: \(answers.completed.subtracting(answers.received).sorted())")
            XCTAssertTrue(answers.acknowledged.isEmpty, "PUBACK for QoS 2 messages")
        }
        XCTAssertLessThan(done.count, publisher.sent, "messages were in flight at the kill")
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(50), "every acknowledged message at the subscriber",
                            details: { "missing: \(done.subtracting(publisher.numbers(receivedBy: subscriber)).sorted())" }) {
            done.isSubset(of: publisher.numbers(receivedBy: subscriber))
        }

        // The trace names the broker as the side that ended the session.
        var ending = ""
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(250), "the session's end in the trace",
                            details: { "trace: \(ending)\n\(gateway.output.suffix(5_000))" }) {
            let trace = try await gateway.command(["trace", "device-1"])
            ending = trace.stdout.split(separator: "\n").last { $0.contains("disconnected (closed by") }.map(String.init) ?? trace.output
            return ending.contains("disconnected (closed by broker")
        }

        // Back up, the broker is reached again through the same gateway.
        try await broker.start()
        let after = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: "\(root)/after")
        addTeardownBlock { await after.stop() }
        try await newDevicePublishes("device-2", through: gateway, to: after, topic: "\(root)/after", message: "broker back")
        print("FaultInjectionTests broker killed at QoS \(qos): \(sentAtKill) messages sent by the kill, \(done.count) done "
              + "(\(answers.received.count) PUBREC, \(answers.completed.count) PUBCOMP, \(answers.acknowledged.count) PUBACK), "
              + "all delivered; device closed (\(closed)) \(Int(closedAfter.seconds * 1000)) ms after the kill; trace: \(ending)")
    }
}
