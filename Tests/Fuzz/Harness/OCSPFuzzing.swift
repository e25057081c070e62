import COpenSSL
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import StapleGateOCSP
import StapleGateTLS

enum OCSPFuzzing {
    static let maximumBodyBytes = 4096

    /// The bytes are a responder's answer to our POST, then the connection closes. However
    /// broken, the collector answers exactly once, and only a whole 200 with an OCSP content
    /// type within the size cap is handed on.
    static func collectHTTP(_ bytes: UnsafeRawBufferPointer) {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        let promise = channel.eventLoop.makePromise(of: OCSPHTTPResponse.self)
        var outcome: Result<OCSPHTTPResponse, Error>?
        promise.futureResult.whenComplete { result in
            invariant(outcome == nil, "the collector answered twice")
            outcome = result
        }
        do {
            try channel.pipeline.syncOperations.addHTTPClientHandlers(decoderLimitConfiguration: OCSPHTTPClient.decoderLimits)
            try channel.pipeline.syncOperations.addHandler(OCSPHTTPResponseCollector(maximumBodyBytes: maximumBodyBytes, promise: promise))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 80)).wait()
        } catch {
            fatalError("cannot set up the HTTP pipeline: \(error)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")
        head.headers.add(name: "Content-Type", value: "application/ocsp-request")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}

        // As TCP might deliver it: in two pieces, then the responder closes.
        let all = Array(bytes)
        let split = all.count / 2
        for piece in [all[..<split], all[split...]] where !piece.isEmpty && channel.isActive {
            _ = try? channel.writeInbound(ByteBuffer(bytes: piece))
        }
        if channel.isActive { channel.pipeline.fireChannelInactive() }
        _ = try? channel.close().wait()
        channel.embeddedEventLoop.run()

        guard let outcome else { return invariant(false, "the collector never answered") }
        if case let .success(response) = outcome {
            invariant(response.status == 200, "handed on a \(response.status)")
            invariant(response.body.count <= maximumBodyBytes, "handed on \(response.body.count) bytes, over the cap")
            invariant(OCSPHTTPResponseCollector.isOCSPResponse(response.contentType), "handed on \(response.contentType)")
        }
    }

    /// The response bytes judged for device-1 of the seeds' PKI (`FuzzPKI`), at a fixed time
    /// inside the seeds' validity, without and with the nonce the seed request carried. Only a
    /// verdict of "verified" may come out with a status, and it must be about device-1.
    static func verify(_ bytes: UnsafeRawBufferPointer) {
        let der = Array(bytes)
        for nonce in [nil, FuzzPKI.seedNonce] {
            let verdict = FuzzPKI.policy.verify(der: der, for: FuzzPKI.deviceCertID, nonce: nonce, now: FuzzPKI.seedTime)
            if case let .success(response) = verdict {
                invariant(response.certID == FuzzPKI.deviceCertID, "verified an answer about another certificate")
            }
        }
    }
}
