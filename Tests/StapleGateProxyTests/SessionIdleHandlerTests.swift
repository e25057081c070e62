import NIOCore
import NIOEmbedded
@testable import StapleGateProxy
import XCTest

/// `SessionIdleHandler` on an EmbeddedChannel, whose clock only moves when the test moves it:
/// silence for the timeout fires the idle event once; a read batch or a flush pushes it back;
/// a read batch still in progress is activity; a closed channel fires nothing.
final class SessionIdleHandlerTests: XCTestCase {
    private var channel: EmbeddedChannel!
    private var events: IdleEventRecorder!
    private let timeout = TimeAmount.seconds(10)

    override func setUpWithError() throws {
        events = IdleEventRecorder()
        channel = EmbeddedChannel(handlers: [SessionIdleHandler(timeout: timeout), events])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    override func tearDown() {
        _ = try? channel.finish()
    }

    func testSilenceForTheTimeoutFiresOnce() {
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        XCTAssertEqual(events.idle, 0, "fired before the timeout")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertEqual(events.idle, 1)
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        XCTAssertEqual(events.idle, 1, "fired again within one timeout")
    }

    func testAReadBatchPushesTheTimeoutBack() throws {
        channel.embeddedEventLoop.advanceTime(by: .seconds(8))
        try channel.writeInbound(ByteBuffer(string: "PINGREQ"))
        channel.pipeline.fireChannelReadComplete()
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        XCTAssertEqual(events.idle, 0, "a read 9 s ago is not 10 s of silence")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertEqual(events.idle, 1)
    }

    func testAFlushToTheDevicePushesTheTimeoutBack() throws {
        channel.embeddedEventLoop.advanceTime(by: .seconds(8))
        try channel.writeOutbound(ByteBuffer(string: "PUBLISH"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        XCTAssertEqual(events.idle, 0, "a flush 9 s ago is not 10 s of silence")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertEqual(events.idle, 1)
    }

    /// Negative control for the flush: a write never flushed is not activity (nothing went out).
    func testAnUnflushedWriteIsNotActivity() {
        channel.embeddedEventLoop.advanceTime(by: .seconds(8))
        channel.write(ByteBuffer(string: "PUBLISH"), promise: nil)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertEqual(events.idle, 1)
    }

    func testAReadBatchInProgressIsActivity() throws {
        channel.pipeline.fireChannelRead(ByteBuffer(string: "half a packet"))  // no read-complete yet
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        XCTAssertEqual(events.idle, 0, "the batch has not ended")
        channel.pipeline.fireChannelReadComplete()
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        XCTAssertEqual(events.idle, 1)
    }

    func testAClosedSessionFiresNothing() throws {
        try channel.close().wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        XCTAssertEqual(events.idle, 0)
    }
}

private final class IdleEventRecorder: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    var idle = 0

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? IdleStateHandler.IdleStateEvent, event == .all { idle += 1 }
        context.fireUserInboundEventTriggered(event)
    }
}
