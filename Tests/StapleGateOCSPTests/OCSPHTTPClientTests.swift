import Foundation
import NIOCore
import NIOPosix
@testable import StapleGateOCSP
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The OCSP HTTP transport against a real `openssl ocsp` responder, and against a tiny local
/// server that misbehaves in every way the client must refuse precisely.
final class OCSPHTTPClientTests: XCTestCase {
    private var clientGroup: MultiThreadedEventLoopGroup!
    private var client: OCSPHTTPClient!
    private var fakes: [FakeHTTPResponder] = []

    /// One `openssl ocsp` responder for the class: stopping one takes openssl two seconds.
    private static var responder: Result<OpenSSLResponder, Error>?

    override class func setUp() {
        super.setUp()
        responder = Result { try OpenSSLResponder.start() }
    }

    override class func tearDown() {
        if case let .success(responder)? = responder {
            responder.stop()
            XCTAssertTrue(responder.responder.processGroupIsGone, "openssl ocsp left workers behind")
        }
        responder = nil
        super.tearDown()
    }

    override func setUp() async throws {
        clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        client = OCSPHTTPClient(group: clientGroup)
    }

    override func tearDown() async throws {
        for fake in fakes { await fake.stop() }
        try await clientGroup.shutdownGracefully()
    }

    // MARK: Real responder: openssl ocsp

    func testPostToOpenSSLResponderAnswersGood() async throws {
        let responder = try XCTUnwrap(Self.responder).get()
        let (pki, requestDER) = (responder.pki, responder.requestDER)

        let result = try await client.fetch(responderURL: pki.ocspURL, requestDER: requestDER,
                                            configuration: OCSPFetchConfiguration(method: .post))

        XCTAssertEqual(result.httpStatus, 200)
        XCTAssertEqual(result.contentType.lowercased(), "application/ocsp-response")
        XCTAssertEqual(result.url, pki.ocspURL)
        XCTAssertGreaterThan(result.latency, .zero)
        XCTAssertLessThan(result.latency, .seconds(5))
        try await assertGoodResponse(result.body, responder: responder)
    }

    func testGetToOpenSSLResponderAnswersGood() async throws {
        let responder = try XCTUnwrap(Self.responder).get()
        let (pki, requestDER) = (responder.pki, responder.requestDER)
        // RFC 5019 §5: {url}/{url-encoding of base-64 encoding of the DER encoding of the OCSPRequest}
        let encoded = Data(requestDER).base64EncodedString()
            .addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))!
        let getURL = "\(pki.ocspURL)/\(encoded)"

        let result = try await client.fetch(responderURL: pki.ocspURL, requestDER: requestDER, getURL: getURL,
                                            configuration: OCSPFetchConfiguration(method: .get))

        XCTAssertEqual(result.httpStatus, 200)
        XCTAssertEqual(result.url, getURL)
        try await assertGoodResponse(result.body, responder: responder)
        // Without a getURL the client builds the same one.
        let built = try await client.fetch(responderURL: pki.ocspURL, requestDER: requestDER,
                                           configuration: OCSPFetchConfiguration(method: .get))
        XCTAssertEqual(built.url, getURL)
        try await assertGoodResponse(built.body, responder: responder)
    }

    // MARK: What goes on the wire

    func testPostRequestIsWellFormed() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(body: [0x30, 0x03, 0x0A, 0x01, 0x00]), close: true))
        let requestDER: [UInt8] = [0x30, 0x02, 0x30, 0x00, 0xFF, 0x0D, 0x0A]

        let result = try await client.fetch(responderURL: "http://127.0.0.1:\(fake.port)/ocsp?x=1", requestDER: requestDER)

        XCTAssertEqual(result.body, [0x30, 0x03, 0x0A, 0x01, 0x00])
        let request = try XCTUnwrap(fake.requests.first)
        let (lines, body) = Self.split(request)
        XCTAssertEqual(lines.first, "POST /ocsp?x=1 HTTP/1.1")
        let headers = Self.headers(lines)
        XCTAssertEqual(headers["host"], "127.0.0.1:\(fake.port)")
        XCTAssertEqual(headers["content-type"], "application/ocsp-request")
        XCTAssertEqual(headers["accept"], "application/ocsp-response")
        XCTAssertEqual(headers["connection"], "close")
        XCTAssertEqual(headers["content-length"], "\(requestDER.count)")
        XCTAssertNil(headers["transfer-encoding"])
        XCTAssertEqual(body, requestDER)
    }

    func testGetRequestIsWellFormed() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(body: [0x30, 0x00]), close: true))
        let requestDER: [UInt8] = [0xFB, 0xFF, 0xBF, 0x00]  // base64 "+/+/AA==": every character that needs encoding

        let result = try await client.fetch(responderURL: "http://127.0.0.1:\(fake.port)/base", requestDER: requestDER,
                                            configuration: OCSPFetchConfiguration(method: .get))

        XCTAssertEqual(result.url, "http://127.0.0.1:\(fake.port)/base/%2B%2F%2B%2FAA%3D%3D")
        let (lines, body) = Self.split(try XCTUnwrap(fake.requests.first))
        XCTAssertEqual(lines.first, "GET /base/%2B%2F%2B%2FAA%3D%3D HTTP/1.1")
        let headers = Self.headers(lines)
        XCTAssertEqual(headers["host"], "127.0.0.1:\(fake.port)")
        XCTAssertEqual(headers["accept"], "application/ocsp-response")
        XCTAssertEqual(headers["connection"], "close")
        XCTAssertNil(headers["content-type"])
        XCTAssertNil(headers["content-length"])
        XCTAssertNil(headers["transfer-encoding"])
        XCTAssertEqual(body, [])
    }

    func testTheClientClosesTheConnectionAfterTheExchange() async throws {
        // The fake keeps the connection open after answering: the client must close it.
        let fake = try startFake(.reply(FakeHTTPResponder.response(body: [0x30, 0x00]), close: false))
        _ = try await client.fetch(responderURL: "http://127.0.0.1:\(fake.port)/", requestDER: [0x30, 0x00])
        try await waitUntil(timeout: .seconds(5), "the client to close its connection") {
            fake.connectionsClosedByClient == 1
        }
    }

    // MARK: Answers that are refused

    func testHTTP500IsRefusedWithItsStatus() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(status: "500 Internal Server Error", contentType: "text/plain",
                                                                   body: Array("oops".utf8)), close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .httpStatus(500))
        XCTAssertEqual(error?.description, "responder answered HTTP 500")
    }

    func testWrongContentTypeIsRefused() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(contentType: "text/html; charset=utf-8",
                                                                   body: Array("<html>".utf8)), close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .wrongContentType("text/html; charset=utf-8"))
    }

    func testMissingContentTypeIsRefused() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(contentType: nil, body: [0x30, 0x00]), close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .wrongContentType(""))
    }

    func testContentTypeInAnyCaseWithParametersIsAccepted() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(contentType: "Application/OCSP-Response ; foo=bar",
                                                                   body: [0x30, 0x00]), close: true))
        let result = try await client.fetch(responderURL: "http://127.0.0.1:\(fake.port)/", requestDER: [0x30, 0x00])
        XCTAssertEqual(result.body, [0x30, 0x00])
        XCTAssertEqual(result.contentType, "Application/OCSP-Response ; foo=bar")
    }

    func testAnnouncedBodyOverTheCapIsRefusedWithoutReadingIt() async throws {
        // Only the head (Content-Length: 5000) is sent, and the connection stays open: waiting
        // for the body would end in a timeout, not in tooLarge.
        let head = Array("HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 5000\r\n\r\n".utf8)
        let fake = try startFake(.reply(head, close: false))

        let started = ContinuousClock.now
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")

        XCTAssertEqual(error, .tooLarge(limit: 4096))
        XCTAssertEqual(error?.description, "response larger than 4096 bytes")
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2))
        try await waitUntil(timeout: .seconds(5), "the client to close its connection") {
            fake.connectionsClosedByClient == 1
        }
    }

    func testAnnouncedBodyOverTheCapWithTheBodyIsRefused() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(body: [UInt8](repeating: 0x41, count: 5000)), close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .tooLarge(limit: 4096))
    }

    func testChunkedBodyOverTheCapIsCutOff() async throws {
        // 5000 bytes chunked, no Content-Length, and no final chunk: the client must stop on the
        // cap, not wait for the end.
        let bytes = FakeHTTPResponder.chunkedResponse(body: [UInt8](repeating: 0x42, count: 5000), complete: false)
        let fake = try startFake(.reply(bytes, close: false))

        let started = ContinuousClock.now
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")

        XCTAssertEqual(error, .tooLarge(limit: 4096))
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2))
        try await waitUntil(timeout: .seconds(5), "the client to close its connection") {
            fake.connectionsClosedByClient == 1
        }
    }

    func testCompleteChunkedBodyOverTheCapIsRefused() async throws {
        let bytes = FakeHTTPResponder.chunkedResponse(body: [UInt8](repeating: 0x42, count: 5000))
        let fake = try startFake(.reply(bytes, close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .tooLarge(limit: 4096))
    }

    func testABodyOfExactlyTheCapIsAccepted() async throws {
        let body = (0..<4096).map { UInt8(truncatingIfNeeded: $0) }
        let withLength = try startFake(.reply(FakeHTTPResponder.response(body: body), close: true))
        let chunked = try startFake(.reply(FakeHTTPResponder.chunkedResponse(body: body, chunkSize: 1500), close: true))

        let first = try await client.fetch(responderURL: "http://127.0.0.1:\(withLength.port)/", requestDER: [0x30, 0x00])
        let second = try await client.fetch(responderURL: "http://127.0.0.1:\(chunked.port)/", requestDER: [0x30, 0x00])

        XCTAssertEqual(first.body, body)
        XCTAssertEqual(second.body, body)
        // One byte more is one too many.
        let over = try startFake(.reply(FakeHTTPResponder.response(body: body + [0]), close: true))
        let error = await fetchError("http://127.0.0.1:\(over.port)/")
        XCTAssertEqual(error, .tooLarge(limit: 4096))
    }

    func testTheCapIsConfigurable() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(body: [UInt8](repeating: 1, count: 200)), close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/",
                                     configuration: OCSPFetchConfiguration(maximumResponseBytes: 100))
        XCTAssertEqual(error, .tooLarge(limit: 100))
    }

    func testABodyReadUntilCloseIsAccepted() async throws {
        // HTTP/1.0 style: no Content-Length, no chunking, the body ends with the connection.
        let bytes = Array("HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n\r\n".utf8) + [0x30, 0x01, 0x00]
        let fake = try startFake(.reply(bytes, close: true))
        let result = try await client.fetch(responderURL: "http://127.0.0.1:\(fake.port)/", requestDER: [0x30, 0x00])
        XCTAssertEqual(result.body, [0x30, 0x01, 0x00])
    }

    func testShortBodyThenCloseIsTruncated() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(body: [UInt8](repeating: 7, count: 10), contentLength: 100),
                                        close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .truncated)
    }

    func testUnfinishedChunkedBodyThenCloseIsTruncated() async throws {
        let bytes = FakeHTTPResponder.chunkedResponse(body: [UInt8](repeating: 7, count: 300), chunkSize: 100, complete: false)
        let fake = try startFake(.reply(bytes, close: true))
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .truncated)
    }

    func testSilentResponderTimesOut() async throws {
        let fake = try startFake(.silent)

        let started = ContinuousClock.now
        let error = await fetchError("http://127.0.0.1:\(fake.port)/",
                                     configuration: OCSPFetchConfiguration(timeout: .seconds(1)))
        let elapsed = ContinuousClock.now - started

        XCTAssertEqual(error, .timedOut(after: .seconds(1)))
        XCTAssertEqual(error?.description, "responder timed out after 1 s")
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(950))
        XCTAssertLessThan(elapsed, .seconds(3))
        XCTAssertEqual(fake.requests.count, 1, "the request was sent before the wait")
        try await waitUntil(timeout: .seconds(5), "the client to close its connection on timeout") {
            fake.connectionsClosedByClient == 1
        }
    }

    func testTheDeadlineCoversTheWholeExchange() async throws {
        // Head at once, body never: the deadline still applies after the head.
        let head = Array("HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 50\r\n\r\n".utf8)
        let fake = try startFake(.reply(head, close: false))
        let started = ContinuousClock.now
        let error = await fetchError("http://127.0.0.1:\(fake.port)/",
                                     configuration: OCSPFetchConfiguration(timeout: .milliseconds(500)))
        XCTAssertEqual(error, .timedOut(after: .milliseconds(500)))
        XCTAssertEqual(error?.description, "responder timed out after 500 ms")
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(3))
    }

    func testGarbageIsMalformedHTTP() async throws {
        let fake = try startFake(.reply(Array("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\r\n".utf8), close: false))
        let started = ContinuousClock.now
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        guard case .malformedHTTP = error else { return XCTFail("expected malformedHTTP, got \(String(describing: error))") }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2))
    }

    func testHangingUpWithoutAnAnswerIsMalformedHTTP() async throws {
        let fake = try startFake(.hangUp)
        let error = await fetchError("http://127.0.0.1:\(fake.port)/")
        XCTAssertEqual(error, .malformedHTTP("the responder closed the connection without answering"))
    }

    // MARK: Before any HTTP

    func testNothingListeningIsConnectionRefused() async throws {
        let port = try FreePort.next()
        let error = await fetchError("http://127.0.0.1:\(port)/")
        XCTAssertEqual(error, .connectFailed("connection refused"))
        XCTAssertEqual(error?.description, "cannot connect to the responder: connection refused")
    }

    /// An address is dialled as it is; a name still goes through the resolver, and one that
    /// does not resolve is said so.
    func testNamedResponderIsResolvedAndAnUnknownNameIsSaidSo() async throws {
        let fake = try startFake(.reply(FakeHTTPResponder.response(body: [0x30, 0x00]), close: true))
        let result = try await client.fetch(responderURL: "http://localhost:\(fake.port)/", requestDER: [0x30, 0x00])
        XCTAssertEqual(result.body, [0x30, 0x00])
        let error = await fetchError("http://no-such-responder.invalid:\(fake.port)/")
        XCTAssertEqual(error, .connectFailed("cannot resolve no-such-responder.invalid"))
    }

    func testInvalidURLsAreRefused() async throws {
        for url in ["ftp://x", "not a url", "", "http://", "http://:80/", "http://host:0/", "http://host:65536/",
                    "http://host:8o/", "http://[::1/", "http://[::1]x/", "http://::1/", "http://user@host/",
                    "http://host /", "http://hést/", "//host/", "http:/host/"] {
            let error = await fetchError(url)
            XCTAssertEqual(error, .invalidURL(url), url)
        }
        XCTAssertEqual(OCSPFetchError.invalidURL("ftp://x").description, "not an http:// or https:// URL: ftp://x")
    }

    func testURLsAreParsed() throws {
        func target(_ url: String) throws -> OCSPHTTPTarget { try OCSPHTTPTarget(parsing: url) }

        var parsed = try target("http://ocsp.example.com")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.requestTarget, parsed.hostHeader],
                       ["ocsp.example.com", "80", "/", "ocsp.example.com"])
        parsed = try target("HTTP://OCSP.example.com:80/a/b?c=d#frag")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.requestTarget, parsed.hostHeader],
                       ["OCSP.example.com", "80", "/a/b?c=d", "OCSP.example.com"])
        parsed = try target("http://127.0.0.1:8888")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.requestTarget, parsed.hostHeader],
                       ["127.0.0.1", "8888", "/", "127.0.0.1:8888"])
        parsed = try target("http://[::1]:8080/ocsp")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.requestTarget, parsed.hostHeader],
                       ["::1", "8080", "/ocsp", "[::1]:8080"])
        parsed = try target("http://[2001:db8::1]")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.requestTarget, parsed.hostHeader],
                       ["2001:db8::1", "80", "/", "[2001:db8::1]"])
        parsed = try target("http://host:/?q")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.requestTarget], ["host", "80", "/?q"])
        parsed = try target("http://host?q")
        XCTAssertEqual(parsed.requestTarget, "/?q")
        XCTAssertFalse(parsed.usesTLS)
        parsed = try target("HTTPS://ocsp.example.com/ocsp")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.requestTarget, parsed.hostHeader],
                       ["ocsp.example.com", "443", "/ocsp", "ocsp.example.com"])
        XCTAssertTrue(parsed.usesTLS)
        parsed = try target("https://ocsp.example.com:8443")
        XCTAssertEqual([parsed.host, "\(parsed.port)", parsed.hostHeader], ["ocsp.example.com", "8443", "ocsp.example.com:8443"])
        parsed = try target("https://ocsp.example.com:80/")
        XCTAssertEqual(parsed.hostHeader, "ocsp.example.com:80")
    }

    func testIPv6LiteralResponder() async throws {
        let fake: FakeHTTPResponder
        do {
            fake = try startFake(.reply(FakeHTTPResponder.response(body: [0x30, 0x00]), close: true), host: "::1")
        } catch {
            throw XCTSkip("no IPv6 loopback here: \(error)")
        }
        let result = try await client.fetch(responderURL: "http://[::1]:\(fake.port)/", requestDER: [0x30, 0x00])
        XCTAssertEqual(result.body, [0x30, 0x00])
        let (lines, _) = Self.split(try XCTUnwrap(fake.requests.first))
        XCTAssertEqual(Self.headers(lines)["host"], "[::1]:\(fake.port)")
    }

    func testErrorDescriptions() {
        XCTAssertEqual(OCSPFetchError.timedOut(after: .seconds(5)).description, "responder timed out after 5 s")
        XCTAssertEqual(OCSPFetchError.timedOut(after: .milliseconds(1500)).description, "responder timed out after 1.5 s")
        XCTAssertEqual(OCSPFetchError.wrongContentType("text/html").description,
                       "responder answered Content-Type text/html, not application/ocsp-response")
        XCTAssertEqual(OCSPFetchError.truncated.description,
                       "responder closed the connection before the whole response arrived")
    }

    // MARK: Helpers

    private func fetchError(_ url: String, configuration: OCSPFetchConfiguration = OCSPFetchConfiguration(),
                            file: StaticString = #filePath, line: UInt = #line) async -> OCSPFetchError? {
        do throws(OCSPFetchError) {
            let result = try await client.fetch(responderURL: url, requestDER: [0x30, 0x00], configuration: configuration)
            XCTFail("expected a failure, got HTTP \(result.httpStatus) with \(result.body.count) bytes", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    private func startFake(_ behaviour: FakeHTTPResponder.Behaviour, host: String = "127.0.0.1") throws -> FakeHTTPResponder {
        let fake = try FakeHTTPResponder(behaviour, host: host)
        fakes.append(fake)
        return fake
    }

    private func assertGoodResponse(_ der: [UInt8], responder: OpenSSLResponder,
                                    file: StaticString = #filePath, line: UInt = #line) async throws {
        let responseFile = try responder.scratch.write("response-\(UUID().uuidString).der", Data(der))
        let check = try ManagedProcess("openssl", ["ocsp", "-respin", responseFile, "-resp_text",
                                                   "-CAfile", responder.pki.caChain])
        let result = try await check.commandResult(timeout: .seconds(30))
        XCTAssertTrue(result.status.succeeded, "\(check.commandLine)\n\(check.output)", file: file, line: line)
        XCTAssertTrue(result.stdout.contains("Cert Status: good"), check.output, file: file, line: line)
        XCTAssertTrue(check.output.contains("Response verify OK"), check.output, file: file, line: line)
    }

    /// The request line and headers as text lines, and the body.
    private static func split(_ request: [UInt8]) -> (lines: [String], body: [UInt8]) {
        let separator = Array("\r\n\r\n".utf8)
        guard let end = (0...max(0, request.count - 4)).first(where: { Array(request[$0..<min($0 + 4, request.count)]) == separator })
        else { return ([], []) }
        let head = String(decoding: request[..<end], as: UTF8.self)
        return (head.components(separatedBy: "\r\n"), Array(request[(end + 4)...]))
    }

    /// Header names lowercased; a repeated header would show up as "a, b".
    private static func headers(_ lines: [String]) -> [String: String] {
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name] = headers[name].map { "\($0), \(value)" } ?? value
        }
        return headers
    }
}
