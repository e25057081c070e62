#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import StapleGateTLS

/// What came back from the responder: a 200 with an OCSP content type and the whole body.
struct OCSPHTTPResponse: Sendable {
    let status: Int
    let contentType: String
    let body: [UInt8]
}

/// Collects one HTTP response (head and body, the body capped at `maximumBodyBytes`) and
/// completes its promise exactly once: with the response, or with the first reason it is not
/// one we accept. A refusal closes the channel at once, so nothing more is read.
/// Sits after `addHTTPClientHandlers`; added only to a connected channel.
final class OCSPHTTPResponseCollector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private enum State {
        case awaitingHead
        /// `declaredLength`: the Content-Length, if the responder sent one.
        case readingBody(ByteBuffer, status: Int, contentType: String, declaredLength: Int?)
        case done
    }

    private let maximumBodyBytes: Int
    private let promise: EventLoopPromise<OCSPHTTPResponse>
    private var state: State = .awaitingHead

    init(maximumBodyBytes: Int, promise: EventLoopPromise<OCSPHTTPResponse>) {
        self.maximumBodyBytes = maximumBodyBytes
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case let (.head(head), .awaitingHead):
            let status = Int(head.status.code)
            guard status == 200 else { return refuse(.httpStatus(status), context: context) }
            let contentType = head.headers.first(name: "content-type") ?? ""
            guard Self.isOCSPResponse(contentType) else {
                return refuse(.wrongContentType(contentType), context: context)
            }
            let declaredLength = head.headers.first(name: "content-length").flatMap { Int($0) }
            if let declaredLength, declaredLength > maximumBodyBytes {
                // Refused on the announcement: the body is never read.
                return refuse(.tooLarge(limit: maximumBodyBytes), context: context)
            }
            let body = context.channel.allocator.buffer(capacity: min(declaredLength ?? 1024, maximumBodyBytes))
            state = .readingBody(body, status: status, contentType: contentType, declaredLength: declaredLength)

        case (.body(var part), .readingBody(var body, let status, let contentType, let declaredLength)):
            guard body.readableBytes + part.readableBytes <= maximumBodyBytes else {
                return refuse(.tooLarge(limit: maximumBodyBytes), context: context)
            }
            state = .done  // while `body` is out of the enum: no copy on write
            body.writeBuffer(&part)
            state = .readingBody(body, status: status, contentType: contentType, declaredLength: declaredLength)

        case (.end, .readingBody(var body, let status, let contentType, let declaredLength)):
            // NIOHTTP1 already fails a short body; this only guards the count we hand out.
            if let declaredLength, body.readableBytes != declaredLength {
                return refuse(.truncated, context: context)
            }
            state = .done
            promise.succeed(OCSPHTTPResponse(status: status, contentType: contentType,
                                             body: body.readBytes(length: body.readableBytes) ?? []))

        case (_, .done):
            break  // refused already; whatever the decoder still had buffered is dropped

        case (.head, .readingBody):
            refuse(.malformedHTTP("a second response head arrived before the body ended"), context: context)
        case (.body, .awaitingHead), (.end, .awaitingHead):
            refuse(.malformedHTTP("body before the response head"), context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        switch state {
        case .done:
            break
        case .readingBody:
            if let error = error as? HTTPParserError, error != .invalidEOFState {
                refuse(.malformedHTTP(Self.describe(error)), context: context)
            } else {
                // End of input or a reset in the middle of the body.
                refuse(.truncated, context: context)
            }
        case .awaitingHead:
            if let error = error as? HTTPParserError {
                refuse(.malformedHTTP(error == .invalidEOFState
                        ? "the connection closed in the middle of the response head"
                        : Self.describe(error)),
                    context: context)
            } else if let error = error as? IOError {
                refuse(.connectFailed(OCSPHTTPClient.systemMessage(error.errnoCode)), context: context)
            } else {
                refuse(.malformedHTTP("\(error)"), context: context)
            }
        }
    }

    /// An https:// responder whose handshake failed: the TLS handler closes next, and its reason
    /// is the one worth reporting (not "closed without answering").
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case let .handshakeFailed(reason)? = event as? TLSEvent {
            refuse(.tlsFailed(reason), context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .awaitingHead:
            refuse(.malformedHTTP("the responder closed the connection without answering"), context: context)
        case .readingBody:
            refuse(.truncated, context: context)
        case .done:
            break
        }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // Never leave the promise pending, whatever tears the pipeline down.
        if case .done = state { return }
        state = .done
        promise.fail(OCSPFetchError.malformedHTTP("the exchange ended before a response"))
    }

    private func refuse(_ error: OCSPFetchError, context: ChannelHandlerContext) {
        if case .done = state { return }
        state = .done
        promise.fail(error)
        context.close(promise: nil)
    }

    /// application/ocsp-response, in any case, with or without parameters.
    static func isOCSPResponse(_ contentType: String) -> Bool {
        let mediaType = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return mediaType.trimmingASCIISpaces().lowercased() == "application/ocsp-response"
    }

    private static func describe(_ error: HTTPParserError) -> String {
        switch error {
        case .invalidConstant, .invalidVersion, .invalidStatus: return "not an HTTP/1.x response (\(error))"
        case .headerOverflow: return "response head too large"
        default: return "\(error)"
        }
    }
}

extension Substring {
    fileprivate func trimmingASCIISpaces() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result.removeFirst() }
        while let last = result.last, last == " " || last == "\t" { result.removeLast() }
        return result
    }
}
