import Foundation
import TestSupport
import XCTest

/// Traces in one place (issue 14): real `staplegate run` processes with `fleet: { store:
/// postgres }` on one real PostgreSQL 15 write their trace events there, and the real
/// `staplegate trace --config …` and `/devices/ID/trace` of any of them read every gateway's.
final class FleetTraceTests: GatewayTestCase {
    private var postgres: PostgresServer?
    private var gateways: [StapleGateProcess] = []

    override func tearDown() async throws {
        for gateway in gateways { await gateway.stop() }
        gateways = []
        await postgres?.remove()
        postgres = nil
        try await super.tearDown()
    }

    // MARK: Tests

    func testADeviceTraceReadFromInstanceCShowsItsConnectionsThroughAAndBInTimeOrderAndFollowSeesThem() async throws {
        let server = try await startPostgres()
        let gatewayA = try await startGateway("gw-a", server, [DeviceTraceTests.noDeviceOCSP])
        let gatewayB = try await startGateway("gw-b", server, [DeviceTraceTests.noDeviceOCSP])
        let gatewayC = try await startGateway("gw-c", server, [DeviceTraceTests.noDeviceOCSP])
        let topic = uniqueTopic("fleet/trace")

        // Following from C before the device shows up anywhere.
        let follow = try ManagedProcess(try CommandLineTests.findExecutable(),
                                        ["trace", "device-1", "--follow", "--config", gatewayC.configPath])
        addTeardownBlock { await follow.terminate() }

        try await publish(through: gatewayA, as: "device-1", topic: topic)
        _ = try await waitForEvents(from: gatewayC, "device-1", "device-1's session through A to end") { events in
            events.contains { $0.instance == "gw-a" && $0.kind == "disconnect" }
        }
        try await publish(through: gatewayB, as: "device-1", topic: topic)
        let events = try await waitForEvents(from: gatewayC, "device-1", "device-1's session through B to end") { events in
            events.contains { $0.instance == "gw-b" && $0.kind == "disconnect" }
        }

        // Two connections, one per gateway, each whole, in time order, each event naming its gateway.
        XCTAssertEqual(Set(events.compactMap(\.instance)), ["gw-a", "gw-b"], "\(events.map(\.summary))")
        XCTAssertFalse(events.contains { $0.instance == nil })
        XCTAssertEqual(events.map(\.time), events.map(\.time).sorted(), "time order")
        let lastOfA = try XCTUnwrap(events.lastIndex { $0.instance == "gw-a" })
        let firstOfB = try XCTUnwrap(events.firstIndex { $0.instance == "gw-b" })
        XCTAssertLessThan(lastOfA, firstOfB, "the session through A came first")
        for instance in ["gw-a", "gw-b"] {
            let kinds = events.filter { $0.instance == instance }.map(\.kind)
            XCTAssertEqual(kinds.first, "accepted", "\(instance): \(kinds)")
            XCTAssertEqual(kinds.last, "disconnect", "\(instance): \(kinds)")
            XCTAssertEqual(Set(events.filter { $0.instance == instance }.map(\.connectionID)).count, 1, instance)
        }
        let timeline = try await trace(gatewayC, ["device-1"]).stdout.split(separator: "\n")
        XCTAssertTrue(timeline.contains { $0.contains("  gw-a  #") && $0.contains(" accepted ") }, timeline.joined(separator: "\n"))
        XCTAssertTrue(timeline.contains { $0.contains("  gw-b  #") && $0.contains(" disconnect ") }, timeline.joined(separator: "\n"))

        // --follow on C printed every event of both gateways, once each.
        try await waitUntil(timeout: .seconds(10), "--follow to print both sessions", details: { follow.output }) {
            follow.stdout.lines.filter { $0.contains(" disconnect ") }.count == 2
        }
        let followed = follow.stdout.lines
        XCTAssertEqual(followed.count, events.count, followed.joined(separator: "\n"))
        XCTAssertTrue(followed.contains { $0.contains("  gw-a  #") && $0.contains(" disconnect ") }, followed.joined(separator: "\n"))
        XCTAssertTrue(followed.contains { $0.contains("  gw-b  #") && $0.contains(" disconnect ") }, followed.joined(separator: "\n"))
        XCTAssertTrue(follow.isRunning)

        // /devices/ID/trace on C: the same events.
        let adminPort = try XCTUnwrap(gatewayC.adminPort)
        let response = try await adminRequest(port: adminPort, "/devices/device-1/trace")
        XCTAssertEqual(response.status, 200, "\(response)")
        let fromAdmin = try TraceTimelineDecoder.decode(array: response.body)
        XCTAssertEqual(fromAdmin.map(\.instance), events.map(\.instance))
        XCTAssertEqual(fromAdmin.map(\.kind), events.map(\.kind))
        // Negative control: the file C would have written without a fleet does not exist.
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(gatewayC.stateDirectory)/trace.sqlite"))
        let recent = try await traceEvents(gatewayC, ["device-1", "--since", "1h"])
        XCTAssertEqual(recent.map(\.kind), events.map(\.kind))

        // `--failures` on C: a device without a certificate refused by B, named with its gateway.
        let refused = try await mosquittoPub(port: gatewayB.port, pki: pki, device: nil, topic: topic, message: "m", qos: 1)
        XCTAssertNotEqual(refused.status, .exited(0), "\(refused)")
        var failures: [FleetEvent] = []
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(250), "B's refusal in C's --failures",
                            details: { failures.map { "\($0.instance ?? "-") \($0.kind): \($0.summary)" }.joined(separator: "\n") }) {
            failures = try await self.traceEvents(gatewayC, ["--failures"])
            return failures.contains { $0.instance == "gw-b" && $0.kind == "tls_failed" }
        }
        XCTAssertFalse(failures.contains { $0.device == "device-1" }, "device-1's sessions were not failures")
    }

    /// `trace enable` on C switches message trace on for the device's sessions through A.
    func testMessageTraceEnabledFromOneInstanceAppliesOnAnother() async throws {
        let server = try await startPostgres()
        let gatewayA = try await startGateway("gw-a", server, [DeviceTraceTests.noDeviceOCSP])
        let gatewayC = try await startGateway("gw-c", server, [DeviceTraceTests.noDeviceOCSP])
        let topic = uniqueTopic("fleet/msg")

        // Negative control: before the switch, a session through A records no PUBLISH.
        try await publish(through: gatewayA, as: "device-2", topic: topic)
        let untraced = try await waitForEvents(from: gatewayC, "device-2", "the untraced session") { events in
            events.contains { $0.kind == "disconnect" }
        }
        XCTAssertFalse(untraced.contains { $0.kind == "publish" })

        let enabled = try await trace(gatewayC, ["enable", "device-2", "--for", "10m"])
        XCTAssertTrue(enabled.stdout.contains("message trace on for device-2 until"), "\(enabled)")
        // A reads the switches every second: sessions through A start recording within a few.
        var events: [FleetEvent] = []
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(300), "a PUBLISH of device-2 recorded by A",
                            details: { events.map { "\($0.instance ?? "-") \($0.kind) \($0.summary)" }.joined(separator: "\n") }) {
            try await self.publish(through: gatewayA, as: "device-2", topic: topic)
            events = try await self.traceEvents(gatewayC, ["device-2"])
            return events.contains { $0.kind == "publish" && $0.instance == "gw-a" && $0.details["topic"] == topic }
        }
    }

    /// The database stopped mid-traffic: devices keep flowing, dropped events are counted; the
    /// database back: trace writes resume without a restart.
    func testWithTheDatabaseStoppedDevicesKeepFlowingDropsAreCountedAndWritesResume() async throws {
        let responder = try await OCSPResponder.start(pki: pki)
        addTeardownBlock { await responder.stop() }
        let server = try await startPostgres()
        let gateway = try await startGateway("gw-a", server, [])
        let topic = uniqueTopic("fleet/outage")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        try await publish(through: gateway, as: "device-1", topic: topic)
        let before = try await waitForEvents(from: gateway, "device-1", "device-1's first session") { events in
            events.contains { $0.kind == "disconnect" }
        }
        XCTAssertTrue(before.contains { $0.kind == "ocsp_check" })
        let follow = try ManagedProcess(try CommandLineTests.findExecutable(),
                                        ["trace", "device-1", "--follow", "--config", gateway.configPath])
        addTeardownBlock { await follow.terminate() }
        try await waitUntil(timeout: .seconds(10), "--follow to print the first session", details: { follow.output }) {
            follow.stdout.lines.filter { $0.contains(" disconnect ") }.count == 1
        }

        await server.stop()
        var sent = 1
        for device in ["device-1", "device-2", "device-3", "device-1"] {
            try await publish(through: gateway, as: device, topic: topic)
            sent += 1
        }
        try await subscriber.waitForMessages(sent)
        try await gateway.waitForOutput("trace store failing: ", timeout: .seconds(20))
        let dropped = try await droppedMetric(gateway)
        XCTAssertGreaterThan(dropped, 0)
        XCTAssertTrue(gateway.output.contains("cannot write traces to the fleet database \(server.url(database: "fleet"))"),
                      gateway.output)

        try await server.start()
        try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(500), "the trace store to write again",
                            details: { gateway.output }) {
            try await self.publish(through: gateway, as: "device-1", topic: topic)
            sent += 1
            return gateway.output.contains("trace store \(server.url(database: "fleet")) writes again after")
        }
        try await subscriber.waitForMessages(sent)  // every message arrived
        XCTAssertTrue(gateway.process.isRunning)
        let droppedInAll = try await droppedMetric(gateway)
        XCTAssertGreaterThanOrEqual(droppedInAll, dropped)
        try await publish(through: gateway, as: "device-1", topic: topic)
        let known = Set(before.map(\.connectionID))
        let after = try await waitForEvents(from: gateway, "device-1", "a session after the outage, traced") { events in
            events.contains { $0.kind == "disconnect" && !known.contains($0.connectionID) }
        }
        XCTAssertEqual(after.filter { !known.contains($0.connectionID) }.first?.instance, "gw-a")
        // --follow outlived the outage (a failed poll is retried, a slow one waited for) and shows
        // the sessions written since.
        let newest = try XCTUnwrap(after.last?.connectionID)
        try await waitUntil(timeout: .seconds(15), "--follow to print the newest session", details: { follow.output }) {
            follow.stdout.lines.contains { $0.contains("#\(newest) ") && $0.contains(" disconnect ") }
        }
        XCTAssertTrue(follow.isRunning, follow.output)
    }

    /// Negative: `trace --config` on a fleet whose database is away fails, naming the database,
    /// instead of showing an empty timeline or falling back to a file.
    func testTraceWithAConfigWhoseDatabaseIsAwayFailsNamingIt() async throws {
        let port = try FreePort.next()
        let directory = try makeTemporaryDirectory()
        let url = "postgres://postgres@127.0.0.1:\(port)/fleet"
        let config = try directory.write("staplegate.yaml", """
            listen: { address: "127.0.0.1", port: \(try FreePort.next()) }
            tls:
              certificates:
                - { certificate: "\(pki.certificate("server"))", key: "\(pki.key("server"))" }
              device_ca: "\(pki.caChain)"
            upstream: { address: 127.0.0.1, port: \(broker.port!) }
            state_directory: "\(directory.file("state"))"
            stapling: { enabled: false }
            fleet: { store: postgres, url: "\(url)", tls: disable, instance: gw-x }

            """)
        let result = try await ManagedProcess(try CommandLineTests.findExecutable(), ["trace", "device-1", "--config", config])
            .commandResult(timeout: .seconds(30))
        XCTAssertNotEqual(result.status, .exited(0), "\(result)")
        XCTAssertTrue(result.stderr.contains("cannot read the traces in the fleet database \(url)"), "\(result)")
        XCTAssertEqual(result.stdout, "")
    }

    // MARK: Helpers

    private func startPostgres() async throws -> PostgresServer {
        let server = try await PostgresServer.start()
        postgres = server
        try await server.createDatabase("fleet")
        return server
    }

    private func startGateway(_ instance: String, _ server: PostgresServer, _ sections: [String]) async throws -> StapleGateProcess {
        let fleet = "fleet: { store: postgres, url: \"\(server.url(database: "fleet"))\", tls: disable, instance: \(instance), pool_size: 2 }"
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: sections + [fleet])
        gateways.append(gateway)
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            let lines = gateway.process.stderr.lines
            print("--- gateway \(instance) log (last 100 of \(lines.count) lines) ---\n\(lines.suffix(100).joined(separator: "\n"))")
        }
        return gateway
    }

    private func publish(through gateway: StapleGateProcess, as device: String, topic: String) async throws {
        let result = try await mosquittoPub(port: gateway.port, pki: pki, device: device, topic: topic, message: "m", qos: 1)
        guard result.status == .exited(0) else { throw DeviceTraceTests.Failure(description: "\(device) could not publish:\n\(result)") }
    }

    /// `staplegate trace ARGUMENTS --config <gateway's config>`, which must succeed.
    private func trace(_ gateway: StapleGateProcess, _ arguments: [String]) async throws -> CommandResult {
        let result = try await ManagedProcess(try CommandLineTests.findExecutable(),
                                              ["trace"] + arguments + ["--config", gateway.configPath])
            .commandResult(timeout: .seconds(30))
        guard result.status == .exited(0) else {
            throw DeviceTraceTests.Failure(description: "staplegate trace \(arguments.joined(separator: " ")):\n\(result)")
        }
        return result
    }

    private func traceEvents(_ gateway: StapleGateProcess, _ arguments: [String]) async throws -> [FleetEvent] {
        let output = try await trace(gateway, arguments + ["--json"]).stdout
        return try output.split(separator: "\n").map { try TraceTimelineDecoder.decode(line: String($0)) }
    }

    private func waitForEvents(from gateway: StapleGateProcess, _ device: String, _ what: String,
                               until condition: @escaping ([FleetEvent]) -> Bool) async throws -> [FleetEvent] {
        var latest: [FleetEvent] = []
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(250), what,
                            details: { latest.map { "\($0.instance ?? "-") \($0.kind): \($0.summary)" }.joined(separator: "\n") }) {
            latest = try await self.traceEvents(gateway, [device])
            return condition(latest)
        }
        return latest
    }

    /// `staplegate_trace_events_dropped_total` from the gateway's /metrics.
    private func droppedMetric(_ gateway: StapleGateProcess) async throws -> Double {
        let response = try await adminRequest(port: try XCTUnwrap(gateway.adminPort), "/metrics")
        let line = try XCTUnwrap(response.body.split(separator: "\n").first { $0.hasPrefix("staplegate_trace_events_dropped_total ") },
                                 response.body)
        return try XCTUnwrap(Double(line.split(separator: " ").last ?? ""), String(line))
    }
}

/// One event as `staplegate trace --json` and `/devices/ID/trace` give it, with its gateway.
struct FleetEvent: Decodable {
    let time: String
    let kind: String
    let device: String?
    let connectionID: UInt64
    let isFailure: Bool
    let summary: String
    let details: [String: String]
    let instance: String?
}

enum TraceTimelineDecoder {
    static func decode(line: String) throws -> FleetEvent {
        try JSONDecoder().decode(FleetEvent.self, from: Data(line.utf8))
    }

    static func decode(array text: String) throws -> [FleetEvent] {
        try JSONDecoder().decode([FleetEvent].self, from: Data(text.utf8))
    }
}
