import Foundation
import TestSupport
import XCTest

/// `staplegate trace enable|disable` act on the sessions they say they act on: a session traced
/// under the switch stops recording when the operator switches it off, and goes on past its
/// first end when the operator extends it. Judged by what the trace then holds.
extension DeviceTraceTests {
    /// A mosquitto_sub session of `device` through the gateway, and a way to send it a message
    /// (published straight at the broker) that it has received once the call returns.
    private func subscriberSession(_ gateway: StapleGateProcess, device: String) async throws
        -> (MosquittoSubscriber, (String) async throws -> Void) {
        let topic = uniqueTopic("trace/switch")
        let subscriber = try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: device),
                                                             broker: broker, topic: topic)
        addTeardownBlock { await subscriber.stop() }
        let send: (String) async throws -> Void = { message in
            let count = subscriber.messageCount
            try await mosquittoPub(.broker(self.broker), topic: topic, payload: .message(message)).assertSucceeded()
            _ = try await subscriber.waitForMessages(count + 1)
        }
        return (subscriber, send)
    }

    private func publishesToDevice(_ events: [Event]) -> Int {
        events.filter { $0.kind == "publish" && $0.details["direction"] == "broker→device" }.count
    }

    func testTraceDisableStopsTheRecordingOfSessionsAlreadyTraced() async throws {
        let gateway = try await startTracedGateway([Self.noDeviceOCSP])
        _ = try await trace(gateway, ["enable", "device-3", "--for", "1h"])
        let (_, send) = try await subscriberSession(gateway, device: "device-3")
        try await send("first")
        try await waitForEvents(gateway, ["device-3"], "the first message in the trace") { self.publishesToDevice($0) == 1 }

        let disabled = try await trace(gateway, ["disable", "device-3"])
        XCTAssertEqual(disabled.stdout, "message trace off for device-3: its sessions stop recording their publishes\n")
        try await send("second")
        try await send("third")
        let events = try await waitForEvents(gateway, ["device-3"], "the session's trace to end") { events in
            events.contains { $0.summary == "message trace ended (switched off)" }
        }
        XCTAssertEqual(publishesToDevice(events), 1, events.map(\.summary).joined(separator: "\n"))
    }

    func testTraceEnableExtendsTheRecordingOfSessionsAlreadyTraced() async throws {
        let gateway = try await startTracedGateway([Self.noDeviceOCSP])
        _ = try await trace(gateway, ["enable", "device-3", "--for", "2s"])
        let firstEnd = Date().addingTimeInterval(2)
        let (_, send) = try await subscriberSession(gateway, device: "device-3")
        let extended = try await trace(gateway, ["enable", "device-3", "--for", "1h"])
        XCTAssertTrue(extended.stdout.hasPrefix("message trace on for device-3 until "), "\(extended)")
        XCTAssertTrue(extended.stdout.contains("sessions that start from now on record their publishes, and so do its sessions already traced"),
                      "\(extended)")

        try await waitUntil(timeout: .seconds(10), "the first switch's end to pass") { Date() > firstEnd + 0.5 }
        try await send("after the first end")
        let events = try await waitForEvents(gateway, ["device-3"], "the message in the trace") { self.publishesToDevice($0) == 1 }
        XCTAssertFalse(events.contains { $0.summary.contains("message trace ended") }, events.map(\.summary).joined(separator: "\n"))
    }
}
