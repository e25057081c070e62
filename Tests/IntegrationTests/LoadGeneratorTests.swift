import Foundation
import TestSupport
import XCTest

/// The real `staplegate load` binary, in its own process, in each mode with tiny sizes: through
/// a real gateway with TLS 1.3 and client certificates to a real Mosquitto, and once plain
/// straight to the broker. Only counts are asserted, never timings.
final class LoadGeneratorTests: GatewayTestCase {
    private var executable: String!

    override func setUp() async throws {
        try await super.setUp()
        executable = try CommandLineTests.findExecutable()
    }

    /// Runs `staplegate load <arguments> --json`; returns the result and the report it printed.
    private func load(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> (CommandResult, [String: Any]) {
        let result = try await ManagedProcess(executable, ["load"] + arguments + ["--json", "--threads", "2"])
            .commandResult(timeout: timeout)
        let line = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        guard let report = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            XCTFail("no JSON report on stdout: \(result)")
            return (result, [:])
        }
        return (result, report)
    }

    private func tlsArguments(port: Int, device: String = "device-1") -> [String] {
        ["--port", "\(port)", "--cafile", pki.caChain, "--cert", pki.certificate(device), "--key", pki.key(device)]
    }

    private func int(_ report: [String: Any], _ key: String, file: StaticString = #filePath, line: UInt = #line) -> Int? {
        guard let value = report[key] as? NSNumber else {
            XCTFail("no \(key) in \(report)", file: file, line: line)
            return nil
        }
        return value.intValue
    }

    private func double(_ report: [String: Any], _ key: String, file: StaticString = #filePath, line: UInt = #line) -> Double? {
        guard let value = report[key] as? NSNumber else {
            XCTFail("no \(key) in \(report)", file: file, line: line)
            return nil
        }
        return value.doubleValue
    }

    // MARK: sessions

    func testSessionsModeOpensHoldsAndClosesEverySessionThroughTheGateway() async throws {
        let gateway = try await startGateway()

        let (result, report) = try await load(["sessions"] + tlsArguments(port: gateway.port)
            + ["--sessions", "50", "--concurrency", "8", "--hold", "1"])

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertEqual(report["mode"] as? String, "sessions")
        XCTAssertEqual(report["tls_version"] as? String, "1.3")
        XCTAssertEqual(int(report, "sessions_requested"), 50)
        XCTAssertEqual(int(report, "sessions_opened"), 50)
        XCTAssertEqual(int(report, "sessions_failed"), 0)
        XCTAssertEqual(int(report, "sessions_dropped"), 0)
        XCTAssertEqual(int(report, "sessions_disconnected_cleanly"), 50)
        XCTAssertEqual((report["failure_reasons"] as? [String: Any])?.count, 0)
        XCTAssertGreaterThan(double(report, "open_seconds") ?? 0, 0)
        XCTAssertNotNil(double(report, "connect_p99_ms"))
        XCTAssertNotNil(double(report, "cpu_seconds"))
        XCTAssertNotNil(double(report, "open_cpu_seconds"))
        XCTAssertEqual(int(report, "open_files_limit"), Int(try XCTUnwrap(hardOpenFilesLimit())), "soft limit raised to the hard one")
        XCTAssertNil(report["messages_sent"], "not measured in sessions mode")
        try await waitUntil(timeout: .seconds(10), "the gateway to see the 50 sessions admitted") {
            gateway.log.text.components(separatedBy: "admitted as device-1").count - 1 >= 50
        }
    }

    func testSessionsTakeTheDevicesOfAFolderRoundRobin() async throws {
        let gateway = try await startGateway()

        // The demo PKI holds device-1 … device-3 (.pem and .key), then no device-4.
        let (result, report) = try await load(["sessions", "--port", "\(gateway.port)", "--cafile", pki.caChain,
                                               "--devices-dir", pki.folder, "--sessions", "6", "--hold", "0"])

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertEqual(int(report, "client_certificates"), 3)
        XCTAssertEqual(int(report, "sessions_opened"), 6)
        for device in ["device-1", "device-2", "device-3"] {
            try await waitUntil(timeout: .seconds(10), "the gateway to admit two sessions as \(device)") {
                gateway.log.text.components(separatedBy: "admitted as \(device)").count - 1 == 2
            }
        }
    }

    /// The negative case: a CA that did not issue the gateway's certificate.
    func testAWrongCAFailsEverySessionWithItsReasonAndANonZeroExit() async throws {
        let gateway = try await startGateway()

        let (result, report) = try await load(["sessions", "--port", "\(gateway.port)", "--cafile", pki.path("rogue-ca.pem"),
                                               "--cert", pki.certificate("device-1"), "--key", pki.key("device-1"),
                                               "--sessions", "10", "--hold", "0"])

        XCTAssertEqual(result.status, .exited(1), "\(result)")
        XCTAssertEqual(int(report, "sessions_opened"), 0)
        XCTAssertEqual(int(report, "sessions_failed"), 10)
        let reasons = try XCTUnwrap(report["failure_reasons"] as? [String: Int], "\(report)")
        XCTAssertEqual(reasons.values.reduce(0, +), 10, "\(reasons)")
        XCTAssertTrue(reasons.keys.allSatisfy { $0.contains("TLS handshake") && $0.contains("certificate verify failed") }, "\(reasons)")
        XCTAssertTrue(result.stderr.contains("10 sessions failed to open"), result.stderr)
        XCTAssertNil(report["open_seconds"], "nothing opened")
    }

    // MARK: throughput and latency

    func testThroughputModeDeliversEveryMessageThroughTheGateway() async throws {
        let gateway = try await startGateway()

        // Low rate on loopback: QoS 0 loses nothing, so the counts must match exactly.
        let (result, report) = try await load(["throughput"] + tlsArguments(port: gateway.port)
            + ["--publishers", "2", "--subscribers", "1", "--payload-size", "64", "--rate", "200", "--duration", "2",
               "--topic", uniqueTopic("load/throughput")])

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertEqual(int(report, "sessions_opened"), 3)
        XCTAssertEqual(int(report, "subscribers_ready"), 1)
        let sent = try XCTUnwrap(int(report, "messages_sent"))
        XCTAssertGreaterThan(sent, 0)
        XCTAssertEqual(int(report, "messages_received"), sent)
        XCTAssertEqual(int(report, "messages_expected"), sent)
        XCTAssertEqual(int(report, "messages_missing"), 0)
        XCTAssertNotNil(double(report, "messages_per_second"))
        XCTAssertNotNil(double(report, "bytes_per_second"))
        XCTAssertNotNil(double(report, "sent_messages_per_second"))
        XCTAssertNotNil(double(report, "publish_cpu_seconds"))
        XCTAssertEqual(int(report, "payload_bytes"), 64)
    }

    func testLatencyModeMeasuresEveryMessageThroughTheGateway() async throws {
        let gateway = try await startGateway()

        let (result, report) = try await load(["latency"] + tlsArguments(port: gateway.port, device: "device-2")
            + ["--publishers", "2", "--rate", "200", "--duration", "2", "--topic", uniqueTopic("load/latency")])

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let sent = try XCTUnwrap(int(report, "messages_sent"))
        XCTAssertGreaterThan(sent, 0)
        XCTAssertEqual(int(report, "messages_received"), sent)
        XCTAssertEqual(int(report, "latency_count"), sent, "every message carried its stamp")
        let percentiles = ["latency_min_us", "latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_p999_us", "latency_max_us"]
            .compactMap { double(report, $0) }
        XCTAssertEqual(percentiles.count, 6)
        XCTAssertEqual(percentiles, percentiles.sorted(), "min ≤ p50 ≤ p90 ≤ p99 ≤ p99.9 ≤ max")
        XCTAssertGreaterThan(percentiles.first ?? 0, 0)
    }

    /// The baseline: plain MQTT straight to the broker, publishing as fast as possible.
    func testPlainThroughputStraightToTheBroker() async throws {
        let (result, report) = try await load(["throughput", "--no-tls", "--port", "\(try XCTUnwrap(broker.port))",
                                               "--publishers", "2", "--duration", "1", "--topic", uniqueTopic("load/plain")])

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertEqual(report["tls"] as? Bool, false)
        XCTAssertNil(report["tls_version"])
        XCTAssertEqual(int(report, "client_certificates"), 0)
        let sent = try XCTUnwrap(int(report, "messages_sent"))
        let received = try XCTUnwrap(int(report, "messages_received"))
        XCTAssertGreaterThan(sent, 0)
        XCTAssertGreaterThan(received, 0)
        XCTAssertLessThanOrEqual(received, sent, "one subscriber receives each message once at most")
        XCTAssertEqual(int(report, "messages_missing"), sent - received)
    }

    // MARK: Options

    func testUnusableOptionsAreRefusedByNameBeforeConnecting() async throws {
        let missingRate = try await ManagedProcess(executable, ["load", "latency", "--port", "1", "--cafile", pki.caChain])
            .commandResult(timeout: .seconds(20))
        XCTAssertEqual(missingRate.status, .exited(64), "\(missingRate)")
        XCTAssertTrue(missingRate.stderr.contains("--rate is required in latency mode"), missingRate.stderr)

        let badGroup = try await ManagedProcess(executable, ["load", "sessions", "--port", "1", "--cafile", pki.caChain,
                                                             "--groups", "NoSuchGroup"]).commandResult(timeout: .seconds(20))
        XCTAssertEqual(badGroup.status, .exited(64), "\(badGroup)")
        XCTAssertTrue(badGroup.stderr.contains("--groups"), badGroup.stderr)
    }

    private func hardOpenFilesLimit() -> UInt64? {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        return UInt64(limit.rlim_max)
    }
}
