import Foundation
import TestSupport
import XCTest

/// `listen.max_handshakes` on the real binary: with that many handshakes under way the gateway
/// stops accepting, and the next connection waits in the kernel's accept queue (as `ss` shows it),
/// not in the gateway; when one ends the queue is served, and a device gets through.
final class HandshakeLimitTests: GatewayTestCase {
    func testPastTheLimitConnectionsWaitInTheKernelUntilAHandshakeEnds() async throws {
        let directory = try makeTemporaryDirectory()
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: directory, sections: ["device_ocsp: { enabled: false }"],
            tls: ["handshake_timeout: 60s"], listen: ["max_handshakes: 3"], logging: "{ level: info }")
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 { print(gateway.output) }
            await gateway.stop()
        }
        let adminPort = try XCTUnwrap(gateway.adminPort)
        func metric(_ name: String) async throws -> Double? {
            let scrape = try await adminRequest(port: adminPort, "/metrics")
            let line = scrape.body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") }
        }

        // Three silent connections hold the three slots.
        let silent = try (0..<3).map { _ in try RawTCPClient(port: gateway.port) }
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "three handshakes under way") {
            try await metric("staplegate_handshakes_in_progress") == 3
        }
        // The fourth completes TCP with the kernel, but the gateway does not take it.
        let waiting = try RawTCPClient(port: gateway.port)
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "the fourth connection in the accept queue") {
            try listenerAcceptQueue(port: gateway.port) == 1
        }
        let accepted = try await metric("staplegate_connections_total")
        let pauses = try await metric("staplegate_listener_pauses_total")
        XCTAssertEqual(accepted, 3)
        XCTAssertEqual(pauses, 1)
        try await gateway.waitForOutput("listen.max_handshakes (3) handshakes under way: new connections wait in the kernel's accept queue")

        // One silent connection leaves: its slot frees, the queued one is accepted.
        silent[0].closeSocket()
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "the queued connection accepted") {
            try listenerAcceptQueue(port: gateway.port) == 0
        }
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "the queued connection counted") {
            try await metric("staplegate_connections_total") == 4
        }
        XCTAssertTrue(waiting.isOpen)

        // Two more leave; with one silent connection still holding its slot, a device is served.
        waiting.closeSocket()
        silent[1].closeSocket()
        let topic = uniqueTopic("limit/device")
        let publish = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "served")
        XCTAssertEqual(publish.status, .exited(0), "\(publish)")
        silent[2].closeSocket()
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "every slot given back") {
            try await metric("staplegate_handshakes_in_progress") == 0
        }
    }
}
