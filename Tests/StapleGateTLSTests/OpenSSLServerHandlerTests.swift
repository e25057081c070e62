import COpenSSL
import Logging
import NIOCore
import NIOEmbedded
@testable import StapleGateTLS
import TestSupport
import XCTest

/// Drives `OpenSSLServerHandler` in an EmbeddedChannel against a real OpenSSL client, so every
/// state transition is exercised deterministically, without sockets or threads.
final class OpenSSLServerHandlerTests: XCTestCase {
    static var pki: TestPKI!
    static var context: ServerContext!

    override class func setUp() {
        super.setUp()
        pki = try! TestPKI.make()
        context = try! ServerContext(configuration: TLSServerConfiguration(
            certificates: [.init(chainPath: pki.path("server.pem"), keyPath: pki.path("server.key"))],
            deviceCABundlePath: pki.path("ca-chain.pem")))
    }

    override class func tearDown() {
        context = nil
        pki.remove()
        pki = nil
        super.tearDown()
    }

    private var channel: EmbeddedChannel!
    private var recorder: EventRecorder!

    override func setUpWithError() throws {
        try makeChannel(context: Self.context)
    }

    private func makeChannel(context: ServerContext) throws {
        _ = try? channel?.finish()
        recorder = EventRecorder()
        let handler = OpenSSLServerHandler(context: context, logger: Logger(label: "test"))
        channel = EmbeddedChannel(handlers: [handler, recorder])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    override func tearDownWithError() throws {
        _ = try? channel.finish()
    }

    private func client(_ device: String?, maxVersion: Int32? = nil) -> InMemoryTLSClient {
        InMemoryTLSClient(caFile: Self.pki.path("ca-chain.pem"),
                          certificate: device.map { Self.pki.path("\($0).pem") },
                          key: device.map { Self.pki.path("\($0).key") }, maxVersion: maxVersion)
    }

    /// Moves bytes both ways until neither side has anything more to say.
    @discardableResult
    private func pump(_ client: InMemoryTLSClient) throws -> InMemoryTLSClient.Step {
        var step = client.handshake()
        for _ in 0..<20 {
            let toServer = client.outgoing()
            if !toServer.isEmpty { try channel.writeInbound(channel.allocator.buffer(bytes: toServer)) }
            var toClient: [UInt8] = []
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { toClient += buffer.readableBytesView }
            client.incoming(toClient)
            step = client.handshake()
            if toServer.isEmpty, toClient.isEmpty { break }
        }
        return step
    }

    private func sendToServer(_ client: InMemoryTLSClient) throws {
        let bytes = client.outgoing()
        if !bytes.isEmpty { try channel.writeInbound(channel.allocator.buffer(bytes: bytes)) }
    }

    private func deliverToClient(_ client: InMemoryTLSClient) throws {
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { client.incoming(Array(buffer.readableBytesView)) }
    }

    func testHandshakeReportsTheVerifiedDeviceAndTheNegotiatedParameters() throws {
        let device = client("device-1")
        XCTAssertEqual(try pump(device), .done)
        let summary = try XCTUnwrap(recorder.completedHandshake)
        XCTAssertEqual(summary.protocolVersion, "TLSv1.3")
        XCTAssertEqual(summary.deviceIdentity, "device-1")
        XCTAssertEqual(summary.deviceCertificate?.issuer.contains("StapleGate Demo Issuing CA"), true)
        XCTAssertFalse(summary.resumed)
        XCTAssertFalse(summary.cipher.isEmpty)
    }

    func testTLS12HandshakeWorksToo() throws {
        let device = client("device-1", maxVersion: TLS1_2_VERSION)
        XCTAssertEqual(try pump(device), .done)
        XCTAssertEqual(recorder.completedHandshake?.protocolVersion, "TLSv1.2")
    }

    func testPlaintextFlowsBothWaysAfterTheHandshake() throws {
        let device = client("device-1")
        try pump(device)
        device.write(Array("ping from device".utf8))
        try sendToServer(device)
        XCTAssertEqual(recorder.receivedText, "ping from device")

        try channel.writeOutbound(channel.allocator.buffer(string: "pong from broker"))
        try deliverToClient(device)
        XCTAssertEqual(device.read(), .bytes(Array("pong from broker".utf8)))
    }

    /// `SSL_get_error` blames a stale entry on the thread's error queue for a mere "want more
    /// bytes": the queue must be emptied before each read however cheaply that is done
    /// (`OpenSSLError.clearQueue` peeks first). Here an unrelated failure on the event loop's
    /// thread leaves an entry, then half a record arrives: the session must wait, not fail.
    func testAStaleErrorOnTheThreadDoesNotFailTheNextRead() throws {
        let device = client("device-1")
        try pump(device)
        device.write(Array("after a stale error".utf8))
        let record = device.outgoing()
        XCTAssertNil(BIO_new_file("/nonexistent/staplegate-test", "r"), "the unrelated failure")
        XCTAssertNotEqual(ERR_peek_error(), 0, "it left an entry on this thread's queue")
        try channel.writeInbound(channel.allocator.buffer(bytes: record.prefix(record.count / 2)))
        XCTAssertTrue(channel.isActive, "half a record failed the session")
        try channel.writeInbound(channel.allocator.buffer(bytes: record.dropFirst(record.count / 2)))
        XCTAssertEqual(recorder.receivedText, "after a stale error")
    }

    func testClearingAnEmptyErrorQueueLeavesItEmpty() {
        OpenSSLError.clearQueue()
        XCTAssertEqual(ERR_peek_error(), 0)
        XCTAssertNil(BIO_new_file("/nonexistent/staplegate-test", "r"))
        OpenSSLError.clearQueue()
        XCTAssertEqual(ERR_peek_error(), 0, "a queued entry was left")
    }

    func testLargeWritesArriveIntactAcrossManyRecords() throws {
        let device = client("device-1")
        try pump(device)
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try channel.writeOutbound(channel.allocator.buffer(bytes: payload))
        try deliverToClient(device)
        var received: [UInt8] = []
        while case let .bytes(chunk) = device.read() { received += chunk }
        XCTAssertEqual(received.count, payload.count)
        XCTAssertTrue(received == payload)
    }

    func testWritesIssuedBeforeTheHandshakeAreSentAfterIt() throws {
        channel.write(channel.allocator.buffer(string: "early"), promise: nil)
        channel.flush()
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self), "nothing may leave before the handshake")
        let device = client("device-1")
        try pump(device)
        XCTAssertEqual(device.read(), .bytes(Array("early".utf8)))
    }

    func testCloseNotifyFromTheDeviceEndsInputButNotTheConnection() throws {
        let device = client("device-1")
        try pump(device)
        device.shutdown()
        try sendToServer(device)
        XCTAssertTrue(recorder.inputClosed)
        XCTAssertTrue(channel.isActive, "the broker may still have bytes for the device")
    }

    func testClosingSendsCloseNotify() throws {
        let device = client("device-1")
        try pump(device)
        channel.close(promise: nil)
        try deliverToClient(device)
        XCTAssertEqual(device.read(), .closeNotify)
    }

    func testDeviceWithoutCertificateIsRefusedWithAReason() throws {
        let device = client(nil)
        try pump(device)
        let reason = try XCTUnwrap(recorder.failureReason)
        XCTAssertTrue(reason.contains("peer did not return a certificate"), reason)
        XCTAssertNil(recorder.completedHandshake)
        XCTAssertFalse(channel.isActive)
    }

    func testDeviceFromAnUntrustedCAIsRefusedAndToldUnknownCA() throws {
        let device = client("device-rogue")
        let step = try pump(device)
        let reason = try XCTUnwrap(recorder.failureReason)
        XCTAssertTrue(reason.contains("unable to get local issuer certificate"), reason)
        // TLS 1.3 clients learn of the refusal on their next read.
        let outcome = step == .done ? device.read() : .failed({ if case let .failed(text) = step { return text }; return "" }())
        guard case let .failed(text) = outcome else { return XCTFail("device was not told: \(outcome)") }
        XCTAssertTrue(text.contains("unknown ca"), text)
    }

    func testExpiredDeviceCertificateIsRefused() throws {
        try pump(client("device-expired"))
        let reason = try XCTUnwrap(recorder.failureReason)
        XCTAssertTrue(reason.contains("certificate has expired"), reason)
    }

    func testVerifyDepthBoundsTheDeviceChain() throws {
        // device-1 → issuing CA → root: one CA between the device and the root.
        var configuration = Self.context.configuration
        configuration.verifyDepth = 0
        try makeChannel(context: ServerContext(configuration: configuration, material: Self.context.material))
        try pump(client("device-1"))
        let reason = try XCTUnwrap(recorder.failureReason)
        XCTAssertTrue(reason.contains("certificate chain too long"), reason)

        configuration.verifyDepth = 1
        try makeChannel(context: ServerContext(configuration: configuration, material: Self.context.material))
        XCTAssertEqual(try pump(client("device-1")), .done)
        XCTAssertNotNil(recorder.completedHandshake)
    }

    func testGarbageInsteadOfAClientHelloFailsTheHandshake() throws {
        try channel.writeInbound(channel.allocator.buffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        XCTAssertNotNil(recorder.failureReason)
        XCTAssertFalse(channel.isActive)
        XCTAssertNil(recorder.receivedText, "nothing undecrypted may be passed on")
    }

    func testInputClosedDuringTheHandshakeFailsIt() throws {
        let device = client("device-1")
        _ = device.handshake()
        try sendToServer(device)  // ClientHello, then the device gives up
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertEqual(recorder.failureReason, "device closed its side during the TLS handshake")
        XCTAssertFalse(channel.isActive)
    }

    /// The `SSL` (8 KiB of OpenSSL state) is made when the device's first bytes arrive, not at
    /// accept: a flood of connections that send nothing costs no TLS state.
    func testTheSSLIsMadeAtTheFirstBytesNotAtAccept() throws {
        var made = 0
        let handler = OpenSSLHandler(role: .server, logger: Logger(label: "test")) {
            made += 1
            return SSLConnection(context: Self.context)
        }
        let lazy = EmbeddedChannel(handlers: [handler, EventRecorder()])
        defer { _ = try? lazy.finish() }
        try lazy.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        XCTAssertEqual(made, 0, "made at accept")

        let device = client("device-1")
        _ = device.handshake()
        try lazy.writeInbound(lazy.allocator.buffer(bytes: device.outgoing()))
        XCTAssertEqual(made, 1, "not made when the ClientHello arrived")
        XCTAssertNotNil(try lazy.readOutbound(as: ByteBuffer.self), "no ServerHello")
        try lazy.writeInbound(lazy.allocator.buffer(bytes: [0x16, 0x03, 0x03]))
        XCTAssertEqual(made, 1, "made again")
    }

    /// Negative counterpart: a connection that leaves without a byte never made one.
    func testAConnectionClosedBeforeAnyByteMadeNoSSL() throws {
        var made = 0
        let handler = OpenSSLHandler(role: .server, logger: Logger(label: "test")) {
            made += 1
            return SSLConnection(context: Self.context)
        }
        let recorder = EventRecorder()
        let lazy = EmbeddedChannel(handlers: [handler, recorder])
        try lazy.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        lazy.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertEqual(recorder.failureReason, "connection closed before any TLS data")
        XCTAssertEqual(made, 0)
        _ = try? lazy.finish()
    }

    /// SSL_new failing (out of memory) fails that handshake with the reason and closes it.
    func testAnSSLThatCannotBeMadeFailsTheHandshakeWithAReason() throws {
        let handler = OpenSSLHandler(role: .server, logger: Logger(label: "test")) { nil }
        let recorder = EventRecorder()
        let lazy = EmbeddedChannel(handlers: [handler, recorder])
        try lazy.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try lazy.writeInbound(lazy.allocator.buffer(bytes: [0x16, 0x03, 0x01]))
        XCTAssertEqual(recorder.failureReason?.hasPrefix("cannot create a TLS connection"), true, "\(String(describing: recorder.failureReason))")
        XCTAssertFalse(lazy.isActive)
        _ = try? lazy.finish()
    }

    func testABareTCPProbeIsToldApartFromAFailedHandshake() throws {
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        XCTAssertEqual(recorder.failureReason, "connection closed before any TLS data")
        XCTAssertFalse(channel.isActive)
    }
}

/// Records what the TLS handler passes on.
final class EventRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var completedHandshake: TLSHandshakeSummary?
    var failureReason: String?
    var inputClosed = false
    var received = ByteBuffer()
    var receivedText: String? { received.readableBytes == 0 ? nil : String(buffer: received) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received.writeBuffer(&buffer)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let TLSEvent.handshakeCompleted(summary): completedHandshake = summary
        case let TLSEvent.handshakeFailed(reason): failureReason = reason
        case let event as ChannelEvent where event == .inputClosed: inputClosed = true
        default: break
        }
    }
}
