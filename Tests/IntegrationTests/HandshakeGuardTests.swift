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
}
