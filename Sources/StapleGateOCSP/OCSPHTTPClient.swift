#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import StapleGateTLS

/// How one OCSP request is sent.
public struct OCSPFetchConfiguration: Sendable, Equatable {
    public enum Method: String, Sendable {
        /// POST of the DER request as application/ocsp-request.
        case post
        /// GET of the RFC 5019 URL (base64 of the DER, URL-encoded, after the responder URL).
        case get
    }

    public var method: Method = .post
    /// The whole exchange: connect + send + full response.
    public var timeout: Duration = .seconds(5)
    /// Cap on the response body; a responder that announces or sends more is cut off at once.
    public var maximumResponseBytes: Int = 4096
    /// Whom an https:// responder's certificate must chain to: a configured CA bundle, or by
    /// default the system trust store. Unused for http://.
    public var trust: ClientTLSContext = .systemTrust

    public init(method: Method = .post, timeout: Duration = .seconds(5), maximumResponseBytes: Int = 4096,
                trust: ClientTLSContext = .systemTrust) {
        self.method = method
        self.timeout = timeout
        self.maximumResponseBytes = maximumResponseBytes
        self.trust = trust
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.method == rhs.method && lhs.timeout == rhs.timeout
            && lhs.maximumResponseBytes == rhs.maximumResponseBytes && lhs.trust === rhs.trust
    }
}

/// A responder's answer: HTTP 200, content type application/ocsp-response, the body as sent
/// (not yet parsed or verified).
public struct OCSPFetchResult: Sendable {
    public let body: [UInt8]
    public let httpStatus: Int
    /// As the responder sent it (application/ocsp-response, perhaps with parameters).
    public let contentType: String
    /// From the start of the connect to the last byte of the body.
    public let latency: Duration
    /// The URL actually fetched (for GET, the RFC 5019 URL).
    public let url: String
}

/// Moves OCSP requests and responses over HTTP/1.1, plain or over TLS (our own OpenSSL handler
/// in the client role), one connection per exchange (`Connection: close`), on NIO. Only moves
/// bytes: building and verifying OCSP is elsewhere.
/// Logs nothing; every failure is an `OCSPFetchError` for the caller to log.
public final class OCSPHTTPClient: Sendable {
    private let group: any EventLoopGroup

    public init(group: EventLoopGroup) {
        self.group = group
    }

    /// Sends `requestDER` (a DER OCSPRequest) to `responderURL` and returns the response body.
    /// For GET, `getURL` is the full RFC 5019 URL the caller built; when nil it is built here
    /// from `responderURL` and `requestDER`.
    public func fetch(
        responderURL: String,
        requestDER: [UInt8],
        getURL: String? = nil,
        configuration: OCSPFetchConfiguration = OCSPFetchConfiguration()
    ) async throws(OCSPFetchError) -> OCSPFetchResult {
        let url = configuration.method == .get
            ? getURL ?? Self.rfc5019URL(responderURL: responderURL, requestDER: requestDER)
            : responderURL
        let target = try OCSPHTTPTarget(parsing: url)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.requestTarget)
        head.headers = [
            "Host": target.hostHeader,
            "Accept": "application/ocsp-response",
            "Connection": "close",
        ]
        var body: [UInt8]?
        if configuration.method == .post {
            head.method = .POST
            head.headers.add(name: "Content-Type", value: "application/ocsp-request")
            head.headers.add(name: "Content-Length", value: String(requestDER.count))
            body = requestDER
        }

        let eventLoop = group.next()
        let (request, requestBody) = (head, body)
        let exchangeResult = eventLoop.flatSubmit {
            OCSPHTTPExchange(target: target, head: request, body: requestBody, configuration: configuration,
                             eventLoop: eventLoop).start()
        }
        do {
            let (response, latency) = try await exchangeResult.get()
            return OCSPFetchResult(body: response.body, httpStatus: response.status,
                                   contentType: response.contentType, latency: latency, url: url)
        } catch let error as OCSPFetchError {
            throw error
        } catch {
            // Only an event loop that is shut down gets here.
            throw .connectFailed("\(error)")
        }
    }

    /// RFC 5019 §5: the responder URL, "/", then the URL-encoded base64 of the DER request.
    static func rfc5019URL(responderURL: String, requestDER: [UInt8]) -> String {
        var encoded = ""
        for character in base64(requestDER) {
            switch character {
            case "+": encoded += "%2B"
            case "/": encoded += "%2F"
            case "=": encoded += "%3D"
            default: encoded.append(character)
            }
        }
        return responderURL + (responderURL.hasSuffix("/") ? "" : "/") + encoded
    }

    private static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var output = ""
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            let value = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (16 - 8 * $1.offset) }
            for position in 0..<4 {
                output.append(position <= chunk.count ? alphabet[Int(value >> (18 - 6 * position)) & 63] : "=")
            }
            index += 3
        }
        return output
    }

    /// The errno's message, as operators know it: "connection refused".
    static func systemMessage(_ code: Int32) -> String {
        let message = String(cString: strerror(code))
        return message.prefix(1).lowercased() + message.dropFirst()
    }
}

/// One request/response on one connection. Lives on its event loop only; owns the connection
/// and the deadline, and completes its promise exactly once (response, refusal, failed connect
/// or deadline, whichever comes first), closing the connection then.
private final class OCSPHTTPExchange {
    private enum State {
        case idle
        case connecting
        case exchanging(Channel)
        case finished
    }

    private let target: OCSPHTTPTarget
    private let head: HTTPRequestHead
    private let body: [UInt8]?
    private let configuration: OCSPFetchConfiguration
    private let eventLoop: EventLoop
    private let promise: EventLoopPromise<(OCSPHTTPResponse, Duration)>
    private var state: State = .idle
    private var deadlineTask: Scheduled<Void>?
    private let started = NIODeadline.now()

    init(target: OCSPHTTPTarget, head: HTTPRequestHead, body: [UInt8]?, configuration: OCSPFetchConfiguration,
         eventLoop: EventLoop) {
        self.target = target
        self.head = head
        self.body = body
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.promise = eventLoop.makePromise()
    }

    /// Must run on `eventLoop`.
    func start() -> EventLoopFuture<(OCSPHTTPResponse, Duration)> {
        guard case .idle = state else { return promise.futureResult }
        state = .connecting
        let timeout = configuration.timeout
        deadlineTask = eventLoop.assumeIsolated().scheduleTask(deadline: started + TimeAmount(timeout)) {
            self.finish(.failure(.timedOut(after: timeout)))
        }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: target.host, port: target.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case let .success(channel): self.connected(channel)
                case let .failure(error): self.finish(.failure(self.describeConnectFailure(error)))
                }
            }
        return promise.futureResult
    }

    private func connected(_ channel: Channel) {
        guard case .connecting = state else {
            channel.close(promise: nil)  // the deadline passed while connecting
            return
        }
        state = .exchanging(channel)
        let responsePromise = eventLoop.makePromise(of: OCSPHTTPResponse.self)
        do {
            let pipeline = channel.pipeline.syncOperations
            if target.usesTLS {
                try pipeline.addHandler(OpenSSLClientHandler(context: configuration.trust, serverName: target.host,
                                                             logger: Self.silentLogger))
            }
            try pipeline.addHTTPClientHandlers(decoderLimitConfiguration: OCSPHTTPClient.decoderLimits)
            try pipeline.addHandler(OCSPHTTPResponseCollector(maximumBodyBytes: configuration.maximumResponseBytes,
                                                              promise: responsePromise))
        } catch {
            responsePromise.fail(OCSPFetchError.malformedHTTP("cannot set up the HTTP pipeline: \(error)"))
        }
        responsePromise.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case let .success(response): self.finish(.success(response))
            case let .failure(error): self.finish(.failure(error as? OCSPFetchError ?? .malformedHTTP("\(error)")))
            }
        }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body {
            var buffer = channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }

    /// The TLS handler's failures reach the caller as `OCSPFetchError.tlsFailed`; its log lines
    /// would only repeat them.
    private static let silentLogger = Logger(label: "staplegate.ocsp.tls", factory: { _ in SwiftLogNoOpLogHandler() })

    private func finish(_ result: Result<OCSPHTTPResponse, OCSPFetchError>) {
        let channel: Channel?
        switch state {
        case .finished: return
        case let .exchanging(connected): channel = connected
        case .idle, .connecting: channel = nil
        }
        state = .finished
        deadlineTask?.cancel()
        deadlineTask = nil
        channel?.close(promise: nil)
        let latency = Duration.nanoseconds((NIODeadline.now() - started).nanoseconds)
        promise.completeWith(result.map { ($0, latency) }.mapError { $0 as Error })
    }

    private func describeConnectFailure(_ error: Error) -> OCSPFetchError {
        if let error = error as? ChannelError, case .connectTimeout = error {
            return .timedOut(after: configuration.timeout)
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return describeConnectFailure(first.error) }
            if error.dnsAError != nil || error.dnsAAAAError != nil {
                return .connectFailed("cannot resolve \(target.host)")
            }
            return .connectFailed("no address found for \(target.host)")
        }
        if let error = error as? IOError { return .connectFailed(OCSPHTTPClient.systemMessage(error.errnoCode)) }
        return .connectFailed("\(error)")
    }
}

/// Where an http:// or https:// URL points, parsed by hand (RFC 3986's authority and path; no userinfo).
struct OCSPHTTPTarget: Sendable, Equatable {
    /// Without brackets for IPv6 literals: what to connect to, and the name the TLS server's
    /// certificate must carry.
    let host: String
    let port: Int
    let usesTLS: Bool
    /// Path and query as given (already percent-encoded), "/" when empty.
    let requestTarget: String
    /// `host`, bracketed if IPv6, with `:port` unless it is the scheme's default.
    let hostHeader: String

    init(parsing url: String) throws(OCSPFetchError) {
        let invalid = OCSPFetchError.invalidURL(url)
        // No spaces, controls or non-ASCII anywhere: such a URL is not usable as a request target.
        guard !url.isEmpty, url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }),
              let separator = url.range(of: "://") else { throw invalid }
        switch url[..<separator.lowerBound].lowercased() {
        case "http": usesTLS = false
        case "https": usesTLS = true
        default: throw invalid
        }
        var rest = url[separator.upperBound...]
        if let fragment = rest.firstIndex(of: "#") { rest = rest[..<fragment] }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let pathAndQuery = rest[authorityEnd...]
        guard !authority.contains("@") else { throw invalid }

        let host: Substring
        let portText: Substring?
        let isIPv6: Bool
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid }
            host = authority[authority.index(after: authority.startIndex)..<close]
            guard host.contains(":"), host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { throw invalid }
            let afterClose = authority[authority.index(after: close)...]
            if afterClose.isEmpty {
                portText = nil
            } else if afterClose.hasPrefix(":") {
                portText = afterClose.dropFirst()
            } else {
                throw invalid
            }
            isIPv6 = true
        } else {
            let parts = authority.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw invalid }
            host = parts[0]
            portText = parts.count == 2 ? parts[1] : nil
            guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }) else {
                throw invalid
            }
            isIPv6 = false
        }
        guard !host.isEmpty else { throw invalid }
        let defaultPort = usesTLS ? 443 : 80
        var port = defaultPort
        if let portText, !portText.isEmpty {
            guard portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let number = Int(portText), (1...65535).contains(number) else { throw invalid }
            port = number
        }
        self.host = String(host)
        self.port = port
        requestTarget = pathAndQuery.isEmpty ? "/" : (pathAndQuery.hasPrefix("?") ? "/" + pathAndQuery : String(pathAndQuery))
        let hostPart = isIPv6 ? "[\(host)]" : String(host)
        hostHeader = port == defaultPort ? hostPart : "\(hostPart):\(port)"
    }
}

extension OCSPHTTPClient {
    /// A responder's answer is a few headers and a small body: anything much larger is refused
    /// while it is parsed, not buffered.
    static var decoderLimits: NIOHTTPDecoderLimitConfiguration {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 8 * 1024
        limits.maxHeaderListSize = 16 * 1024
        limits.maxHeaderFieldCount = 100
        return limits
    }
}
