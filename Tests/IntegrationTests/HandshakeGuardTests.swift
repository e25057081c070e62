import Foundation
import TestSupport
import XCTest

/// Connections that never become a TLS session do not hold the gateway: garbage is refused at
/// once, silence is cut off at the handshake timeout, and neither delays real devices.
final class HandshakeGuardTests: GatewayTestCase {
    func testNonTLSBytesAreRefusedAtOnce() async throws {
        // A long handshake timeout, so a prompt close can only come from rejecting the bytes.
        let gateway = try await startGateway(handshakeTimeout: .seconds(30))
        let client = try RawTCPClient(port: gateway.port)

        try client.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        let closed = try await client.waitForClose(timeout: .seconds(10))

        XCTAssertLessThan(closed.afterConnecting, .seconds(10), "closed by the timeout, not by rejecting the bytes")
        let failure = try await gateway.log.waitFor("TLS handshake failed")
        XCTAssertFalse(gateway.log.contains("connected to broker"))
        // Nothing that looks like an HTTP answer, only (at most) a TLS alert record.
        XCTAssertFalse(String(decoding: closed.received, as: UTF8.self).contains("HTTP"), "\(failure)")
    }

    func testSilentClientIsClosedAtHandshakeTimeoutWithoutDelayingOthers() async throws {
        let gateway = try await startGateway(handshakeTimeout: .seconds(1))
        let silent = try RawTCPClient(port: gateway.port)
        let topic = uniqueTopic("guard/meanwhile")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        // While the silent client holds its connection, a good device is served.
        let publish = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "served")
        XCTAssertTrue(silent.isOpen, "the silent client was already closed when the device finished publishing")
        XCTAssertEqual(publish.status, .exited(0), "\(publish)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["served"])

        // Then the silent one is cut off at the deadline: not before, and not much later.
        let closed = try await silent.waitForClose(timeout: .seconds(10))
        XCTAssertGreaterThanOrEqual(closed.afterConnecting, .milliseconds(900), "closed before the handshake timeout")
        XCTAssertLessThan(closed.afterConnecting, .seconds(5), "not closed promptly at the handshake timeout")
        XCTAssertTrue(closed.received.isEmpty, "the gateway sent \(closed.received.count) bytes to a silent client")
        try await gateway.log.waitFor("TLS handshake not completed within 1 s")
    }

    /// A flood of silent connections: each is cut off at the deadline and counted, but the log
    /// gets at most ten failure lines and then one summary with the rest, not a line each.
    func testAFloodOfStalledHandshakesIsLoggedAsASummary() async throws {
        let gateway = try await startGateway(handshakeTimeout: .seconds(1))
        let flood = 40
        let clients = try (0..<flood).map { _ in try RawTCPClient(port: gateway.port) }
        for client in clients { _ = try await client.waitForClose(timeout: .seconds(15)) }

        let summaryText = "more TLS handshake failures in the last 10 s were not logged one by one (at most 10 are)"
        let summary = try await gateway.log.waitFor(summaryText, timeout: .seconds(25))
        // Each connection's one failure line (its timeout), written or summarised, each once.
        let written = gateway.log.entries(containing: "TLS handshake not completed within 1 s").count
        let summarised = try XCTUnwrap(Int(summary.message.prefix { $0.isNumber }), summary.message)
        XCTAssertEqual(written, 10, gateway.log.text)
        XCTAssertEqual(written + summarised, flood, gateway.log.text)
        XCTAssertEqual(gateway.log.entries(containing: summaryText).count, 1)

        // The gateway still serves a device afterwards.
        let topic = uniqueTopic("guard/after-flood")
        let publish = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic, message: "served")
        XCTAssertEqual(publish.status, .exited(0), "\(publish)")
    }
}
