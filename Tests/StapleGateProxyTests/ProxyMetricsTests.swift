import Logging
import MetricsTestKit
import NIOCore
import NIOEmbedded
@testable import StapleGateProxy
import XCTest

/// The proxy's metrics: relayed bytes and MQTT packets per direction, published once per read
/// batch rather than per packet, and the session and upstream-failure counts.
final class ProxyMetricsTests: XCTestCase {
    private var metrics: TestMetrics!
    private var device: EmbeddedChannel!
    private var broker: EmbeddedChannel!

    override func setUpWithError() throws {
        metrics = TestMetrics()
        let (deviceGlue, brokerGlue) = GlueHandler.matchedPair(logger: Logger(label: "test"),
                                                               metrics: ProxyMetrics(factory: metrics))
        device = EmbeddedChannel(handler: deviceGlue)
        broker = EmbeddedChannel(handler: brokerGlue)
        try device.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try broker.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
    }

    override func tearDown() {
        _ = try? device.finish()
        _ = try? broker.finish()
    }

    private func counter(_ label: String, _ direction: String) throws -> TestCounter {
        try metrics.expectCounter(label, [("direction", direction)])
    }

    private static let pingRequest: [UInt8] = [0xC0, 0x00]
    private static let publish: [UInt8] = [0x30, 0x07, 0x00, 0x01, 0x74, 0x68, 0x65, 0x6C, 0x6F]  // topic "t", "helo"

    func testEachDirectionCountsItsBytesAndPacketsOncePerReadBatch() throws {
        // One batch from the device: a PUBLISH split across two reads, then a PINGREQ.
        try device.writeInbound(ByteBuffer(bytes: Self.publish.prefix(4)))
        try device.writeInbound(ByteBuffer(bytes: Self.publish.dropFirst(4) + Self.pingRequest))
        device.pipeline.fireChannelReadComplete()
        let bytesToBroker = try counter("staplegate_proxied_bytes_total", "to_broker")
        let messagesToBroker = try counter("staplegate_proxied_messages_total", "to_broker")
        XCTAssertEqual(bytesToBroker.totalValue, Int64(Self.publish.count + Self.pingRequest.count))
        XCTAssertEqual(messagesToBroker.totalValue, 2)
        XCTAssertLessThanOrEqual(bytesToBroker.values.count, 2, "at most one update per read batch, not per read or packet")

        try broker.writeInbound(ByteBuffer(bytes: [0xD0, 0x00]))  // PINGRESP
        broker.pipeline.fireChannelReadComplete()
        XCTAssertEqual(try counter("staplegate_proxied_bytes_total", "to_device").totalValue, 2)
        XCTAssertEqual(try counter("staplegate_proxied_messages_total", "to_device").totalValue, 1)
        XCTAssertEqual(messagesToBroker.totalValue, 2, "the other direction is unchanged")
    }

    func testBytesHeldBeforeTheJoinCountAsRelayed() throws {
        // What ProxySessionHandler wrote to the broker itself (the device's CONNECT) counts too.
        let pair = GlueHandler.matchedPair(logger: Logger(label: "test"), metrics: ProxyMetrics(factory: metrics))
        let channel = EmbeddedChannel(handler: pair.device)
        pair.device.countRelayed(ByteBuffer(bytes: Self.pingRequest))
        _ = try channel.finish()  // removal publishes what was counted
        XCTAssertEqual(try counter("staplegate_proxied_messages_total", "to_broker").totalValue, 1)
        XCTAssertEqual(try counter("staplegate_proxied_bytes_total", "to_broker").totalValue, 2)
    }

    func testSessionsAndUpstreamFailuresAreCounted() throws {
        let proxy = ProxyMetrics(factory: metrics)
        let session = EmbeddedChannel()
        proxy.sessionStarted(device: session)
        XCTAssertEqual(try metrics.expectCounter("staplegate_sessions_total").totalValue, 1)
        let active = try metrics.expectMeter("staplegate_sessions_active")
        XCTAssertEqual(active.lastValue, 1)
        _ = try session.finish()
        XCTAssertEqual(active.lastValue, 0, "the gauge drops when the device channel closes")

        proxy.upstreamFailed()
        XCTAssertEqual(try metrics.expectCounter("staplegate_upstream_failures_total").totalValue, 1)
    }
}
