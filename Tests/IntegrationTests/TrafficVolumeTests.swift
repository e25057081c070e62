import Foundation
import TestSupport
import XCTest

/// Big messages and many devices at once: nothing is lost, reordered within a device, or altered.
final class TrafficVolumeTests: GatewayTestCase {
    func testOneMebibyteRandomPayloadArrivesIntact() async throws {
        let gateway = try await startGateway()
        let files = try makeTemporaryDirectory()
        var generator = SystemRandomNumberGenerator()
        let payload = Data((0..<(1 << 20)).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        let payloadFile = try files.write("random-1MiB.bin", payload)
        let topic = uniqueTopic("volume/large")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic,
                                                             output: .raw(count: 1))

        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, file: payloadFile)

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let received = try await subscriber.waitForRawPayload(timeout: .seconds(30))
        XCTAssertEqual(received.count, payload.count)
        XCTAssertTrue(received == payload, "the 1 MiB payload changed on its way through the gateway")
    }

    func testTwoHundredConcurrentDevicesDeliverEveryMessage() async throws {
        let devices = 200
        let messagesPerDevice = 100
        let gateway = try await startGateway()
        let files = try makeTemporaryDirectory()
        var expected = Set<String>()
        var inputs: [String] = []
        for device in 0..<devices {
            let payloads = (0..<messagesPerDevice).map { "device-\(device)-message-\($0)" }
            for payload in payloads { expected.insert("load/\(device) \(payload)") }
            inputs.append(try files.write("load-\(device).txt", payloads.joined(separator: "\n") + "\n"))
        }
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: "load/#", qos: 1)

        // All publishers first, then wait for them: they really run at the same time.
        var publishers: [ManagedProcess] = []
        for device in 0..<devices {
            publishers.append(try startMosquittoPub(gateway.target(pki, device: "device-1"), topic: "load/\(device)",
                                                    payload: .linesOf(inputs[device]), qos: 1, clientID: "load-\(device)"))
        }
        var failures: [String] = []
        let deadline = Deadline(.seconds(45))
        for (device, publisher) in publishers.enumerated() {
            let status = try await publisher.waitForExit(timeout: deadline.remaining)
            if !status.succeeded { failures.append("load-\(device): \(status)\n\(publisher.output)") }
        }
        XCTAssertEqual(failures, [], "\(failures.count) publishers failed")

        let total = devices * messagesPerDevice
        try await subscriber.waitForMessages(total, timeout: .seconds(60))
        let lines = subscriber.process.stdout.lines
        XCTAssertEqual(lines.count, total, "duplicates or extra messages")
        let received = Set(lines)
        XCTAssertEqual(received.count, total, "duplicate messages arrived")
        XCTAssertEqual(received, expected, "missing: \(expected.subtracting(received).sorted().prefix(5)), "
                       + "unexpected: \(received.subtracting(expected).sorted().prefix(5))")
        // Per device, in the order published (MQTT keeps one session's QoS 1 messages in order).
        var perDevice: [String: [String]] = [:]
        for line in lines {
            let (topic, payload) = (line.prefix { $0 != " " }, line.drop { $0 != " " }.dropFirst())
            perDevice[String(topic), default: []].append(String(payload))
        }
        for device in 0..<devices {
            XCTAssertEqual(perDevice["load/\(device)"], (0..<messagesPerDevice).map { "device-\(device)-message-\($0)" },
                           "load/\(device) out of order")
        }
        XCTAssertEqual(gateway.log.entries(containing: "TLS handshake completed").count, devices)
    }
}
