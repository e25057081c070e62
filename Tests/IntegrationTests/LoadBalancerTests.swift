import Foundation
import TestSupport
import XCTest

/// Two real gateways behind a real HAProxy 2.6 (`send-proxy-v2`, health checks with
/// `check-send-proxy`), real mosquitto_pub/sub devices: each gateway knows every device by the
/// device's own address, connections from anyone but the balancer are refused before TLS, bad
/// headers are refused without harming the sessions already open, and health checks are quiet.
/// HAProxy connects to the gateways from 127.0.0.2, the only trusted address, so that a
/// connection from 127.0.0.1 plays a stranger.
final class LoadBalancerTests: GatewayTestCase {
    private static let balancerAddress = "127.0.0.2"
    private var haproxies: [HAProxy] = []
    private var gateways: [StapleGateProcess] = []

    override func tearDown() async throws {
        for haproxy in haproxies { await haproxy.stop() }
        haproxies = []
        for gateway in gateways { await gateway.stop() }
        gateways = []
        try await super.tearDown()
    }

    // MARK: Helpers

    /// A gateway that takes PROXY v2 headers from the balancer only.
    private func startBalancedGateway(tls: [String] = [], sections: [String] = ["device_ocsp: { enabled: false }"],
                              proxyProtocol: String = "v2") async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: try makeTemporaryDirectory(), sections: sections,
            tls: tls, listen: ["proxy_protocol: \(proxyProtocol)", "trusted_proxies: [\"\(Self.balancerAddress)/32\"]"],
            logging: "{ level: info }")
        gateways.append(gateway)
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            print("--- gateway \(gateway.port) log ---\n\(gateway.output.suffix(30_000))")
            for haproxy in self?.haproxies ?? [] { print("--- haproxy log ---\n\(haproxy.log.suffix(10_000))") }
        }
        return gateway
    }

    /// HAProxy in front of `gateways`, round robin, logging "device IP:PORT via gwN" per device.
    private func startBalancer(for gateways: [StapleGateProcess], sendProxy: String = "send-proxy-v2") async throws -> HAProxy {
        let servers = gateways.enumerated().map { index, gateway in
            "    server gw\(index) 127.0.0.1:\(gateway.port) \(sendProxy) source \(Self.balancerAddress) check check-send-proxy inter 100ms"
        }
        let port = try FreePort.next()
        let haproxy = try await HAProxy.start(port: port, sections: """
        frontend devices
            bind 127.0.0.1:\(port)
            log-format "device %ci:%cp via %s"
            default_backend gateways
        backend gateways
            balance roundrobin
        \(servers.joined(separator: "\n"))
        """, in: try makeTemporaryDirectory())
        haproxies.append(haproxy)
        return haproxy
    }

    /// The (client port, server index) of each device connection HAProxy logged.
    private func balancedDevices(_ haproxy: HAProxy) -> [(port: Int, gateway: Int)] {
        haproxy.log.split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ")
            guard let at = words.firstIndex(of: "device"), words.count > at + 3, words[at + 2] == "via",
                  let port = words[at + 1].split(separator: ":").last.flatMap({ Int($0) }),
                  let index = Int(words[at + 3].dropFirst(2)) else { return nil }
            return (port, index)
        }
    }

    private func metric(_ gateway: StapleGateProcess, _ name: String, _ labels: [String: String] = [:]) async throws -> Double {
        let scrape = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        let samples = try await PrometheusParser.parse(scrape.body, in: try makeTemporaryDirectory()).get()
        return samples.value(name, labels) ?? 0
    }

    // MARK: Tests

    func testEachGatewayKnowsDevicesBehindHAProxyByTheirOwnAddress() async throws {
        let first = try await startBalancedGateway(), second = try await startBalancedGateway()
        let haproxy = try await startBalancer(for: [first, second])
        let topic = uniqueTopic("balanced")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        for index in 1...4 {
            let published = try await mosquittoPub(port: haproxy.port, pki: pki, device: "device-1", topic: topic,
                                                   message: "through the balancer \(index)")
            XCTAssertEqual(published.status, .exited(0), "\(published)")
        }
        _ = try await subscriber.waitForMessages(4)

        var devices: [(port: Int, gateway: Int)] = []
        try await waitUntil(timeout: .seconds(10), "HAProxy to log 4 devices", details: { haproxy.log }) {
            devices = self.balancedDevices(haproxy)
            return devices.count >= 4
        }
        XCTAssertEqual(Set(devices.map(\.gateway)), [0, 1], "round robin over both gateways")
        for device in devices {
            let gateway = [first, second][device.gateway]
            let address = "127.0.0.1:\(device.port)"
            try await gateway.waitForOutput("remote=\(address)")
            let admitted = gateway.process.stderr.lines.filter { $0.contains("admitted as device-1") && $0.contains("remote=\(address)") }
            XCTAssertEqual(admitted.count, 1, "gateway \(device.gateway) names the device by its own address \(address)")
            try await waitUntil(timeout: .seconds(10), "\(address) in gateway \(device.gateway)'s trace of device-1") {
                let trace = try await gateway.command(["trace", "device-1"])
                return trace.stdout.contains("connection accepted from \(address)")
            }
        }
        // No gateway ever names the balancer's own address for a device.
        for gateway in [first, second] {
            XCTAssertFalse(gateway.process.stderr.lines.contains { $0.contains("admitted as") && $0.contains("remote=\(Self.balancerAddress)") })
        }
    }

    func testAConnectionFromOutsideTheTrustedProxiesIsRefusedBeforeTLS() async throws {
        let gateway = try await startBalancedGateway()
        let direct = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("direct"),
                                            message: "not through the balancer", extraArgs: ["-d"])
        XCTAssertNotEqual(direct.status, .exited(0), "\(direct)")
        try await gateway.waitForOutput("connection refused before TLS: 127.0.0.1:")
        XCTAssertTrue(gateway.output.contains("is not in listen.trusted_proxies, but listen.proxy_protocol expects a balancer"))
        XCTAssertFalse(gateway.output.contains("TLS handshake"), "refused before any TLS")
        let refused = try await metric(gateway, "staplegate_proxy_protocol_refused_total", ["reason": "untrusted_source"])
        XCTAssertEqual(refused, 1)
    }

    func testBadHeadersAreRefusedWithoutHarmingTheSessionsOpen() async throws {
        let gateway = try await startBalancedGateway(tls: ["handshake_timeout: 2s"])
        let haproxy = try await startBalancer(for: [gateway])
        let topic = uniqueTopic("kept")
        let subscriber = try await MosquittoSubscriber.start(.gateway(port: haproxy.port, pki: pki, device: "device-2"),
                                                             broker: broker, topic: topic)

        let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
        let attempts: [(String, [UInt8])] = [
            ("garbage", Array("GET / HTTP/1.0\r\n\r\n".utf8)),
            ("a TLS ClientHello without a header", [0x16, 0x03, 0x01, 0x00, 0x05]),
            ("an oversized v2 header", signature + [0x21, 0x11, 0xFF, 0xFF]),
            ("a v1 line that never ends", Array(("PROXY TCP4 192.0.2.1 192.0.2.2 1 2" + String(repeating: " ", count: 120)).utf8)),
        ]
        for (what, bytes) in attempts {
            let client = try RawTCPClient(port: gateway.port, source: Self.balancerAddress)
            try client.send(bytes: bytes)
            let closed = try await client.waitForClose(timeout: .seconds(5))
            XCTAssertEqual(closed.received, [], "\(what): nothing is answered")
        }
        // Truncated: a header begun and never finished is closed at the handshake timeout.
        let truncated = try RawTCPClient(port: gateway.port, source: Self.balancerAddress)
        try truncated.send(bytes: signature + [0x21, 0x11, 0x00, 0x0C, 192, 0])
        let closed = try await truncated.waitForClose(timeout: .seconds(10))
        XCTAssertGreaterThanOrEqual(closed.afterConnecting, .milliseconds(1500), "closed at the timeout, not at once")

        let badHeaders = try await metric(gateway, "staplegate_proxy_protocol_refused_total", ["reason": "bad_header"])
        XCTAssertEqual(badHeaders, 4)
        let timeouts = try await metric(gateway, "staplegate_proxy_protocol_refused_total", ["reason": "timeout"])
        XCTAssertEqual(timeouts, 1)
        // The session opened through the balancer before all this carries on.
        XCTAssertTrue(subscriber.process.isRunning, subscriber.process.output)
        let published = try await mosquittoPub(.broker(broker), topic: topic, payload: .message("still here"))
        XCTAssertEqual(published.status, .exited(0), "\(published)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["still here"])
    }

    /// HAProxy's checks (`check check-send-proxy`: a LOCAL header, or a connection it resets
    /// at once) reach the gateway every 100 ms; none is worth a warning, and HAProxy never
    /// finds the gateway down.
    func testHAProxyHealthChecksAreAnsweredQuietly() async throws {
        let gateway = try await startBalancedGateway()
        let haproxy = try await startBalancer(for: [gateway])
        var checks = 0.0
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(250), "HAProxy to run 10 health checks",
                            details: { "\(checks) so far" }) {
            // No device connects in this test: every connection is a health check.
            checks = try await self.metric(gateway, "staplegate_connections_total")
            return checks >= 10
        }
        let warnings = gateway.process.stderr.lines.filter { $0.contains(" warning ") }
        XCTAssertEqual(warnings, [], "health checks must not write warnings")
        for reason in ["untrusted_source", "bad_header", "timeout"] {
            let refused = try await metric(gateway, "staplegate_proxy_protocol_refused_total", ["reason": reason])
            XCTAssertEqual(refused, 0, reason)
        }
        XCTAssertFalse(haproxy.log.contains("is DOWN"), haproxy.log)
    }

    /// The device's own address where operators look for a connected device: the recheck's
    /// report and the admin listener's trace. Here with PROXY v1 (`send-proxy`), which
    /// `proxy_protocol: any` takes too.
    func testRecheckAndTheAdminTraceNameTheDeviceBehindTheBalancerByItsOwnAddress() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let gateway = try await startBalancedGateway(sections: [], proxyProtocol: "any")
        let haproxy = try await startBalancer(for: [gateway], sendProxy: "send-proxy")
        let subscriber = try await MosquittoSubscriber.start(.gateway(port: haproxy.port, pki: pki, device: "device-3"),
                                                             broker: broker, topic: uniqueTopic("behind"))
        var devices: [(port: Int, gateway: Int)] = []
        try await waitUntil(timeout: .seconds(10), "HAProxy to log the device", details: { haproxy.log }) {
            devices = self.balancedDevices(haproxy)
            return !devices.isEmpty
        }
        let address = "127.0.0.1:\(devices[0].port)"

        let recheck = try await gateway.command(["ocsp", "recheck", "--device", "device-3"])
        XCTAssertEqual(recheck.status, .exited(0), "\(recheck)")
        XCTAssertTrue(recheck.stdout.contains("; 1 session kept (from \(address))"), "\(recheck)")
        XCTAssertTrue(subscriber.process.isRunning, subscriber.process.output)
        let trace = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/devices/device-3/trace")
        XCTAssertEqual(trace.status, 200, "\(trace)")
        XCTAssertTrue(trace.body.contains("\"remoteAddress\":\"\(address)\""), trace.body)
        XCTAssertFalse(trace.body.contains("\"remoteAddress\":\"\(Self.balancerAddress)"), trace.body)
    }
}
