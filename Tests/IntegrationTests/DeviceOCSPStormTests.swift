import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// Device OCSP checks under a reconnect storm, end to end: the real `staplegate` binary, a real
/// `openssl ocsp` responder behind a `CountingTCPProxy` (which counts the requests and holds
/// each answer back a little so that requests overlap), and hundreds of devices connecting at
/// once from this process (`TLSDeviceSwarm`). A device counts as admitted only once the broker
/// answered its MQTT CONNECT through the gateway.
final class DeviceOCSPStormTests: GatewayTestCase {
    private var responder: OCSPResponder?
    private var proxy: CountingTCPProxy?
    private var gateways: [StapleGateProcess] = []

    override func tearDown() async throws {
        for gateway in gateways { await gateway.stop() }
        gateways = []
        await proxy?.stop()
        proxy = nil
        await responder?.stop()
        responder = nil
        try await super.tearDown()
    }

    // MARK: Helpers

    /// The class PKI's responder with a counting proxy in front of it. Start it after issuing
    /// certificates: `openssl ocsp -multi` sees index changes one request late per worker.
    private func startResponderBehindProxy(responseDelay: Duration) async throws -> CountingTCPProxy {
        responder = try await OCSPResponder.start(pki: pki)
        let proxy = try await CountingTCPProxy.start(forwardingTo: pki.ocspPort)
        proxy.responseDelay = responseDelay
        self.proxy = proxy
        return proxy
    }

    /// The real binary, asking `proxy` about devices, with `deviceOCSP` as further keys of its
    /// `device_ocsp` section; its log's tail is printed if the test fails.
    private func startGateway(in directory: TemporaryDirectory, proxy: CountingTCPProxy,
                              deviceOCSP: [String] = [], tls: [String] = []) async throws -> StapleGateProcess {
        let section = (["device_ocsp:", "  responder: \"\(proxy.url)\""] + deviceOCSP.map { "  \($0)" }).joined(separator: "\n")
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: directory, sections: [section],
                                                        tls: tls)
        gateways.append(gateway)
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            let lines = gateway.process.stderr.lines
            print("--- gateway log (last 150 of \(lines.count) lines) ---\n\(lines.suffix(150).joined(separator: "\n"))")
        }
        return gateway
    }

    private func device(_ name: String) -> (certificate: String, key: String) {
        (certificate: pki.certificate(name), key: pki.key(name))
    }

    /// "498 of 500 admitted; 2× <reason>", for assertion messages.
    private func summary(_ results: [TLSDeviceSwarm.Result]) -> String {
        var reasons: [String: Int] = [:]
        for reason in results.compactMap(\.failureReason) { reasons[reason, default: 0] += 1 }
        let admitted = results.filter(\.succeeded).count
        return (["\(admitted) of \(results.count) admitted"] + reasons.sorted { $0.value > $1.value }.map { "\($0.value)× \($0.key)" })
            .joined(separator: "; ")
    }

    /// The gateway's "TLS handshake completed" lines, once there are `count` of them (the swarm
    /// has its answers before the log pipe has necessarily been read to the end).
    private func handshakeLines(_ gateway: StapleGateProcess, count: Int) async throws -> [String] {
        var lines: [String] = []
        try await waitUntil(timeout: .seconds(10), "\(count) completed handshakes in the gateway log",
                            details: { "found \(lines.count)" }) {
            lines = gateway.process.stderr.lines.filter { $0.contains("TLS handshake completed") }
            return lines.count >= count
        }
        return lines
    }

    private func serial(of name: String) throws -> String {
        try XCTUnwrap(PEMFile.certificateChain(at: pki.certificate(name)).first).serialHex
    }

    private struct CacheEntry: Decodable {
        let serial: String
        let status: String
    }

    // MARK: Tests

    /// A fleet sharing one certificate (or one device reconnecting in a loop) costs the
    /// responder one request: the first check is in flight for 300 ms while the others arrive
    /// and join it (single flight); later ones find the answer in the cache.
    func testFiveHundredSimultaneousFirstConnectsOfOneCertificateMakeOneResponderRequest() async throws {
        let proxy = try await startResponderBehindProxy(responseDelay: .milliseconds(300))
        let gateway = try await startGateway(in: try makeTemporaryDirectory(), proxy: proxy)

        let started = ContinuousClock.now
        let results = try await TLSDeviceSwarm.connect(port: gateway.port, devices: Array(repeating: device("device-1"), count: 500),
                                                       trustBundle: pki.caChain, timeout: .seconds(60))
        let elapsed = started.duration(to: .now)

        XCTAssertEqual(results.filter(\.succeeded).count, 500, summary(results))
        XCTAssertEqual(proxy.connectionsAccepted, 1, "responder requests for one certificate")
        // Proof of overlap: handshakes that waited for that one request report it as their
        // source ("from <url>"); those that came after it report the cache.
        let lines = try await handshakeLines(gateway, count: 500)
        let joined = lines.filter { $0.contains("device.check=OCSP good (from \(proxy.url))") }.count
        XCTAssertGreaterThan(joined, 1, "handshakes that waited for the single request in flight")
        print("500 connects in \(elapsed): \(joined) joined the request in flight, \(500 - joined) answered from the cache")
    }

    /// 300 devices nobody has seen connect at once: each needs its own request, but the
    /// responder never has more than `max_in_flight` (8) at a time; the rest queue inside their
    /// handshakes and all get in.
    ///
    /// The proxy counts a request as outstanding from its connection's accept until the first
    /// byte of its answer is forwarded. The gateway holds a slot from before it connects until
    /// after it has read the answer, so that count can never exceed the gateway's own; a ninth
    /// request at once shows as 9. (Counting open connections instead overcounts by the ones the
    /// gateway has just closed, which the proxy's event loop sees a turn late on a busy machine.)
    func testThreeHundredNewDevicesAtOnceNeverPutMoreThanMaxInFlightRequestsOnTheResponder() async throws {
        let devices = try pki.issueDevices(count: 300, prefix: "storm-\(UUID().uuidString.prefix(6).lowercased())")
        let proxy = try await startResponderBehindProxy(responseDelay: .milliseconds(100))
        // The last of 300 queued checks finishes after ~4 s, ~7 s on a busy machine: 30 s, not 10.
        let port = try await startGateway(in: try makeTemporaryDirectory(), proxy: proxy, deviceOCSP: ["max_in_flight: 8"],
                                          tls: ["handshake_timeout: 30s"]).port

        let sampler = InFlightSampler(proxy)
        let started = ContinuousClock.now
        let results = try await TLSDeviceSwarm.connect(port: port, devices: devices, trustBundle: pki.caChain,
                                                       timeout: .seconds(60))
        let elapsed = started.duration(to: .now)
        let samples = await sampler.stop()

        XCTAssertEqual(results.filter(\.succeeded).count, 300, summary(results))
        XCTAssertEqual(proxy.connectionsAccepted, 300, "one responder request per device")
        XCTAssertLessThanOrEqual(proxy.maximumAwaitingAnswer, 8, "requests outstanding at the responder at once")
        XCTAssertGreaterThan(proxy.maximumAwaitingAnswer, 1, "requests did overlap")
        XCTAssertGreaterThanOrEqual(samples.count { $0 == 8 }, 10, "the limit was reached and held: \(samples.histogram)")
        print("300 devices in \(elapsed); peak \(proxy.maximumAwaitingAnswer) outstanding, sampled \(samples.histogram)")
    }

    /// The cache survives a restart: known devices reconnecting after it cost the responder
    /// nothing (the state directory's ocsp-cache.sqlite is loaded before the listener opens).
    func testARestartedGatewayAdmitsKnownDevicesFromItsPersistedCacheWithoutAskingTheResponder() async throws {
        let proxy = try await startResponderBehindProxy(responseDelay: .zero)
        let directory = try makeTemporaryDirectory()
        let devices = [device("device-1"), device("device-2")]
        let serials = [try serial(of: "device-1"), try serial(of: "device-2")]

        let first = try await startGateway(in: directory, proxy: proxy)
        let before = try await TLSDeviceSwarm.connect(port: first.port, devices: devices, trustBundle: pki.caChain,
                                                      timeout: .seconds(20))
        XCTAssertEqual(before, [.succeeded, .succeeded], summary(before))
        XCTAssertEqual(proxy.connectionsAccepted, 2, "first connects ask the responder")

        let listing = try await first.command(["ocsp", "cache", "--json"])
        XCTAssertEqual(listing.status, .exited(0), "\(listing)")
        let entries = try JSONDecoder().decode([CacheEntry].self, from: Data(listing.stdout.utf8))
        for serial in serials {
            let entry = entries.first { $0.serial.uppercased() == serial.uppercased() }
            XCTAssertEqual(entry?.status, "good", "serial \(serial) in\n\(listing.stdout)")
        }

        await first.stop()
        XCTAssertEqual(first.process.exitStatus, .exited(0), first.output)
        let second = try await startGateway(in: directory, proxy: proxy)
        XCTAssertTrue(second.process.stderr.contains("cached_statuses_loaded=2"), second.output)
        proxy.resetCounts()

        let after = try await TLSDeviceSwarm.connect(port: second.port, devices: devices, trustBundle: pki.caChain,
                                                     timeout: .seconds(20))
        XCTAssertEqual(after, [.succeeded, .succeeded], summary(after))
        XCTAssertEqual(proxy.connectionsAccepted, 0, "responder requests after the restart")
        let lines = try await handshakeLines(second, count: 2)
        XCTAssertEqual(lines.filter { $0.contains("device.check=OCSP good (cached until") }.count, 2, lines.joined(separator: "\n"))
    }
}

/// `requestsAwaitingAnswer` of a proxy every 5 ms, from creation until `stop()`.
private final class InFlightSampler: @unchecked Sendable {
    private let task: Task<[Int], Never>

    init(_ proxy: CountingTCPProxy) {
        task = Task {
            var samples: [Int] = []
            while !Task.isCancelled {
                samples.append(proxy.requestsAwaitingAnswer)
                try? await Task.sleep(for: .milliseconds(5))
            }
            return samples
        }
    }

    func stop() async -> [Int] {
        task.cancel()
        return await task.value
    }
}

fileprivate extension Array where Element == Int {
    /// "0: 120, 1: 3, …, 8: 600": how many samples saw each count.
    var histogram: String {
        Dictionary(grouping: self, by: { $0 }).sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.count)" }
            .joined(separator: ", ")
    }
}
