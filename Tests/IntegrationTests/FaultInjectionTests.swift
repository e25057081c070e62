import Foundation
import TestSupport
import XCTest

/// Faults injected into real components around the real `staplegate` binary (issue 16): a storm
/// of reloads under traffic, the open-files limit reached, the broker killed with messages in
/// flight. Each is judged by what devices then see: sessions kept or closed, messages
/// acknowledged and delivered, new devices served. The faults are in the extensions
/// (`FaultInjectionTests+*.swift`); this file holds what they share.
final class FaultInjectionTests: GatewayTestCase {
    /// The real binary with logging at info, stopped at the end of the test; its log and the
    /// broker's are printed when the test failed. Device checks are off unless `deviceChecks`
    /// (where they are not the subject); `stapling` staples its own certificate. Either needs
    /// the PKI's responder, which the test starts. `environment` is added to the binary's.
    func startStapleGate(directory: TemporaryDirectory? = nil, sections: [String] = [], tls: [String] = [],
                         listen: [String] = [], stapling: Bool = false, deviceChecks: Bool = false,
                         environment: [String: String]? = nil) async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: try directory ?? makeTemporaryDirectory(),
            sections: (deviceChecks ? [] : ["device_ocsp: { enabled: false }"]) + sections, tls: tls, listen: listen,
            logging: "{ level: info }", stapling: stapling, environment: environment)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log (end) ---\n\(gateway.output.suffix(60_000))\n--- broker log (end) ---\n\(self?.broker.log.suffix(20_000) ?? "")")
            }
            await gateway.stop()
        }
        return gateway
    }

    /// The value of the sample `name` (with its labels, if any) in the gateway's `/metrics`.
    func metricValue(_ name: String, of gateway: StapleGateProcess) async throws -> Double {
        try await metric(name, of: gateway) ?? 0
    }

    /// Log lines of `gateway` containing `text`.
    func logLines(_ gateway: StapleGateProcess, containing text: String) -> [Substring] {
        gateway.output.split(separator: "\n").filter { $0.contains(text) }
    }

    /// The broker's log lines naming `clientID` as a whole word.
    func brokerLines(naming clientID: String) -> [Substring] {
        broker.log.split(separator: "\n").filter { line in
            line.split(separator: " ").contains { $0.trimmingCharacters(in: CharacterSet(charactersIn: ".,:()")) == clientID }
        }
    }

    /// One message published through the gateway by a fresh mosquitto_pub as `device`, and
    /// seen by `subscriber`: a new device admitted end to end.
    func newDevicePublishes(_ device: String, through gateway: StapleGateProcess, to subscriber: MosquittoSubscriber,
                            topic: String, message: String) async throws {
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: topic, message: message,
                                            timeout: .seconds(30))
        XCTAssertEqual(result.status, .exited(0), "\(device) publishing \"\(message)\": \(result)")
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(50), "\"\(message)\" to reach the subscriber",
                            details: { subscriber.process.stdout.text.suffix(2_000).description }) {
            subscriber.messages.contains { $0.topic == topic && $0.payload == message }
        }
    }

    /// What most faults run under: a subscriber on `root/#` and device-1 publishing numbered
    /// QoS 1 messages on `root/steady` through `gateway` all along (`SteadyPublishing`).
    func steadySession(through gateway: StapleGateProcess, root: String, directory: TemporaryDirectory) async throws
        -> (subscriber: MosquittoSubscriber, publisher: SequencedPublisher, publishing: SteadyPublishing) {
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: "\(root)/#")
        addTeardownBlock { await subscriber.stop() }
        let publisher = try await SequencedPublisher.connect(port: gateway.port, pki: pki, device: "device-1",
                                                             topic: "\(root)/steady", qos: 1, directory: directory)
        return (subscriber, publisher, SteadyPublishing(publisher))
    }

    /// The session open through a whole fault lost nothing: every message sent acknowledged, every
    /// acknowledged one at `subscriber`, and the device still connected.
    func assertNothingLost(_ publisher: SequencedPublisher, publishing: SteadyPublishing,
                           subscriber: MosquittoSubscriber) async throws {
        try await publishing.stop()
        try await publisher.waitUntilAllDone()
        let acknowledged = publisher.acknowledgements().acknowledged
        XCTAssertEqual(acknowledged, Set(1...publisher.sent))
        try await waitUntil(timeout: .seconds(30), pollEvery: .milliseconds(50), "every acknowledged message at the subscriber") {
            acknowledged.isSubset(of: publisher.numbers(receivedBy: subscriber))
        }
        XCTAssertTrue(publisher.isConnected, publisher.client.process.output)
    }

    /// A crash (nothing flushed at exit), the responder down, a restart: the devices checked
    /// `while` the fault lasted are admitted from the cache file; one never checked is refused.
    func assertCheckedDevicesSurviveACrash(_ gateway: StapleGateProcess, directory: TemporaryDirectory, responder: OCSPResponder,
                                           topic: String, while fault: String) async throws {
        gateway.process.signal(SIGKILL)
        try await gateway.process.waitForExit(timeout: .seconds(10))
        await responder.stop()
        let restarted = try await startStapleGate(directory: directory, deviceChecks: true)
        for device in ["device-2", "device-3"] {
            let result = try await mosquittoPub(port: restarted.port, pki: pki, device: device, topic: topic,
                                                message: "from the cache", timeout: .seconds(30))
            XCTAssertEqual(result.status, .exited(0), "\(device), checked while \(fault), not admitted from the cache\n\(result)")
        }
        let unknown = try await mosquittoPub(port: restarted.port, pki: pki, device: "device-to-revoke", topic: topic,
                                             message: "never checked", timeout: .seconds(30))
        XCTAssertNotEqual(unknown.status, .exited(0), "negative control: a device never checked was admitted\n\(unknown)")
    }

    /// The value of the unlabelled sample `name` in the gateway's `/metrics`.
    func metric(_ name: String, of gateway: StapleGateProcess) async throws -> Double? {
        let scrape = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        return scrape.body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }
    }
}
