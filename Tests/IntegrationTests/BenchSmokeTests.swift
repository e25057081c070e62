import Foundation
import TestSupport
import XCTest

/// `staplegate-bench --smoke`: the whole bench at tiny sizes, so that it cannot rot. Only that
/// every front was measured and every output file is complete is checked, never a timing.
final class BenchSmokeTests: XCTestCase {
    /// The fronts ((a) StapleGate with the example's defaults, (a′) stripped, nginx, Mosquitto TLS)
    /// and the figures each must have in results.json.
    private let fronts = ["staplegate", "staplegate_stripped", "nginx", "mosquitto"]
    private let figures = [
        "full_handshakes_per_s", "full_handshake_cpu_us", "resumed_handshakes_per_s", "resumed_handshake_cpu_us",
        "throughput_64B_msg_per_s", "cpu_per_message_64B_us", "throughput_4KiB_msg_per_s", "cpu_per_message_4KiB_us",
        "latency_p50_us", "latency_p99_us", "latency_p999_us", "rss_per_idle_session_kib", "sessions_open_s",
    ]
    /// The feature-cost group: each variant's handshake CPU and each feature's cost beside it.
    private let featureFigures = [
        "defaults_handshake_cpu_us", "defaults_trace_off_handshake_cpu_us", "trace_cost_percent",
        "defaults_device_ocsp_off_handshake_cpu_us", "device_ocsp_cache_hit_cost_percent", "defaults_first_connect_handshake_cpu_us",
        "first_connect_extra_cpu_us", "first_connect_responder_cpu_us", "stripped_cache_hit_handshake_cpu_us",
        "stripped_first_connect_handshake_cpu_us", "stripped_device_ocsp_off_handshake_cpu_us", "stripped_cache_hit_cost_percent",
    ]
    private let targets = ["full_handshake_cpu", "resumed_handshake_cpu", "trace_cost", "device_ocsp_cache_hit_cost",
                           "first_connect_extra_cpu", "cpu_per_message_64B", "cpu_per_message_4KiB", "rss_per_idle_session",
                           "sessions_open_time", "latency_p99"]
    /// The fleet figures (issue 14), measured when PostgreSQL 15 is installed; each is only
    /// recorded when its run was what it claims (all local hits; all table answers, no responder request).
    private let fleetFigures = ["postgres_cache_hit_handshake_cpu_us", "postgres_to_sqlite_cache_hit_ratio", "local_hit_session_cpu_us",
                                "table_miss_session_cpu_us", "table_read_added_cpu_us", "table_miss_responder_requests"]

    func testSmokeRunWritesEveryResultFile() async throws {
        // A failure, not a skip: a bench that silently stops running is the rot this test is for.
        for (path, package) in [("/usr/sbin/nginx", "nginx"), ("/usr/lib/nginx/modules/ngx_stream_module.so", "libnginx-mod-stream"),
                                ("/usr/bin/gnuplot", "gnuplot-nox")] where !FileManager.default.fileExists(atPath: path) {
            XCTFail("\(path) is missing: install Debian's \(package) (`make deps` does) to run the bench smoke test")
            return
        }
        let bench = try Self.executable("staplegate-bench")
        let staplegate = try Self.executable("staplegate")
        let directory = try TemporaryDirectory(prefix: "bench-smoke")
        defer { directory.remove() }
        let results = directory.file("results")

        let run = try await ManagedProcess(bench, ["--smoke", "--output", results, "--staplegate", staplegate])
            .commandResult(timeout: .seconds(420))
        XCTAssertEqual(run.status, .exited(0), "staplegate-bench --smoke failed:\n\(run)")
        guard run.status.succeeded else { return }

        for file in ["results.md", "results.json", "chart.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(results)/\(file)"), "\(file) missing in \(results)")
        }
        let png = try Data(contentsOf: URL(fileURLWithPath: "\(results)/chart.png"))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "chart.png is not a PNG")

        let json = try Data(contentsOf: URL(fileURLWithPath: "\(results)/results.json"))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: json) as? [String: Any], "results.json is not an object")
        let frontObjects = try XCTUnwrap(object["fronts"] as? [String: Any], "results.json has no fronts")
        for front in fronts {
            let measured = (frontObjects[front] as? [String: Any])?["figures"] as? [String: Any] ?? [:]
            for figure in figures {
                let spread = measured[figure] as? [String: Any]
                XCTAssertNotNil(spread?["median"] as? Double, "results.json: \(front) has no \(figure)")
            }
        }
        let features = (object["staplegate_features"] as? [String: Any])?["figures"] as? [String: Any] ?? [:]
        for figure in featureFigures {
            XCTAssertNotNil((features[figure] as? [String: Any])?["median"] as? Double, "results.json: features have no \(figure)")
        }
        // Column (a) is the repository's example configuration, not one the bench wrote.
        let defaults = try XCTUnwrap(object["staplegate_defaults"] as? [String: Any], "results.json has no staplegate_defaults")
        XCTAssertTrue((defaults["example"] as? String)?.hasSuffix("config/staplegate.yaml") ?? false, "\(defaults)")
        XCTAssertTrue((defaults["as_shipped"] as? String)?.contains("trace true") ?? false, "\(defaults)")
        let fleet = try XCTUnwrap(object["staplegate_fleet"] as? [String: Any], "results.json has no staplegate_fleet group")
        if FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/15/bin/postgres") {
            let measured = fleet["figures"] as? [String: Any] ?? [:]
            for figure in fleetFigures {
                XCTAssertNotNil((measured[figure] as? [String: Any])?["median"] as? Double, "results.json: fleet has no \(figure)")
            }
            XCTAssertEqual((measured["table_miss_responder_requests"] as? [String: Any])?["max"] as? Double, 0,
                           "the table-miss run asked the responder")
        } else {
            XCTAssertNotNil(fleet["skipped"] as? String, "without PostgreSQL the fleet group must say why it is empty")
        }
        let judged = (object["targets"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        XCTAssertEqual(judged, targets, "results.json should judge the issue's \(targets.count) targets")
        // Fronts and load generators on separate cores wherever there are two.
        let placement = try XCTUnwrap(object["cpu_placement"] as? [String: Any], "results.json has no cpu_placement")
        if ProcessInfo.processInfo.activeProcessorCount >= 2 {
            let servers = try XCTUnwrap(placement["servers"] as? String, "\(placement)")
            let clients = try XCTUnwrap(placement["clients"] as? String, "\(placement)")
            XCTAssertTrue(Set(servers.split(separator: ",")).isDisjoint(with: clients.split(separator: ",")), "\(placement)")
        }

        let markdown = try String(contentsOfFile: "\(results)/results.md", encoding: .utf8)
        XCTAssertTrue(markdown.contains("| Figure | (a) StapleGate defaults → Mosquitto | (a′) StapleGate stripped → Mosquitto |"),
                      "results.md has no table with both StapleGate columns:\n\(markdown)")
        for row in ["| Server CPU per full handshake (µs) |", "| Trace cost: added to the handshake CPU (%) |",
                    "| First connect: gateway CPU added over a cache hit (µs) |"] {
            XCTAssertTrue(markdown.contains(row), "results.md misses the row \(row):\n\(markdown)")
        }
    }

    /// Column (a) runs the example configuration: without a readable one the bench stops at once,
    /// naming the file, before it starts any process.
    func testBadExampleConfigurationFailsNamingTheFile() async throws {
        let bench = try Self.executable("staplegate-bench")
        let staplegate = try Self.executable("staplegate")
        let directory = try TemporaryDirectory(prefix: "bench-example")
        defer { directory.remove() }
        let broken = directory.file("broken.yaml")
        try "listen: [unclosed\n".write(toFile: broken, atomically: true, encoding: .utf8)
        for example in [broken, directory.file("missing.yaml")] {
            let run = try await ManagedProcess(bench, ["--smoke", "--output", directory.file("results"), "--staplegate", staplegate,
                                                       "--example", example])
                .commandResult(timeout: .seconds(60))
            XCTAssertFalse(run.status.succeeded, "the bench ran with \(example):\n\(run)")
            XCTAssertTrue(run.stderr.contains(example), "the failure does not name \(example):\n\(run)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("results/work")), "the bench started work")
        }
    }

    /// `swift build` / `swift test` put every product of the package next to the test bundle.
    private static func executable(_ name: String) throws -> String {
        let bundle = Bundle(for: BenchSmokeTests.self).bundleURL
        let folders = [bundle.deletingLastPathComponent(), bundle, Bundle.main.bundleURL,
                       Bundle.main.executableURL?.deletingLastPathComponent()].compactMap { $0 }
        let candidates = folders.map { $0.appendingPathComponent(name).path }
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BenchSetupFailure("\(name) is not next to the test bundle (looked for \(candidates.joined(separator: ", "))); "
                + "build it with `swift build --build-tests` or run the tests with `swift test`")
        }
        return found
    }
}

private struct BenchSetupFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
