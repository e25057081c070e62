import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// One fleet, many gateways (issue 14), behind a real HAProxy 2.6: three real `staplegate`
/// processes on one real PostgreSQL 15, a real `openssl ocsp` responder behind a
/// `CountingTCPProxy` on the port the certificates' AIA names (so every request any gateway
/// makes is counted), and the class's Mosquitto. One gateway of the fleet asks the responder
/// about a certificate while the others wait for its answer; a refusal any gateway learns
/// closes the device's sessions on all of them.
final class FleetCoordinationTests: GatewayTestCase {
    private var ownPKI: TestPKI?
    private var responder: OCSPResponder?
    private var requests: CountingTCPProxy?
    private var postgres: PostgresServer?
    private var gateways: [StapleGateProcess] = []
    private var balancer: HAProxy?

    override func tearDown() async throws {
        await balancer?.stop()
        balancer = nil
        for gateway in gateways { await gateway.stop() }
        gateways = []
        await requests?.stop()
        requests = nil
        await responder?.stop()
        responder = nil
        await postgres?.remove()
        postgres = nil
        ownPKI?.remove()
        ownPKI = nil
        try await super.tearDown()
    }

    // MARK: The fleet

    /// A PKI of the test's own (revocations change its index) with `bulkDevices` more devices
    /// issued before the responder starts, the counted responder, PostgreSQL, gateways gw-a,
    /// gw-b and gw-c on it, and HAProxy spreading connections over them in turn. Each gateway
    /// keeps 4 requests in flight, and timeouts are long: on a busy machine the two-worker
    /// responder is slow, and a timed-out request would be asked again (and counted twice).
    private func startFleet(bulkDevices: Int = 0) async throws -> (TestPKI, [(certificate: String, key: String)]) {
        let pki = try TestPKI.make()
        ownPKI = pki
        let bulk = bulkDevices > 0 ? try pki.issueDevices(count: bulkDevices, prefix: "bulk") : []
        let responder = try await OCSPResponder.start(pki: pki, port: try FreePort.next())
        self.responder = responder
        requests = try await CountingTCPProxy.start(forwardingTo: responder.port, port: pki.ocspPort)
        let server = try await PostgresServer.start()
        postgres = server
        try await server.createDatabase("fleet")
        for name in ["gw-a", "gw-b", "gw-c"] {
            let fleet = "fleet: { store: postgres, url: \"\(server.url(database: "fleet"))\", tls: disable, instance: \(name), pool_size: 4 }"
            let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                            sections: [fleet, "device_ocsp: { max_in_flight: 4, timeout: 20s }"],
                                                            tls: ["handshake_timeout: 60s"],
                                                            logging: "{ level: info }")
            gateways.append(gateway)
            addTeardownBlock { [weak self] in
                guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
                let lines = gateway.process.stderr.lines
                let warnings = lines.filter { $0.contains(" warning ") || $0.contains(" error ") }
                print("--- \(name) warnings (last 40 of \(warnings.count)) ---\n\(warnings.suffix(40).joined(separator: "\n"))")
                print("--- \(name) log (last 40 of \(lines.count) lines) ---\n\(lines.suffix(40).joined(separator: "\n"))")
            }
        }
        let port = try FreePort.next()
        let servers = gateways.enumerated().map { index, gateway in "    server gw\(index) 127.0.0.1:\(gateway.port)" }
        balancer = try await HAProxy.start(port: port, sections: """
        frontend devices
            bind 127.0.0.1:\(port)
            default_backend gateways
        backend gateways
            balance roundrobin
        \(servers.joined(separator: "\n"))
        """, in: try makeTemporaryDirectory())
        return (pki, bulk)
    }

    private var balancerPort: Int { get throws { try XCTUnwrap(balancer).port } }

    private func device(_ name: String, _ pki: TestPKI) -> (certificate: String, key: String) {
        (certificate: pki.certificate(name), key: pki.key(name))
    }

    /// Every connection through the balancer at once; the failures, with their reasons.
    private func connectThroughBalancer(_ devices: [(certificate: String, key: String)], pki: TestPKI) async throws -> [String] {
        let results = try await TLSDeviceSwarm.connect(port: try balancerPort, devices: devices, trustBundle: pki.caChain,
                                                       timeout: .seconds(90))
        return results.compactMap(\.failureReason)
    }

    /// Each gateway's count of device certificates it answered from the fleet (another
    /// gateway's answer) rather than by asking.
    private func answersFromTheFleet(_ gateway: StapleGateProcess) -> Int {
        gateway.process.stderr.lines.filter { $0.contains("device.check=OCSP") && $0.contains("(cached until") }.count
    }

    // MARK: Tests

    /// 300 first connects of one device at once, spread by HAProxy over the three gateways:
    /// one gateway asks, the other two wait for its answer instead of asking too.
    func testThreeHundredSimultaneousFirstConnectsOfOneDeviceMakeOneResponderRequest() async throws {
        let (pki, _) = try await startFleet()
        let failures = try await connectThroughBalancer(Array(repeating: device("device-1", pki), count: 300), pki: pki)
        XCTAssertEqual(failures, [], "every connection is admitted")
        XCTAssertEqual(try XCTUnwrap(requests).connectionsAccepted, 1, "one responder request for the whole fleet")
        for gateway in gateways {
            XCTAssertTrue(gateway.process.stderr.contains("device.check=OCSP good"), "each gateway admitted some: \(gateway.output.suffix(2000))")
        }
    }

    /// 600 distinct devices, each connecting three times through the balancer (so through
    /// different gateways): 600 responder requests, not 1800.
    func testSixHundredDevicesThroughThreeGatewaysMakeSixHundredRequests() async throws {
        let (pki, devices) = try await startFleet(bulkDevices: 600)
        for wave in 1...3 {
            // A hundred at a time: a storm is not the point here (the test above is), and a
            // responder timing out under one would make the count depend on the machine.
            for start in stride(from: 0, to: devices.count, by: 100) {
                let failures = try await connectThroughBalancer(Array(devices[start..<min(start + 100, devices.count)]), pki: pki)
                XCTAssertEqual(failures, [], "wave \(wave), devices \(start + 1)…: every device is admitted")
            }
        }
        XCTAssertEqual(try XCTUnwrap(requests).connectionsAccepted, 600, "one request per device for the whole fleet")
        let rows = try await XCTUnwrap(postgres).psql("SELECT count(*) FROM device_ocsp_status WHERE outcome = 'good'", database: "fleet")
        XCTAssertEqual(rows.trimmingCharacters(in: .whitespacesAndNewlines), "600")
        XCTAssertGreaterThan(gateways.map(answersFromTheFleet).reduce(0, +), 0, "later waves were answered from the shared table")
    }

    /// A device connected to gw-b and gw-c, revoked at the responder, rechecked by an operator
    /// on gw-a (which never saw it): its sessions on gw-b and gw-c close, the command lists them
    /// per gateway, and no gateway lets it back in.
    func testARecheckOnOneGatewayClosesTheDevicesSessionsOnTheOthers() async throws {
        let (pki, _) = try await startFleet()
        let (gatewayA, gatewayB, gatewayC) = (gateways[0], gateways[1], gateways[2])
        let onB = try await MosquittoSubscriber.start(.gateway(port: gatewayB.port, pki: pki, device: "device-to-revoke"), broker: broker,
                                                      topic: uniqueTopic("fleet-revocation"))
        let onC = try await MosquittoSubscriber.start(.gateway(port: gatewayC.port, pki: pki, device: "device-to-revoke"), broker: broker,
                                                      topic: uniqueTopic("fleet-revocation"))
        XCTAssertEqual(try XCTUnwrap(requests).connectionsAccepted, 1, "gw-c found gw-b's answer in the shared table")

        try await pki.revoke("device-to-revoke", reason: "keyCompromise")
        var answers: [String] = []
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(50), "the responder to answer revoked",
                            details: { answers.joined(separator: ", ") }) {
            answers.append(try await self.responderStatus(of: "device-to-revoke", in: pki))
            return answers.suffix(3) == ["revoked", "revoked", "revoked"]
        }
        try XCTUnwrap(requests).resetCounts()

        let started = ContinuousClock.now
        let recheck = try await gatewayA.command(["ocsp", "recheck", "--device", "device-to-revoke"])
        // A figure for the record, not a check: the command returns once B and C replied that
        // they closed the sessions (or after its 1.5 s wait).
        print("fleet recheck: \(started.duration(to: .now)) from the command's start to every gateway's reply")
        XCTAssertEqual(recheck.status, .exited(3), "refused: \(recheck)")
        XCTAssertTrue(recheck.stdout.contains("revoked at"), recheck.stdout)
        XCTAssertTrue(recheck.stdout.contains("on gw-b: 1 session closed"), recheck.stdout)
        XCTAssertTrue(recheck.stdout.contains("on gw-c: 1 session closed"), recheck.stdout)
        XCTAssertEqual(try XCTUnwrap(requests).connectionsAccepted, 1, "only gw-a asked; the others took its answer")

        for subscriber in [onB, onC] {
            try await waitUntil(timeout: .seconds(10), "the broker to see \(subscriber.clientID) leave", details: { self.broker.log }) {
                self.broker.log.contains("Client \(subscriber.clientID) closed its connection")
            }
        }
        for gateway in gateways {
            let client = try OpenSSLClient(port: gateway.port, pki: pki, device: "device-to-revoke")
            let refused = try await client.waitUntilRefused(timeout: .seconds(15))
            XCTAssertTrue(refused.output.contains("alert certificate revoked"), "\(refused)")
        }
        XCTAssertEqual(try XCTUnwrap(requests).connectionsAccepted, 1, "the refusals came from the shared answer")
        try await gatewayB.waitForOutput("another gateway of the fleet got an answer refusing it")
        XCTAssertTrue(gatewayB.process.stderr.contains("instance=gw-b"), "each log line names its gateway")
    }

    /// What the responder itself answers for `name`, asked directly (around the count).
    private func responderStatus(of name: String, in pki: TestPKI) async throws -> String {
        let query = try ManagedProcess("openssl", [
            "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.certificate(name),
            "-url", "http://127.0.0.1:\(try XCTUnwrap(responder).port)", "-CAfile", pki.caChain,
        ])
        let result = try await query.commandResult(timeout: .seconds(10))
        let line = result.stdout.split(separator: "\n").first { $0.hasPrefix("\(pki.certificate(name)):") }
        return line.map { String($0.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespaces) } ?? "no answer: \(result)"
    }
}
