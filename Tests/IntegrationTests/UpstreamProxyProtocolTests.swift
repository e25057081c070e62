import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StapleGateProxyProtocol
import TestSupport
import XCTest

/// `upstream.proxy_protocol: v2`: the broker side learns who the device is. A real HAProxy with
/// `accept-proxy` in front of Mosquitto reads the header and logs the device's address (and the
/// session goes through to the broker); a recording receiver checks the SSL TLV.
final class UpstreamProxyProtocolTests: GatewayTestCase {
    private var haproxy: HAProxy?
    private var gateway: StapleGateProcess?

    override func tearDown() async throws {
        await gateway?.stop()
        gateway = nil
        await haproxy?.stop()
        haproxy = nil
        try await super.tearDown()
    }

    private func startGateway(upstreamPort: Int) async throws -> StapleGateProcess {
        let gateway = try await StapleGateProcess.start(
            pki: pki, broker: broker, directory: try makeTemporaryDirectory(), sections: ["device_ocsp: { enabled: false }"],
            upstreamKeys: ["proxy_protocol: v2"], upstreamPort: upstreamPort, logging: "{ level: info }")
        self.gateway = gateway
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            print("--- gateway log ---\n\(gateway.output.suffix(20_000))\n--- haproxy log ---\n\(self?.haproxy?.log ?? "")")
        }
        return gateway
    }

    /// The address the gateway logged for the device that connected as `clientID`.
    private func deviceAddress(of clientID: String, in gateway: StapleGateProcess) async throws -> String {
        var address: String?
        try await waitUntil(timeout: .seconds(10), "the admission of \(clientID) in the gateway log") {
            let line = gateway.process.stderr.lines.first { $0.contains("mqtt.client_id=\(clientID)") && $0.contains("remote=") }
            address = line?.split(separator: " ").first { $0.hasPrefix("remote=") }.map { String($0.dropFirst("remote=".count)) }
            return address != nil
        }
        return try XCTUnwrap(address)
    }

    func testHAProxyWithAcceptProxyInFrontOfTheBrokerSeesTheDevicesAddress() async throws {
        let port = try FreePort.next()
        let haproxy = try await HAProxy.start(port: port, sections: """
        frontend broker
            bind 127.0.0.1:\(port) accept-proxy
            log-format "broker-side client %ci:%cp"
            default_backend mosquitto
        backend mosquitto
            server mosquitto 127.0.0.1:\(broker.port!)
        """, in: try makeTemporaryDirectory())
        self.haproxy = haproxy
        let gateway = try await startGateway(upstreamPort: port)
        let topic = uniqueTopic("proxied")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)
        let clientID = uniqueClientID("proxied")

        let published = try await mosquittoPub(port: gateway.port, pki: pki, device: "device-1", topic: topic,
                                               message: "with a PROXY header", clientID: clientID)

        XCTAssertEqual(published.status, .exited(0), "\(published)")
        _ = try await subscriber.waitForMessages(1)
        let address = try await deviceAddress(of: clientID, in: gateway)
        try await waitUntil(timeout: .seconds(10), "HAProxy to log the device's address \(address)", details: { haproxy.log }) {
            haproxy.log.contains("broker-side client \(address)")
        }
    }

    func testTheHeaderCarriesTheDevicesAddressAndItsVerifiedIdentity() async throws {
        let receiver = try await RecordingReceiver.start()
        addTeardownBlock { await receiver.stop() }
        let gateway = try await startGateway(upstreamPort: receiver.port)
        let clientID = uniqueClientID("recorded")
        // The receiver never answers the CONNECT: the device gives up, which is fine here.
        let device = try startMosquittoPub(.gateway(port: gateway.port, pki: pki, device: "device-1"), topic: uniqueTopic("recorded"),
                                           payload: .message("x"), clientID: clientID)
        addTeardownBlock { await device.terminate() }

        var received: [UInt8] = []
        var header: ProxyHeader?
        try await waitUntil(timeout: .seconds(10), "a PROXY header and the CONNECT at the receiver", details: { "\(received)" }) {
            received = receiver.received
            var buffer = ByteBuffer(bytes: received)
            var parser = ProxyHeaderParser(accepting: .v2)
            header = try parser.parse(&buffer)
            return header != nil && buffer.readableBytes > 0
        }
        let parsed = try XCTUnwrap(header)
        let address = try await deviceAddress(of: clientID, in: gateway)
        XCTAssertEqual(parsed.command, .proxy)
        XCTAssertEqual(parsed.source?.description, address, "the device's own address and port")
        XCTAssertEqual(parsed.destination?.description, "127.0.0.1:\(gateway.port)", "the address the device connected to")
        let ssl = try XCTUnwrap(parsed.ssl, "\(parsed)")
        XCTAssertTrue(ssl.clientCertificateVerified)
        XCTAssertEqual(ssl.commonName, "device-1")
        XCTAssertEqual(ssl.version, "TLSv1.3")
        XCTAssertNotNil(ssl.cipher)
        // What follows the header is the device's CONNECT (packet type 1).
        var buffer = ByteBuffer(bytes: received)
        var parser = ProxyHeaderParser(accepting: .v2)
        _ = try parser.parse(&buffer)
        XCTAssertEqual(buffer.readableBytesView.first.map { $0 >> 4 }, 1)
    }
}

/// A TCP server on 127.0.0.1 that answers nothing and keeps every byte its first connection sends.
private final class RecordingReceiver: @unchecked Sendable {
    let port: Int
    private let channel: Channel
    private let bytes: NIOLockedValueBox<[UInt8]>

    var received: [UInt8] { bytes.withLockedValue { $0 } }

    private init(port: Int, channel: Channel, bytes: NIOLockedValueBox<[UInt8]>) {
        self.port = port
        self.channel = channel
        self.bytes = bytes
    }

    static func start() async throws -> RecordingReceiver {
        let bytes = NIOLockedValueBox<[UInt8]>([])
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(Recorder(bytes: bytes)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return RecordingReceiver(port: try XCTUnwrap(channel.localAddress?.port), channel: channel, bytes: bytes)
    }

    func stop() async { try? await channel.close() }

    private final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes: NIOLockedValueBox<[UInt8]>
        init(bytes: NIOLockedValueBox<[UInt8]>) { self.bytes = bytes }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let chunk = Array(unwrapInboundIn(data).readableBytesView)
            bytes.withLockedValue { $0 += chunk }
        }
    }
}
