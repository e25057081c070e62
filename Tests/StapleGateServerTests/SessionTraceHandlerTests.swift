import Foundation
import Logging
import NIOCore
import NIOEmbedded
import StapleGateProxy
@testable import StapleGateServer
@testable import StapleGateTrace
import TestSupport
import XCTest

/// Who ended a session, as its trace's disconnect event says, whatever order the two sockets
/// close in. The events go to a real SQLite trace store and are read back as `staplegate trace` does.
final class SessionTraceHandlerTests: XCTestCase {
    private var directory: TemporaryDirectory!

    override func setUpWithError() throws {
        directory = try TemporaryDirectory(prefix: "session-trace")
    }

    override func tearDown() {
        directory.remove()
    }

    /// CONNECT (3.1.1, client id "a") and the device's DISCONNECT.
    private static let connect: [UInt8] = [0x10, 0x0D, 0x00, 0x04] + Array("MQTT".utf8) + [0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 0x61]
    private static let disconnect: [UInt8] = [0xE0, 0x00]

    /// Mosquitto closes its socket as soon as it reads the device's DISCONNECT: the gateway then
    /// closes the device's side before the device's own close arrives.
    func testADeviceThatSentDisconnectClosedTheSessionEvenWhenTheBrokerClosedFirst() throws {
        let closedBy = try session(fromDevice: Self.connect + Self.disconnect)
        XCTAssertEqual(closedBy, "device")
    }

    /// Negative control: without the DISCONNECT the broker's close is what ended it.
    func testWithoutADisconnectTheBrokersCloseIsSaid() throws {
        let closedBy = try session(fromDevice: Self.connect)
        XCTAssertEqual(closedBy, "broker: the broker closed its connection")
    }

    /// MQTT 5: the broker's DISCONNECT (here 0x8B, server shutting down) reached the device.
    func testABrokersDisconnectNamesTheBroker() throws {
        let closedBy = try session(fromDevice: Self.connect, toDevice: [0x20, 0x03, 0x00, 0x00, 0x00, 0xE0, 0x01, 0x8B])
        XCTAssertEqual(closedBy, "broker")
    }

    /// Plays an admitted session whose broker side closed first, then reads the disconnect event.
    private func session(fromDevice: [UInt8], toDevice: [UInt8] = []) throws -> String? {
        let path = directory.file("trace.sqlite")
        let store = try SQLiteTraceStore(path: path, logger: Logger(label: "test"))
        let tracer = ConnectionTracer(store: store, connectionID: 7, remoteAddress: "127.0.0.1:40000")
        tracer.identify(device: "device-1", serial: "01")
        let channel = EmbeddedChannel(handler: SessionTraceHandler(tracer: tracer, identitySource: .cn))
        channel.pipeline.fireUserInboundEventTriggered(ProxyEvent.upstreamConnected(endpoint: "127.0.0.1:1883", duration: .milliseconds(1)))
        try channel.writeInbound(ByteBuffer(bytes: fromDevice))
        if !toDevice.isEmpty { try channel.writeOutbound(ByteBuffer(bytes: toDevice)) }
        // The broker's side closed: the glue says so, then closes the device's side.
        channel.pipeline.fireUserInboundEventTriggered(ProxyEvent.sessionEnding(closedBy: "broker", reason: "the broker closed its connection"))
        try channel.close().wait()
        store.flush()
        let events = try SQLiteTraceReader(path: path).events(device: "device-1")
        return events.last { $0.kind == .disconnect }?.details["closed_by"]
    }
}
