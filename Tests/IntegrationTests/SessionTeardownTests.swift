import Foundation
import Logging
import NIOCore
import NIOPosix
import StapleGateTLS
import TestSupport
import XCTest

/// The end of a device's session ends the broker's session, cleanly when the device was clean.
final class SessionTeardownTests: GatewayTestCase {
    func testCleanDisconnectLeavesNoLingeringSession() async throws {
        let gateway = try await startGateway()
        let clientID = uniqueClientID("clean")
        let topic = uniqueTopic("teardown/clean")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let result = try await mosquittoPub(gateway.target(pki), topic: topic, payload: .message("bye"), qos: 1, clientID: clientID)

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        try await subscriber.waitForMessages(1)
        // The broker saw an MQTT DISCONNECT, not a dropped socket...
        try await broker.waitForLog("Client \(clientID) disconnected.")
        XCTAssertFalse(broker.log.contains("Client \(clientID) closed its connection"), broker.log)
        // ...and the gateway closed the device connection (and with it the broker connection).
        try await gateway.log.waitFor("connection closed")
        XCTAssertEqual(gateway.log.entries(containing: "device connection accepted").count, 1)
        XCTAssertEqual(gateway.log.entries(containing: "connection closed").count, 1)
    }

    /// Negative counterpart: a device that vanishes without DISCONNECT is a dropped session for
    /// the broker (it would publish the device's will), and the gateway still cleans up.
    func testAbruptlyKilledDeviceIsDroppedAtBroker() async throws {
        let gateway = try await startGateway()
        let subscriber = try await MosquittoSubscriber.start(gateway.target(pki, device: "device-2"), broker: broker,
                                                             topic: uniqueTopic("teardown/abrupt"))
        try await gateway.log.waitFor("connected to broker", where: { $0.metadata["device"] == "device-2" })

        subscriber.process.signal(SIGKILL)

        try await broker.waitForLog("Client \(subscriber.clientID) closed its connection.")
        XCTAssertFalse(broker.log.contains("Client \(subscriber.clientID) disconnected."), broker.log)
        try await gateway.log.waitFor("connection closed")
    }

    /// `Gateway.stop()` "stops accepting and closes every connection", also when the event loops
    /// are not the gateway's own (here they outlive it until the test's teardown).
    func testStoppingTheGatewayClosesOpenSessions() async throws {
        let gateway = try await startGateway()
        let subscriber = try await MosquittoSubscriber.start(gateway.target(pki, device: "device-2"), broker: broker,
                                                             topic: uniqueTopic("teardown/stop"))

        try await gateway.gateway.stop()

        XCTAssertThrowsError(try RawTCPClient(port: gateway.port), "still accepting after stop()")
        // The open session ends, so the broker sees its client go (mosquitto_sub itself would just reconnect).
        try await broker.waitForLog("Client \(subscriber.clientID) closed its connection.", timeout: .seconds(5))
    }
}

/// A device that stops reading (a hung application on a live TCP stack) never sees the broker
/// close its session: the gateway closes it after `GlueHandler.deviceCloseGrace`, not at the idle
/// timeout an hour later.
extension SessionTeardownTests {
    func testADeviceSilentAfterTheBrokerClosedItsSessionIsClosedByTheGateway() async throws {
        let gateway = try await startGateway()
        let clientID = uniqueClientID("silent")
        let silent = try await SilentDevice.connect(port: gateway.port, pki: pki, clientID: clientID)
        try await broker.waitForLog("as \(clientID)")

        // The broker ends the silent device's session: another connection takes its client id.
        let takeover = try await mosquittoPub(gateway.target(pki, device: "device-2"), topic: uniqueTopic("teardown/silent"),
                                              payload: .message("mine now"), qos: 1, clientID: clientID)
        XCTAssertEqual(takeover.status, .exited(0), "\(takeover)")
        try await gateway.log.waitFor("had not closed its side", timeout: .seconds(40))
        let silentConnection = try XCTUnwrap(gateway.log.entries(containing: "admitted as device-1").first?.metadata["conn"])
        try await gateway.log.waitFor("connection closed", where: { $0.metadata["conn"] == silentConnection })
        withExtendedLifetime(silent) {}
    }
}

/// Connects with mutual TLS, sends CONNECT, waits for CONNACK, then stops reading for good.
private final class SilentDevice: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private let connack: EventLoopPromise<Void>
    private let channel: Channel

    private init(channel: Channel) {
        self.channel = channel
        connack = channel.eventLoop.makePromise()
    }

    static func connect(port: Int, pki: TestPKI, clientID: String) async throws -> SilentDevice {
        let context = try ClientTLSContext(caBundleAt: pki.caChain)
        try context.useClientCertificate(chain: PEMFile.certificateChain(at: pki.certificate("device-1")),
                                         key: PEMFile.privateKey(at: pki.key("device-1")))
        // The end of the gateway's output does not close it: it stays, silent.
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: port).get()
        let device = SilentDevice(channel: channel)
        try await channel.eventLoop.submit {
            let tls = try OpenSSLClientHandler(context: context, serverName: "localhost", logger: Logger(label: "silent"))
            try channel.pipeline.syncOperations.addHandlers([tls, device])
        }.get()
        try await channel.writeAndFlush(ByteBuffer(bytes: SoakMQTT.connect(clientID: clientID)))
        try await device.connack.futureResult.get()
        return device
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connack.succeed()
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connack.fail(ChannelError.ioOnClosedChannel)
    }
}
