import Foundation
import TestSupport
import XCTest

/// The counting proxy that the device-OCSP tests put between the gateway and the responder:
/// here between a real `openssl ocsp` client and a real `openssl ocsp` responder, so what it
/// counts and how it delays are checked against real OCSP exchanges.
final class CountingTCPProxyTests: XCTestCase {
    private var pki: TestPKI!
    private var responder: OCSPResponder?
    private var proxy: CountingTCPProxy?

    override class func setUp() {
        super.setUp()
        ProcessRegistry.install()
    }

    override func setUp() async throws {
        try await super.setUp()
        pki = try TestPKI.make()
        responder = try await OCSPResponder.start(pki: pki)
        proxy = try await CountingTCPProxy.start(forwardingTo: pki.ocspPort)
    }

    override func tearDown() async throws {
        await proxy?.stop()
        await responder?.stop()
        pki?.remove()
        try await super.tearDown()
    }

    /// `openssl ocsp` asking the proxy about device-1, launched right away.
    private func launchQuery(timeoutSeconds: Int? = nil) throws -> ManagedProcess {
        let proxy = try XCTUnwrap(proxy)
        return try ManagedProcess("openssl", [
            "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.path("device-1.pem"),
            "-url", proxy.url, "-CAfile", pki.caChain,
        ] + (timeoutSeconds.map { ["-timeout", "\($0)"] } ?? []))
    }

    private func query(timeoutSeconds: Int? = nil) async throws -> CommandResult {
        try await launchQuery(timeoutSeconds: timeoutSeconds).commandResult(timeout: .seconds(20))
    }

    private func assertGood(_ result: CommandResult, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, .exited(0), "\(result)", file: file, line: line)
        // The client checks the responder's signature: any changed byte would fail it.
        XCTAssertTrue(result.output.contains("Response verify OK"), "\(result)", file: file, line: line)
        XCTAssertTrue(result.stdout.contains("device-1.pem: good"), "\(result)", file: file, line: line)
    }

    private func waitUntilNothingInFlight(_ proxy: CountingTCPProxy, timeout: Duration = .seconds(10)) async throws {
        try await waitUntil(timeout: timeout, "the proxy to have no connection open",
                            details: { "in flight: \(proxy.connectionsInFlight)" }) {
            proxy.connectionsInFlight == 0
        }
    }

    func testOneRequestIsOneConnectionAndTheAnswerArrivesIntact() async throws {
        let proxy = try XCTUnwrap(proxy)
        XCTAssertEqual(proxy.url, "http://127.0.0.1:\(proxy.port)")
        XCTAssertEqual(proxy.connectionsAccepted, 0)

        assertGood(try await query())

        XCTAssertEqual(proxy.connectionsAccepted, 1)
        XCTAssertEqual(proxy.maximumInFlight, 1)
        try await waitUntilNothingInFlight(proxy)
    }

    func testConcurrentRequestsOverlapWhileTheResponseIsDelayed() async throws {
        let proxy = try XCTUnwrap(proxy)
        proxy.responseDelay = .milliseconds(300)

        let clients = try (0..<10).map { _ in try launchQuery() }
        var results: [CommandResult] = []
        for client in clients { results.append(try await client.commandResult(timeout: .seconds(30))) }

        for result in results { assertGood(result) }
        XCTAssertEqual(proxy.connectionsAccepted, 10)
        XCTAssertGreaterThanOrEqual(proxy.maximumInFlight, 2)
        XCTAssertLessThanOrEqual(proxy.maximumInFlight, 10)
        try await waitUntilNothingInFlight(proxy)
    }

    /// A request is outstanding while its answer is held, and no longer once the answer has gone
    /// back (the connection may still be open); a refused connection never counts.
    func testRequestsAwaitingAnswerCountsHeldAnswersOnly() async throws {
        let proxy = try XCTUnwrap(proxy)
        proxy.responseDelay = .seconds(2)
        let client = try launchQuery()
        try await waitUntil(timeout: .seconds(10), "the request to be held", details: { client.output }) {
            proxy.requestsAwaitingAnswer == 1
        }
        assertGood(try await client.commandResult(timeout: .seconds(30)))
        XCTAssertEqual(proxy.requestsAwaitingAnswer, 0, "the answer was forwarded")
        XCTAssertEqual(proxy.maximumAwaitingAnswer, 1)

        proxy.refuseAll = true
        _ = try await query(timeoutSeconds: 5)
        try await waitUntilNothingInFlight(proxy)
        XCTAssertEqual(proxy.requestsAwaitingAnswer, 0)
        XCTAssertEqual(proxy.maximumAwaitingAnswer, 1)
    }

    func testResetCountsZeroesAcceptedAndTheHighWaterMark() async throws {
        let proxy = try XCTUnwrap(proxy)
        assertGood(try await query())
        assertGood(try await query())
        XCTAssertEqual(proxy.connectionsAccepted, 2)
        try await waitUntilNothingInFlight(proxy)

        proxy.resetCounts()
        XCTAssertEqual(proxy.connectionsAccepted, 0)
        XCTAssertEqual(proxy.maximumInFlight, 0)
        XCTAssertEqual(proxy.maximumAwaitingAnswer, 0)

        assertGood(try await query())
        XCTAssertEqual(proxy.connectionsAccepted, 1)
        XCTAssertEqual(proxy.maximumInFlight, 1)
    }

    func testRefusedConnectionsFailTheClientAndAreCounted() async throws {
        let proxy = try XCTUnwrap(proxy)
        proxy.refuseAll = true

        let refused = try await query(timeoutSeconds: 5)

        XCTAssertNotEqual(refused.status, .exited(0), "\(refused)")
        XCTAssertFalse(refused.stdout.contains("device-1.pem: good"), "\(refused)")
        XCTAssertEqual(proxy.connectionsAccepted, 1)
        try await waitUntilNothingInFlight(proxy)

        // Switched back, new connections are forwarded again.
        proxy.refuseAll = false
        assertGood(try await query())
        XCTAssertEqual(proxy.connectionsAccepted, 2)
    }

    func testAResponseDelayedPastTheClientTimeoutMakesItTimeOut() async throws {
        let proxy = try XCTUnwrap(proxy)
        proxy.responseDelay = .seconds(4)

        let started = ContinuousClock.now
        let result = try await query(timeoutSeconds: 1)
        let took = started.duration(to: .now)

        XCTAssertNotEqual(result.status, .exited(0), "\(result)")
        XCTAssertFalse(result.stdout.contains("device-1.pem: good"), "\(result)")
        XCTAssertTrue(result.output.contains("transfer timeout"), "\(result)")
        XCTAssertLessThan(took, .seconds(4), "the client gave up only after the response was released: \(result)")
        XCTAssertEqual(proxy.connectionsAccepted, 1)
        // The held response is dropped or delivered to a closed socket; either way it all closes.
        try await waitUntilNothingInFlight(proxy, timeout: .seconds(15))
    }

    func testStopClosesOpenConnectionsAndTheListenerAndMayBeRepeated() async throws {
        let proxy = try XCTUnwrap(proxy)
        proxy.responseDelay = .seconds(60)
        let client = try launchQuery()
        try await waitUntil(timeout: .seconds(10), "the client's connection to be in flight",
                            details: { client.output }) { proxy.connectionsInFlight == 1 }

        await proxy.stop()

        let result = try await client.commandResult(timeout: .seconds(10))
        XCTAssertNotEqual(result.status, .exited(0), "\(result)")
        XCTAssertEqual(proxy.connectionsInFlight, 0)
        XCTAssertFalse(MosquittoBroker.acceptsTCP(port: proxy.port))
        await proxy.stop()
    }
}
