/// Why an OCSP fetch failed. Each case names one thing the operator can check; the caller adds
/// the responder URL and the certificate when it logs.
public enum OCSPFetchError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The URL (as given) is not an `http://` or `https://` URL we can use.
    case invalidURL(String)
    /// The TCP connection could not be made; the reason as the system states it ("connection refused").
    case connectFailed(String)
    /// The TLS handshake with an https:// responder failed; OpenSSL's reason and, when the
    /// responder's certificate is what failed, the verifier's words ("hostname mismatch").
    case tlsFailed(String)
    /// The whole exchange (connect, send, full response) did not finish in time.
    case timedOut(after: Duration)
    /// The responder answered with an HTTP status other than 200.
    case httpStatus(Int)
    /// The responder's Content-Type (as sent; "" when absent) is not application/ocsp-response.
    case wrongContentType(String)
    /// The response body is (or announced to be) larger than the configured cap.
    case tooLarge(limit: Int)
    /// The connection ended before the whole body arrived.
    case truncated
    /// The bytes that came back are not an HTTP/1.x response.
    case malformedHTTP(String)

    public var description: String {
        switch self {
        case let .invalidURL(url):
            return "not an http:// or https:// URL: \(url)"
        case let .connectFailed(reason):
            return "cannot connect to the responder: \(reason)"
        case let .tlsFailed(reason):
            return "TLS with the responder failed: \(reason)"
        case let .timedOut(after):
            return "responder timed out after \(Self.format(after))"
        case let .httpStatus(status):
            return "responder answered HTTP \(status)"
        case let .wrongContentType(contentType):
            return contentType.isEmpty
                ? "responder answered without a Content-Type (expected application/ocsp-response)"
                : "responder answered Content-Type \(contentType), not application/ocsp-response"
        case let .tooLarge(limit):
            return "response larger than \(limit) bytes"
        case .truncated:
            return "responder closed the connection before the whole response arrived"
        case let .malformedHTTP(detail):
            return "malformed HTTP response: \(detail)"
        }
    }

    /// "5 s", "1.5 s", "250 ms".
    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000) s" }
        if milliseconds < 1000 { return "\(milliseconds) ms" }
        return "\(Double(milliseconds) / 1000) s"
    }
}
