import MetricsTestKit
import NIOCore
import NIOEmbedded
@testable import StapleGateServer
@testable import StapleGateTLS
import TestSupport
import XCTest

/// The listener's metrics and the handler that counts handshakes: one count per handshake by
/// outcome, the duration of completed ones, and the handler gone from the pipeline afterwards.
final class GatewayMetricsTests: SharedPKITestCase {
    private var metrics: TestMetrics!
    private var channel: EmbeddedChannel!

    override func setUpWithError() throws {
        metrics = TestMetrics()
        channel = EmbeddedChannel(handler: HandshakeMetricsHandler(metrics: GatewayMetrics(factory: metrics)))
    }

    override func tearDown() {
        _ = try? channel.finish()
    }

    private func handshakes(_ result: String) throws -> Int64 {
        try metrics.expectCounter("staplegate_handshakes_total", [("result", result)]).totalValue
    }

    private func summary(resumed: Bool) -> TLSHandshakeSummary {
        TLSHandshakeSummary(protocolVersion: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", resumed: resumed,
                            duration: .milliseconds(12), deviceCertificate: nil, certificateCheck: nil)
    }

    private func device() throws -> X509Certificate {
        try PEMFile.certificateChain(at: pki.certificate("device-1"))[0]
    }

    private var handlerIsInPipeline: Bool {
        (try? channel.pipeline.syncOperations.handler(type: HandshakeMetricsHandler.self)) != nil
    }

    func testEveryResultExistsAtZeroBeforeTheFirstHandshake() throws {
        for result in GatewayMetrics.HandshakeResult.allCases {
            XCTAssertEqual(try handshakes(result.rawValue), 0, result.rawValue)
        }
    }

    func testACompletedHandshakeIsCountedWithItsDurationAndTheHandlerLeaves() throws {
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(summary(resumed: false)))
        XCTAssertEqual(try handshakes("ok"), 1)
        let durations = try metrics.expectTimer("staplegate_handshake_duration_seconds").values
        XCTAssertEqual(durations, [12_000_000])
        XCTAssertFalse(handlerIsInPipeline, "the data path pays nothing after the handshake")
    }

    func testAResumedHandshakeIsCountedAsResumed() throws {
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(summary(resumed: true)))
        XCTAssertEqual(try handshakes("resumed"), 1)
        XCTAssertEqual(try handshakes("ok"), 0)
    }

    func testARevokedCertificateIsCountedAsRevokedNotFailed() throws {
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.deviceCertificateJudged(
            certificate: try device(), verdict: .reject(.revoked, reason: "OCSP revoked")))
        XCTAssertTrue(handlerIsInPipeline, "the verdict comes before the handshake ends")
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.handshakeFailed(reason: "certificate revoked"))
        XCTAssertEqual(try handshakes("revoked"), 1)
        XCTAssertEqual(try handshakes("failed"), 0)
        XCTAssertEqual(try metrics.expectTimer("staplegate_handshake_duration_seconds").values, [])
        XCTAssertFalse(handlerIsInPipeline)
    }

    func testOtherPolicyRefusalsAreCountedAsRefused() throws {
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.deviceCertificateJudged(
            certificate: try device(), verdict: .reject(.statusUnavailable, reason: "responder unreachable")))
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.handshakeFailed(reason: "status unavailable"))
        XCTAssertEqual(try handshakes("refused"), 1)
    }

    func testAnAcceptedCertificateThenAFailureIsAPlainFailure() throws {
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.deviceCertificateJudged(
            certificate: try device(), verdict: .accept(note: "OCSP good")))
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.handshakeFailed(reason: "device left"))
        XCTAssertEqual(try handshakes("failed"), 1)
        XCTAssertEqual(try handshakes("refused"), 0)
    }

    func testEventsStillReachTheHandlersAfterIt() throws {
        let recorder = EventRecorder()
        try channel.pipeline.syncOperations.addHandler(recorder)
        channel.pipeline.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(summary(resumed: false)))
        XCTAssertEqual(recorder.events.count, 1)
    }

    func testConnectionsAreCountedAndTheGaugeFollowsCloses() throws {
        let gateway = GatewayMetrics(factory: metrics)
        let connection = EmbeddedChannel()
        gateway.connectionAccepted(connection)
        XCTAssertEqual(try metrics.expectCounter("staplegate_connections_total").totalValue, 1)
        let active = try metrics.expectMeter("staplegate_connections_active")
        XCTAssertEqual(active.lastValue, 1)
        _ = try connection.finish()
        XCTAssertEqual(active.lastValue, 0)
    }
}

private final class EventRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var events: [Any] = []

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        events.append(event)
    }
}
