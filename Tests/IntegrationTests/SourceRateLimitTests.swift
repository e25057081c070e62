import Foundation
import TestSupport
import XCTest

/// `listen.per_source_connection_rate` on the real binary: a source past its rate is closed
/// before TLS and counted, while another source goes on to its handshake; behind a balancer the
/// source is the PROXY header's, not the balancer's.
final class SourceRateLimitTests: GatewayTestCase {
    private func startGateway(listen: [String]) async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: try makeTemporaryDirectory(), sections: ["device_ocsp: { enabled: false }"],
            tls: ["handshake_timeout: 60s"], listen: listen, logging: "{ level: info }")
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 { print(gateway.output) }
            await gateway.stop()
        }
        return gateway
    }

    private func metric(_ gateway: StapleGateProcess, _ name: String, _ labels: [String: String] = [:]) async throws -> Double {
        let scrape = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        let samples = try await PrometheusParser.parse(scrape.body, in: try makeTemporaryDirectory()).get()
        return samples.value(name, labels) ?? 0
    }

    private let sourceRate = ["reason": "source_rate"]

    /// Six connections from one source at a rate of 2 a second: two of them (three or four, on a
    /// machine slow enough to refill tokens meanwhile) are kept for their handshake, the rest closed.
    /// Which two is the event loops' order, not the order of connecting.
    private func assertBurstIsCut(_ clients: [RawTCPClient], _ gateway: StapleGateProcess) async throws {
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "refusals counted and closed") {
            let refused = Int(try await self.metric(gateway, "staplegate_connections_refused_total", self.sourceRate))
            return refused >= 2 && clients.filter { !$0.isOpen }.count == refused
        }
        let closed = clients.filter { !$0.isOpen }.count
        XCTAssertTrue((2...4).contains(closed), "\(closed) of \(clients.count) closed")
        try await gateway.waitForOutput("opened more than 2 new connections in a second (listen.per_source_connection_rate")
    }

    func testAnAddressPastItsRateIsClosedBeforeTLS() async throws {
        let gateway = try await startGateway(listen: ["per_source_connection_rate: 2"])
        let clients = try (0..<6).map { _ in try RawTCPClient(port: gateway.port) }
        try await assertBurstIsCut(clients, gateway)
        let failed = try await metric(gateway, "staplegate_handshakes_total", ["result": "failed"])
        XCTAssertEqual(failed, 0, "no handshake was started for them")
    }

    func testBehindABalancerTheHeadersSourceIsLimitedNotTheBalancer() async throws {
        let gateway = try await startGateway(listen: ["per_source_connection_rate: 2", "proxy_protocol: v1",
                                                      "trusted_proxies: [\"127.0.0.1/32\"]"])
        func connect(from source: String) throws -> RawTCPClient {
            let client = try RawTCPClient(port: gateway.port)
            try client.send("PROXY TCP4 \(source) 192.0.2.1 40000 8883\r\n")
            return client
        }
        let flooding = try (0..<6).map { _ in try connect(from: "198.51.100.7") }
        try await assertBurstIsCut(flooding, gateway)
        let refused = try await metric(gateway, "staplegate_connections_refused_total", sourceRate)

        // Another device behind the same balancer reaches TLS: its garbage fails the handshake.
        let other = try connect(from: "198.51.100.8")
        try other.send("GET / HTTP/1.1\r\n\r\n")
        _ = try await other.waitForClose(timeout: .seconds(15))
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(100), "the other source's handshake counted") {
            try await self.metric(gateway, "staplegate_handshakes_total", ["result": "failed"]) == 1
        }
        let refusedAfter = try await metric(gateway, "staplegate_connections_refused_total", sourceRate)
        XCTAssertEqual(refusedAfter, refused, "the other source was not refused")
    }
}
