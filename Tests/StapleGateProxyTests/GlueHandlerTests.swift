import Logging
import NIOCore
import NIOEmbedded
@testable import StapleGateProxy
import XCTest

/// The glue pair's three promises, checked on two EmbeddedChannels standing in for the device
/// and broker sockets: reads wait for the other side's writability, end of input becomes an
/// output shutdown on the other side, and any close or error closes both.
final class GlueHandlerTests: XCTestCase {
    private var device: EmbeddedChannel!
    private var broker: EmbeddedChannel!
    private var deviceSocket: SocketRecorder!
    private var brokerSocket: SocketRecorder!

    override func setUpWithError() throws {
        let (deviceGlue, brokerGlue) = GlueHandler.matchedPair(logger: Logger(label: "test"))
        deviceSocket = SocketRecorder()
        brokerSocket = SocketRecorder()
        device = EmbeddedChannel(handlers: [deviceSocket, deviceGlue])
        broker = EmbeddedChannel(handlers: [brokerSocket, brokerGlue])
        try device.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try broker.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
    }

    override func tearDown() {
        _ = try? device.finish()
        _ = try? broker.finish()
    }

    func testBytesFlowBothWaysUnchanged() throws {
        try device.writeInbound(ByteBuffer(string: "CONNECT"))
        device.pipeline.fireChannelReadComplete()
        XCTAssertEqual(try broker.readOutbound(as: ByteBuffer.self), ByteBuffer(string: "CONNECT"))

        try broker.writeInbound(ByteBuffer(string: "CONNACK"))
        broker.pipeline.fireChannelReadComplete()
        XCTAssertEqual(try device.readOutbound(as: ByteBuffer.self), ByteBuffer(string: "CONNACK"))
    }

    func testReadsFromTheDeviceWaitWhileTheBrokerCannotTakeMore() {
        broker.isWritable = false
        broker.pipeline.fireChannelWritabilityChanged()
        device.read()
        XCTAssertEqual(deviceSocket.readRequests, 0, "the device must not be read while the broker is full")

        broker.isWritable = true
        broker.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(deviceSocket.readRequests, 1, "the held read goes out once the broker drains")
    }

    func testReadsFromTheBrokerWaitWhileTheDeviceCannotTakeMore() {
        device.isWritable = false
        device.pipeline.fireChannelWritabilityChanged()
        broker.read()
        XCTAssertEqual(brokerSocket.readRequests, 0)

        device.isWritable = true
        device.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(brokerSocket.readRequests, 1)
    }

    func testReadsPassStraightThroughWhenThePartnerIsWritable() {
        device.read()
        broker.read()
        XCTAssertEqual(deviceSocket.readRequests, 1)
        XCTAssertEqual(brokerSocket.readRequests, 1)
    }

    func testDeviceEndOfInputShutsOnlyTheBrokerOutput() {
        device.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertEqual(brokerSocket.closes, [.output])
        XCTAssertTrue(device.isActive, "the broker may still answer the device")
        XCTAssertEqual(deviceSocket.closes, [])
    }

    func testBrokerEndOfInputThenDeviceEndOfInputClosesBothFully() {
        broker.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertEqual(deviceSocket.closes, [.output])
        device.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertTrue(brokerSocket.closes.contains(.all), "both directions are done: \(brokerSocket.closes)")
        XCTAssertTrue(deviceSocket.closes.contains(.all), "both directions are done: \(deviceSocket.closes)")
    }

    /// The broker finished: the device gets the end of its output, and a device that does not
    /// close its side within the grace is closed (both sides), not left until the idle timeout.
    func testADeviceThatStaysOpenAfterTheBrokerFinishedIsClosedAfterTheGrace() {
        broker.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertEqual(deviceSocket.closes, [.output])
        device.embeddedEventLoop.advanceTime(by: GlueHandler.deviceCloseGrace - .milliseconds(1))
        XCTAssertTrue(device.isActive, "within the grace the device may still close by itself")
        device.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        XCTAssertFalse(device.isActive, "closed at the end of the grace")
        XCTAssertFalse(broker.isActive)
    }

    /// The device finishing sending does not start a grace for the broker: the broker may still
    /// answer (and Mosquitto closes on its own once it read the end).
    func testTheBrokerIsNotClosedForStayingOpenAfterTheDeviceFinished() {
        device.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        broker.embeddedEventLoop.advanceTime(by: .seconds(3600))
        device.embeddedEventLoop.advanceTime(by: .seconds(3600))
        XCTAssertTrue(broker.isActive)
        XCTAssertTrue(device.isActive)
    }

    func testAnErrorOnOneSideClosesBoth() {
        broker.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        XCTAssertFalse(broker.isActive)
        XCTAssertFalse(device.isActive)
    }

    func testClosingOneSideClosesTheOther() throws {
        try device.close().wait()
        XCTAssertFalse(broker.isActive)
    }

    func testAnIdleSessionIsClosed() {
        device.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.all)
        XCTAssertFalse(device.isActive)
        XCTAssertFalse(broker.isActive)
    }
}

/// Sits where the socket would be: counts read requests and records close modes.
private final class SocketRecorder: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var readRequests = 0
    var closes: [CloseMode] = []

    func read(context: ChannelHandlerContext) {
        readRequests += 1
        context.read()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        closes.append(mode)
        if mode == .all {
            context.close(mode: mode, promise: promise)
        } else {
            promise?.succeed()  // EmbeddedChannel cannot half-close; record it and carry on
        }
    }
}
