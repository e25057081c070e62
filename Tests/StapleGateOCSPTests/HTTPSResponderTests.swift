import Foundation
import NIOCore
import NIOPosix
@testable import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// https:// responders through our own OpenSSL handler in the client role: a real `openssl ocsp`
/// behind a real TLS front (socat), whose certificate is the demo PKI's server certificate
/// (SAN localhost, 127.0.0.1, ::1; chains to the demo root CA).
final class HTTPSResponderTests: XCTestCase {
    private static var responder: Result<OpenSSLResponder, Error>?
    private var client: OCSPHTTPClient!
    private var fronts: [SocatListener] = []

    override class func setUp() {
        super.setUp()
        responder = Result { try OpenSSLResponder.start() }
    }

    override class func tearDown() {
        if case let .success(responder)? = responder { responder.stop() }
        responder = nil
        super.tearDown()
    }

    override func setUp() async throws {
        client = OCSPHTTPClient(group: MultiThreadedEventLoopGroup.singleton)
    }

    override func tearDown() async throws {
        for front in fronts { await front.stop() }
        fronts = []
    }

    // MARK: Accepted

    func testFetchesThroughTLSTrustingTheConfiguredCABundle() async throws {
        let responder = try XCTUnwrap(Self.responder).get()
        let front = try await startFront(responder)
        let trust = try ClientTLSContext(caBundleAt: responder.pki.path("root-ca.pem"))

        for host in ["127.0.0.1", "localhost"] {
            let result = try await client.fetch(responderURL: "https://\(host):\(front.port)/",
                                                requestDER: responder.requestDER,
                                                configuration: OCSPFetchConfiguration(trust: trust))
            XCTAssertEqual(result.httpStatus, 200, host)
            let verified = try Self.verify(result.body, responder: responder)
            XCTAssertEqual(verified.status, .good, host)
        }
    }

    func testFetchesOverRFC5019GetThroughTLS() async throws {
        let responder = try XCTUnwrap(Self.responder).get()
        let front = try await startFront(responder)
        let trust = try ClientTLSContext(caBundleAt: responder.pki.caChain)
        let result = try await client.fetch(responderURL: "https://localhost:\(front.port)",
                                            requestDER: responder.requestDER,
                                            configuration: OCSPFetchConfiguration(method: .get, trust: trust))
        XCTAssertTrue(result.url.hasPrefix("https://localhost:\(front.port)/M"), result.url)
        XCTAssertEqual(try Self.verify(result.body, responder: responder).status, .good)
    }

    // MARK: Refused, each with its reason

    func testAResponderFromAnotherCAIsRefused() async throws {
        let responder = try XCTUnwrap(Self.responder).get()
        let front = try await startFront(responder)
        let rogueTrust = try ClientTLSContext(caBundleAt: responder.pki.path("rogue-ca.pem"))
        let error = await fetchError("https://127.0.0.1:\(front.port)/", responder, trust: rogueTrust)
        guard case let .tlsFailed(reason)? = error else { return XCTFail("expected a TLS failure, got \(String(describing: error))") }
        XCTAssertTrue(reason.contains("certificate verify failed"), reason)
        XCTAssertTrue(reason.contains("server certificate: unable to get local issuer certificate"), reason)
        XCTAssertTrue(error!.description.hasPrefix("TLS with the responder failed: "), error!.description)
    }

    func testThePrivateCAIsNotTrustedByDefault() async throws {
        // Without a ca_bundle the system trust store applies, which knows nothing of a private CA.
        let responder = try XCTUnwrap(Self.responder).get()
        let front = try await startFront(responder)
        let error = await fetchError("https://127.0.0.1:\(front.port)/", responder, trust: .systemTrust)
        guard case let .tlsFailed(reason)? = error else { return XCTFail("expected a TLS failure, got \(String(describing: error))") }
        XCTAssertTrue(reason.contains("unable to get local issuer certificate"), reason)
    }

    func testACertificateForAnotherAddressIsRefused() async throws {
        // The front listens on all of 127/8; its certificate names 127.0.0.1 only.
        let responder = try XCTUnwrap(Self.responder).get()
        let front = try await startFront(responder)
        let trust = try ClientTLSContext(caBundleAt: responder.pki.caChain)
        let error = await fetchError("https://127.0.0.2:\(front.port)/", responder, trust: trust)
        guard case let .tlsFailed(reason)? = error else { return XCTFail("expected a TLS failure, got \(String(describing: error))") }
        XCTAssertTrue(reason.contains("server certificate: IP address mismatch"), reason)
    }

    func testAPlainHTTPResponderBehindAnHTTPSURLIsATLSFailure() async throws {
        // A plain HTTP server answering the ClientHello (not the shared openssl ocsp, whose
        // worker would be left reading a request that never ends).
        let responder = try XCTUnwrap(Self.responder).get()
        let plain = try await SocatListener.answering("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        let trust = try ClientTLSContext(caBundleAt: responder.pki.caChain)
        let error = await fetchError("https://127.0.0.1:\(plain.port)/", responder, trust: trust)
        await plain.stop()
        guard case let .tlsFailed(reason)? = error else { return XCTFail("expected a TLS failure, got \(String(describing: error))") }
        XCTAssertTrue(reason.contains("wrong version number"), reason)
    }

    func testASilentTLSServerTimesOut() async throws {
        let responder = try XCTUnwrap(Self.responder).get()
        let silent = try ListeningSocket()  // accepts, never answers the ClientHello
        defer { silent.close() }
        let error = await fetchError("https://127.0.0.1:\(silent.port)/", responder, trust: .systemTrust,
                                     timeout: .milliseconds(500))
        XCTAssertEqual(error, .timedOut(after: .milliseconds(500)))
    }

    func testATrustBundleThatIsNotACAIsRefusedAtLoad() throws {
        let responder = try XCTUnwrap(Self.responder).get()
        let path = responder.pki.path("device-1.pem")
        XCTAssertThrowsError(try ClientTLSContext(caBundleAt: path)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(path): certificate '"), "\(error)")
            XCTAssertTrue("\(error)".hasSuffix("is not a CA certificate"), "\(error)")
        }
        XCTAssertThrowsError(try ClientTLSContext(caBundleAt: responder.pki.path("nothing.pem"))) { error in
            XCTAssertTrue("\(error)".hasSuffix("nothing.pem: no such file"), "\(error)")
        }
    }

    // MARK: Helpers

    private func startFront(_ responder: OpenSSLResponder) async throws -> SocatListener {
        let front = try await SocatListener.tlsFront(certificate: responder.pki.path("server.pem"),
                                             key: responder.pki.path("server.key"),
                                             forwardingTo: responder.pki.ocspPort)
        fronts.append(front)
        return front
    }

    private func fetchError(_ url: String, _ responder: OpenSSLResponder, trust: ClientTLSContext,
                            timeout: Duration = .seconds(5),
                            file: StaticString = #filePath, line: UInt = #line) async -> OCSPFetchError? {
        do throws(OCSPFetchError) {
            let result = try await client.fetch(responderURL: url, requestDER: responder.requestDER,
                                                configuration: OCSPFetchConfiguration(timeout: timeout, trust: trust))
            XCTFail("expected a failure, got HTTP \(result.httpStatus) with \(result.body.count) bytes", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    /// Verified as stapling does: issuer device-1's CA, the response about device-1.
    private static func verify(_ der: [UInt8], responder: OpenSSLResponder) throws -> VerifiedOCSPResponse {
        let pki = responder.pki
        let certificate = try XCTUnwrap(PEMFile.certificateChain(at: pki.path("device-1.pem")).first)
        let issuer = try XCTUnwrap(PEMFile.certificateChain(at: pki.path("issuing-ca.pem")).first)
        let certID = try CertID(certificate: certificate, issuer: issuer)
        return try OCSPVerificationPolicy(issuer: issuer).verify(der: der, for: certID).get()
    }
}
