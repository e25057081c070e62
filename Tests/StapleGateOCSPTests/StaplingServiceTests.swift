import Foundation
import Logging
import NIOPosix
@testable import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// The stapling service against responders that misbehave: each bad answer is rejected with its
/// own reason, recorded in the status, and the good staple already held keeps being served —
/// until its nextUpdate, when it is withdrawn.
final class StaplingServiceTests: OCSPFixtureTestCase {
    private var state: TemporaryDirectory!
    private var responders: [FakeHTTPResponder] = []

    override func setUpWithError() throws {
        state = try TemporaryDirectory(prefix: "stapling-state")
    }

    override func tearDown() async throws {
        for responder in responders { await responder.stop() }
        state.remove()
    }

    private func makeContext() throws -> ServerContext {
        try ServerContext(configuration: TLSServerConfiguration(
            certificates: [.init(chainPath: fixture.pki.path("server.pem"), keyPath: fixture.pki.path("server.key"))],
            deviceCABundlePath: fixture.pki.path("ca-chain.pem")))
    }

    /// A service whose responder is a fake answering `behaviour`, persisting into `state` (or
    /// into `archive`, standing for the fleet's table).
    private func makeService(_ behaviour: FakeHTTPResponder.Behaviour, context: ServerContext,
                             archive: (any StapleArchive)? = nil) throws -> StaplingService {
        let responder = try FakeHTTPResponder(behaviour)
        responders.append(responder)
        let configuration = StaplingConfiguration(
            responderOverride: "http://127.0.0.1:\(responder.port)/",
            fetch: OCSPFetchConfiguration(timeout: .seconds(1)))
        return try StaplingService(serverContext: context, configuration: configuration,
                                   persistence: StaplePersistence(directory: state.file("state")), archive: archive,
                                   client: OCSPHTTPClient(group: MultiThreadedEventLoopGroup.singleton),
                                   logger: Logger(label: "test"))
    }

    private func ocspReply(_ body: [UInt8]) -> FakeHTTPResponder.Behaviour {
        .reply(FakeHTTPResponder.response(body: body), close: true)
    }

    func testEachBadAnswerIsRejectedWithItsReasonAndTheGoodStapleIsKept() async throws {
        let good = try fixture.respond(to: fixture.request("server"))
        let context = try makeContext()
        let first = try makeService(ocspReply(good), context: context)
        await first.prime()
        XCTAssertEqual(context.staples.staple(forCertificateAt: 0), good, "the good staple is held and persisted")

        let otherCertificate = try fixture.respond(to: fixture.request("device-2"))
        let cases: [(String, FakeHTTPResponder.Behaviour, String)] = [
            ("garbage", ocspReply(Array("this is not DER".utf8)), "not an OCSP response"),
            ("over 4 KB", ocspReply([UInt8](repeating: 0x30, count: 5000)), "larger than 4096 bytes"),
            ("silent", .silent, "timed out after 1 s"),
            ("another certificate", ocspReply(otherCertificate), "response is not for serial"),
            ("HTTP 500", .reply(FakeHTTPResponder.response(status: "500 Internal Server Error", body: []), close: true), "HTTP 500"),
        ]
        for (name, behaviour, reason) in cases {
            let fresh = try makeContext()
            let service = try makeService(behaviour, context: fresh)
            await service.loadPersisted()
            XCTAssertEqual(fresh.staples.staple(forCertificateAt: 0), good, "\(name): the persisted staple is installed first")

            await service.refreshAll()

            XCTAssertEqual(fresh.staples.staple(forCertificateAt: 0), good, "\(name): the good staple is kept")
            let status = try XCTUnwrap(service.statuses().first)
            XCTAssertTrue(status.lastResult?.contains(reason) ?? false, "\(name): \(status.lastResult ?? "nil")")
            XCTAssertEqual(status.consecutiveFailures, 1, name)
            XCTAssertTrue(status.serving, name)
        }
    }

    func testAStapleIsWithdrawnOnceItsNextUpdatePasses() async throws {
        let good = try fixture.respond(to: fixture.request("server"))
        let context = try makeContext()
        let service = try makeService(ocspReply(good), context: context)
        await service.prime()
        let nextUpdate = try XCTUnwrap(service.statuses().first?.nextUpdate)

        service.republish(now: nextUpdate.addingTimeInterval(-1))
        XCTAssertEqual(context.staples.staple(forCertificateAt: 0), good)
        service.republish(now: nextUpdate)
        XCTAssertNil(context.staples.staple(forCertificateAt: 0), "never stapled past nextUpdate")
        XCTAssertNil(service.refusalReason(now: nextUpdate), "the lenient policy still admits devices without a staple")
    }

    func testAPersistedStapleForAnotherCertificateIsNotInstalled() async throws {
        // The server's staple, persisted under the RSA certificate's name: it must not be served for it.
        let good = try fixture.respond(to: fixture.request("server"))
        let rsa = try PEMFile.certificateChain(at: fixture.pki.path("server-rsa.pem"))[0]
        try StaplePersistence(directory: state.file("state")).saveStaple(good, fingerprint: rsa.sha256Fingerprint)
        let context = try ServerContext(configuration: TLSServerConfiguration(
            certificates: [.init(chainPath: fixture.pki.path("server-rsa.pem"), keyPath: fixture.pki.path("server-rsa.key"))],
            deviceCABundlePath: fixture.pki.path("ca-chain.pem")))
        let service = try makeService(.silent, context: context)

        await service.loadPersisted()

        XCTAssertNil(context.staples.staple(forCertificateAt: 0))
    }

    /// Another gateway of the fleet put a staple in the shared archive after this one started:
    /// when this one's own refresh fails with nothing to serve, it serves that staple, verified.
    func testAfterAFailedRefreshAStapleAnotherGatewayArchivedIsServed() async throws {
        let good = try fixture.respond(to: fixture.request("server"))
        let context = try makeContext()
        let archive = MemoryStapleArchive()
        let service = try makeService(.silent, context: context, archive: archive)
        await service.loadPersisted()
        await service.refreshAll()
        XCTAssertNil(context.staples.staple(forCertificateAt: 0), "negative control: nothing anywhere yet")

        let leaf = try PEMFile.certificateChain(at: fixture.pki.path("server.pem"))[0]
        await archive.put(good, fingerprint: leaf.sha256Fingerprint)
        await service.refreshAll()
        XCTAssertEqual(context.staples.staple(forCertificateAt: 0), good)
        let status = try XCTUnwrap(service.statuses().first)
        XCTAssertEqual(status.consecutiveFailures, 2, "our own refreshes still fail, and are retried")
        XCTAssertTrue(status.serving)
    }

    /// What the archive holds is verified first: a staple for another certificate is never served.
    func testAnArchivedStapleThatDoesNotVerifyIsNotServed() async throws {
        let otherCertificate = try fixture.respond(to: fixture.request("device-2"))
        let context = try makeContext()
        let archive = MemoryStapleArchive()
        let leaf = try PEMFile.certificateChain(at: fixture.pki.path("server.pem"))[0]
        await archive.put(otherCertificate, fingerprint: leaf.sha256Fingerprint)
        let service = try makeService(.silent, context: context, archive: archive)
        await service.loadPersisted()
        XCTAssertNil(context.staples.staple(forCertificateAt: 0))
        await service.refreshAll()
        XCTAssertNil(context.staples.staple(forCertificateAt: 0))
    }
}

/// An archive in memory, standing for the fleet's table.
private actor MemoryStapleArchive: StapleArchive {
    private var staples: [String: [UInt8]] = [:]
    nonisolated var location: String { "memory" }

    func put(_ der: [UInt8], fingerprint: String) { staples[fingerprint] = der }
    func staple(fingerprint: String) async throws -> [UInt8]? { staples[fingerprint] }
    func save(_ response: VerifiedOCSPResponse, fingerprint: String) async throws { staples[fingerprint] = response.der }
}
