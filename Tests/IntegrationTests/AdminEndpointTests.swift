import Foundation
import TestSupport
import XCTest

/// The admin listener of the real `staplegate run` binary, with real devices (mosquitto_pub),
/// a real Mosquitto and the PKI's real `openssl ocsp` responder; /metrics is read by the
/// reference Prometheus parser (python3-prometheus-client).
final class AdminEndpointTests: GatewayTestCase {
    private static let noDeviceOCSP = "device_ocsp: { enabled: false }"

    // MARK: /metrics

    func testMetricsMoveWithTrafficAndParseWithTheReferenceParser() async throws {
        try await startResponder()
        let gateway = try await startGateway([])  // device OCSP on: the revoked device is refused
        let directory = try makeTemporaryDirectory()

        let scrape = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        XCTAssertEqual(scrape.status, 200)
        XCTAssertEqual(scrape.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        let before = try await PrometheusParser.parse(scrape.body, in: directory).get()
        XCTAssertEqual(before.value("staplegate_handshakes_total", ["result": "revoked"]), 0, "every result is there from the start")
        XCTAssertEqual(before.value("staplegate_connections_total"), 0)

        let topic = uniqueTopic("admin/metrics")
        for device in ["device-1", "device-2"] {
            let result = try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: topic, message: "hi", qos: 1)
            XCTAssertEqual(result.status, .exited(0), "\(device) could not publish:\n\(result)")
        }
        let revoked = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-revoked", topic: topic, message: "no")
        XCTAssertNotEqual(revoked.status, .exited(0), "a revoked device got through:\n\(revoked)")

        // Each publisher sent CONNECT, PUBLISH, DISCONNECT and got CONNACK, PUBACK.
        let samples = try await waitForMetrics(gateway, in: directory, "the three devices to be counted") { samples in
            samples.value("staplegate_handshakes_total", ["result": "revoked"]) == 1
                && samples.value("staplegate_sessions_active") == 0
                && samples.value("staplegate_connections_active") == 0
                && (samples.value("staplegate_proxied_messages_total", ["direction": "to_broker"]) ?? 0) >= 6
                && (samples.value("staplegate_proxied_messages_total", ["direction": "to_device"]) ?? 0) >= 4
        }
        XCTAssertEqual(samples.value("staplegate_connections_total"), 3)
        XCTAssertEqual(samples.value("staplegate_sessions_total"), 2)
        XCTAssertEqual(samples.value("staplegate_handshakes_total", ["result": "ok"]), 2)
        XCTAssertEqual(samples.value("staplegate_handshakes_total", ["result": "failed"]), 0)
        XCTAssertEqual(samples.value("staplegate_handshake_duration_seconds_count"), 2, "completed handshakes only")
        XCTAssertEqual(samples.value("staplegate_proxied_messages_total", ["direction": "to_broker"]), 6)
        XCTAssertEqual(samples.value("staplegate_proxied_messages_total", ["direction": "to_device"]), 4)
        // A QoS 1 publish of "hi" on the topic is 2 + 2 + topic + 2 + 2 bytes; CONNECT and DISCONNECT add more.
        XCTAssertGreaterThan(samples.value("staplegate_proxied_bytes_total", ["direction": "to_broker"]) ?? 0,
                             Double(2 * (8 + topic.utf8.count)))
        XCTAssertEqual(samples.value("staplegate_proxied_bytes_total", ["direction": "to_device"]), 16, "2 × (CONNACK 4 + PUBACK 4)")
        XCTAssertEqual(samples.value("staplegate_upstream_failures_total"), 0)
        XCTAssertGreaterThanOrEqual(samples.value("staplegate_device_ocsp_lookups_total", ["result": "revoked"]) ?? 0, 1)
        // The buckets run from 1 ms (handshakes) and 5 ms (responder latency) to 10 s.
        XCTAssertEqual(bucketBounds(samples, "staplegate_handshake_duration_seconds").first, 0.001)
        XCTAssertEqual(bucketBounds(samples, "staplegate_handshake_duration_seconds").dropLast().last, 10)
        XCTAssertEqual(bucketBounds(samples, "staplegate_device_ocsp_responder_latency_seconds").first, 0.005)

        // The parser is a real one: it refuses what is not the text format.
        let garbage = try await PrometheusParser.parse("staplegate_connections_total{result=\"ok\" 1 2 3\n", in: directory)
        guard case .failure = garbage else { return XCTFail("the parser accepted garbage: \(garbage)") }
    }

    func testABrokerOutageFailsReadinessAndCountsUpstreamFailures() async throws {
        let gateway = try await startGateway([Self.noDeviceOCSP, "trace: { enabled: false }"])
        let port = try XCTUnwrap(gateway.adminPort)
        let ready = try await adminRequest(port: port, "/readyz")
        XCTAssertEqual(ready.status, 200, "\(ready)")
        XCTAssertEqual(try ready.json()["ready"] as? Bool, true)

        await broker.stop()
        var notReady: AdminHTTPResponse?
        try await waitUntil(timeout: .seconds(10), pollEvery: .milliseconds(200), "/readyz to notice the broker is down") {
            notReady = try await adminRequest(port: port, "/readyz")
            return notReady?.status == 503
        }
        let failing = try XCTUnwrap(try notReady!.json()["failing"] as? [[String: String]], "\(notReady!)")
        XCTAssertEqual(failing.map { $0["check"] }, ["upstream"], "\(failing)")
        XCTAssertTrue(failing[0]["reason"]?.contains("127.0.0.1:\(broker.port!)") == true, "names the broker: \(failing)")

        let refused = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("admin/down"), message: "x")
        XCTAssertNotEqual(refused.status, .exited(0))
        let directory = try makeTemporaryDirectory()
        try await waitForMetrics(gateway, in: directory, "the upstream failure to be counted") { samples in
            samples.value("staplegate_upstream_failures_total") == 1 && samples.value("staplegate_sessions_total") == 0
        }
        // Tracing off: no trace to show.
        let trace = try await adminRequest(port: port, "/devices/device-1/trace")
        XCTAssertEqual(trace.status, 503, "\(trace)")

        try await broker.start()
        try await waitUntil(timeout: .seconds(10), pollEvery: .milliseconds(200), "/readyz to recover with the broker") {
            try await adminRequest(port: port, "/readyz").status == 200
        }
    }

    func testAStrictStaplingPolicyWithoutAStapleIsNotReady() async throws {
        // No responder runs: no staple can be fetched.
        let gateway = try await startGateway([Self.noDeviceOCSP, "stapling: { policy: strict, retry_min: 1s, retry_max: 2s }"],
                                             stapling: true)
        let readiness = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/readyz")
        XCTAssertEqual(readiness.status, 503, "\(readiness)")
        let failing = try XCTUnwrap(try readiness.json()["failing"] as? [[String: String]])
        XCTAssertEqual(failing.map { $0["check"] }, ["stapling"], "\(failing)")
        XCTAssertTrue(failing[0]["reason"]?.contains("staple") == true, "\(failing)")
    }

    // MARK: /healthz, /ocsp, traces, errors

    func testHealthOCSPStateDeviceTracesAndErrors() async throws {
        try await startResponder()
        let gateway = try await startGateway([], stapling: true)
        let port = try XCTUnwrap(gateway.adminPort)
        try await gateway.waitForOutput("OCSP staple refreshed", timeout: .seconds(15))

        let health = try await adminRequest(port: port, "/healthz")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.body, "ok\n")

        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: uniqueTopic("admin/trace"), message: "x")
        XCTAssertEqual(result.status, .exited(0), "\(result)")

        let ocsp = try await adminRequest(port: port, "/ocsp")
        XCTAssertEqual(ocsp.status, 200)
        XCTAssertEqual(ocsp.headers["content-type"], "application/json")
        let state = try ocsp.json()
        XCTAssertEqual(state["staplingEnabled"] as? Bool, true)
        let staple = try XCTUnwrap((state["staples"] as? [[String: Any]])?.first, "\(ocsp)")
        XCTAssertEqual(staple["status"] as? String, "good")
        XCTAssertEqual(staple["consecutiveFailures"] as? Int, 0)
        XCTAssertNotNil(staple["thisUpdate"] as? String)
        XCTAssertNotNil(staple["serial"] as? String)
        XCTAssertGreaterThan(staple["secondsToNextUpdate"] as? Double ?? 0, 0, "\(staple)")
        XCTAssertEqual(state["deviceChecksEnabled"] as? Bool, true)
        let cached = try XCTUnwrap(state["deviceCache"] as? [[String: Any]])
        XCTAssertTrue(cached.contains { $0["subject"] as? String == "CN=device-1" && $0["status"] as? String == "good" }, "\(cached)")

        var events: [[String: Any]] = []
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(200), "device-1's disconnect in its trace") {
            let trace = try await adminRequest(port: port, "/devices/device-1/trace?since=1h")
            events = trace.status == 200 ? (try JSONSerialization.jsonObject(with: Data(trace.body.utf8)) as? [[String: Any]]) ?? [] : []
            return events.contains { $0["kind"] as? String == "disconnect" }
        }
        XCTAssertEqual(events.first?["kind"] as? String, "accepted")
        XCTAssertTrue(events.allSatisfy { $0["device"] as? String == "device-1" || $0["kind"] as? String == "accepted" })

        let unknown = try await adminRequest(port: port, "/devices/nobody-here/trace")
        XCTAssertEqual(unknown.status, 404)
        XCTAssertEqual(try unknown.json()["device"] as? String, "nobody-here")
        let badSince = try await adminRequest(port: port, "/devices/device-1/trace?since=soon")
        XCTAssertEqual(badSince.status, 400)
        let missing = try await adminRequest(port: port, "/nothing/here")
        XCTAssertEqual(missing.status, 404)
        XCTAssertNotNil(try missing.json()["error"] as? String)
        let post = try await adminRequest(port: port, "/healthz", method: "POST")
        XCTAssertEqual(post.status, 405)
        XCTAssertEqual(post.headers["allow"], "GET")
    }

    func testADisabledAdminListenerOpensNoPort() async throws {
        let port = try FreePort.next()
        let gateway = try await startGateway([Self.noDeviceOCSP], admin: "{ enabled: false, port: \(port) }")
        XCTAssertNil(gateway.adminPort)
        try await gateway.waitForOutput("admin listener off")
        XCTAssertFalse(gateway.output.contains(StapleGateProcess.adminLogLine), gateway.output)
        XCTAssertThrowsError(try RawTCPClient(port: port), "nothing listens on \(port)")
    }

    // MARK: - Helpers

    private func startResponder() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
    }

    private func startGateway(_ sections: [String], stapling: Bool = false,
                              admin: String = "{ port: 0 }") async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: sections, stapling: stapling, admin: admin)
        addTeardownBlock { [weak self] in
            if let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 {
                print("--- gateway log ---\n\(gateway.output)\n--- broker log ---\n\(self?.broker.log ?? "")")
            }
            await gateway.stop()
        }
        return gateway
    }

    /// Scrapes until `condition` holds for the parsed samples; returns the last scrape.
    @discardableResult
    private func waitForMetrics(_ gateway: StapleGateProcess, in directory: TemporaryDirectory, _ what: String,
                                until condition: ([PrometheusSample]) -> Bool) async throws -> [PrometheusSample] {
        var latest: [PrometheusSample] = []
        try await waitUntil(timeout: .seconds(15), pollEvery: .milliseconds(250), what,
                            details: { latest.filter { $0.name.hasPrefix("staplegate_") && !$0.name.hasSuffix("_bucket") }
                                .map { "\($0.name)\($0.labels) \($0.value)" }.joined(separator: "\n") }) {
            let scrape = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
            latest = try await PrometheusParser.parse(scrape.body, in: directory).get()
            return condition(latest)
        }
        return latest
    }

    /// The histogram's bucket bounds in seconds, ascending (+Inf last).
    private func bucketBounds(_ samples: [PrometheusSample], _ name: String) -> [Double] {
        samples.filter { $0.name == "\(name)_bucket" }.compactMap { $0.labels["le"].flatMap(Double.init) }.sorted()
    }
}
