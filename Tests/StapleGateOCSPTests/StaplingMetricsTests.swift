import Foundation
import Logging
import MetricsTestKit
import NIOPosix
@testable import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// Good, revoked, unknown and failed refreshes each show in the metrics, per certificate
/// serial, as they do in `ocsp status`. Responses are real `openssl ocsp` answers, served by a
/// fake HTTP responder so each test picks the answer.
final class StaplingMetricsTests: OCSPFixtureTestCase {
    private var state: TemporaryDirectory!
    private var responders: [FakeHTTPResponder] = []
    private var metrics: TestMetrics!
    private var serial: String!

    override func setUpWithError() throws {
        state = try TemporaryDirectory(prefix: "stapling-metrics")
        metrics = TestMetrics()
        serial = try PEMFile.certificateChain(at: fixture.pki.path("server.pem"))[0].serialHex
    }

    override func tearDown() async throws {
        for responder in responders { await responder.stop() }
        state.remove()
    }

    /// Primes a fresh service whose responder answers `body`.
    private func prime(answering body: [UInt8]) async throws -> StaplingService {
        let responder = try FakeHTTPResponder(.reply(FakeHTTPResponder.response(body: body), close: true))
        responders.append(responder)
        let context = try ServerContext(configuration: TLSServerConfiguration(
            certificates: [.init(chainPath: fixture.pki.path("server.pem"), keyPath: fixture.pki.path("server.key"))],
            deviceCABundlePath: fixture.pki.path("ca-chain.pem")))
        let service = try StaplingService(
            serverContext: context,
            configuration: StaplingConfiguration(responderOverride: "http://127.0.0.1:\(responder.port)/",
                                                 fetch: OCSPFetchConfiguration(timeout: .seconds(1))),
            persistence: StaplePersistence(directory: state.file("state")),
            client: OCSPHTTPClient(group: MultiThreadedEventLoopGroup.singleton),
            logger: Logger(label: "test"), metricsFactory: metrics)
        await service.prime()
        return service
    }

    private func refreshes(_ result: String) -> Int64 {
        metrics.counterTotal(label: "staplegate_staple_refreshes_total", dimensions: [("serial", serial), ("result", result)])
    }

    private func gauge(_ label: String, _ extra: [(String, String)] = []) throws -> Double? {
        try metrics.expectGauge(label, [("serial", serial)] + extra).lastValue
    }

    /// The status gauge reads 1 for `status` and 0 for every other.
    private func assertStatus(_ status: String, file: StaticString = #filePath, line: UInt = #line) throws {
        for candidate in ["good", "revoked", "unknown", "none"] {
            XCTAssertEqual(try gauge("staplegate_staple_status", [("status", candidate)]), candidate == status ? 1 : 0,
                           candidate, file: file, line: line)
        }
    }

    func testAGoodStapleIsCountedAndItsNextUpdateExported() async throws {
        let good = try fixture.respond(to: fixture.request("server"))
        let service = try await prime(answering: good)

        XCTAssertEqual(refreshes("good"), 1)
        XCTAssertEqual(refreshes("failed"), 0)
        try assertStatus("good")
        XCTAssertEqual(try gauge("staplegate_staple_serving"), 1)
        let nextUpdate = try XCTUnwrap(service.statuses().first?.nextUpdate)
        XCTAssertEqual(try gauge("staplegate_staple_next_update_timestamp_seconds"), nextUpdate.timeIntervalSince1970)
        let secondsLeft = try XCTUnwrap(try gauge("staplegate_staple_seconds_to_next_update"))
        XCTAssertTrue((500...600).contains(secondsLeft), "openssl ocsp -nmin 10: \(secondsLeft)")
    }

    func testARevokedAnswerShowsAsRevokedAndIsServed() async throws {
        // The issuing CA's index with our own certificate's row revoked for keyCompromise.
        let index = try String(contentsOfFile: fixture.pki.path("index.txt"), encoding: .utf8)
        let revokedIndex = index.split(separator: "\n").map { row -> String in
            let fields = row.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count == 6, fields[3].uppercased() == serial.uppercased() else { return String(row) }
            return ["R", String(fields[1]), "261101000000Z,keyCompromise", String(fields[3]), String(fields[4]), String(fields[5])]
                .joined(separator: "\t")
        }.joined(separator: "\n") + "\n"
        XCTAssertNotEqual(revokedIndex, index, "our certificate's row was found")
        let revoked = try fixture.respond(to: fixture.request("server"), index: revokedIndex)
        _ = try await prime(answering: revoked)

        XCTAssertEqual(refreshes("revoked"), 1)
        try assertStatus("revoked")
        XCTAssertEqual(try gauge("staplegate_staple_serving"), 1, "a revoked answer is the truth: it is stapled")
    }

    func testAnUnknownAnswerShowsAsUnknownAndIsNotServed() async throws {
        let index = try String(contentsOfFile: fixture.pki.path("index.txt"), encoding: .utf8)
        let withoutUs = index.split(separator: "\n").filter { !$0.uppercased().contains("\t\(serial.uppercased())\t") }
        let unknown = try fixture.respond(to: fixture.request("server"), index: withoutUs.joined(separator: "\n") + "\n")
        _ = try await prime(answering: unknown)

        XCTAssertEqual(refreshes("unknown"), 1)
        try assertStatus("unknown")
        XCTAssertEqual(try gauge("staplegate_staple_serving"), 0)
    }

    func testAFailedRefreshIsCountedWithTheFailuresInARow() async throws {
        _ = try await prime(answering: Array("not DER".utf8))

        XCTAssertEqual(refreshes("failed"), 1)
        XCTAssertEqual(refreshes("good"), 0)
        try assertStatus("none")
        XCTAssertEqual(try gauge("staplegate_staple_serving"), 0)
        XCTAssertEqual(try gauge("staplegate_staple_consecutive_failures"), 1)
    }
}
