import COpenSSL
import Logging
import NIOConcurrencyHelpers
import NIOCore
@testable import StapleGateTLS
import TestSupport
import XCTest

/// The handshake pauses inside OpenSSL (SSL_MODE_ASYNC + ASYNC_pause_job) until the gate has
/// judged the device's chain, then finishes or fails with the alert the verdict calls for.
/// A real OpenSSL client over memory BIOs on one side, the handler in a thread-safe testing
/// channel on the other (verdicts arrive from another task, as they do from an OCSP request).
final class DeviceCertificateGateTests: SharedPKITestCase {
    private var channel: SocketPairChannel!
    private var recorder: ThreadSafeEventRecorder!

    private func makeChannel(gate: ScriptedGate) async throws {
        let context = try ServerContext(configuration: TLSServerConfiguration(
            certificates: [.init(chainPath: pki.path("server.pem"), keyPath: pki.path("server.key"))],
            deviceCABundlePath: pki.path("ca-chain.pem"))).with(deviceCertificateGate: gate)
        recorder = ThreadSafeEventRecorder()
        let handler = OpenSSLServerHandler(context: context, logger: Logger(label: "test"))
        channel = try await SocketPairChannel(handlers: [handler, recorder])
    }

    override func tearDown() async throws {
        await channel?.finish()
    }

    private func client(_ device: String = "device-1") -> InMemoryTLSClient {
        InMemoryTLSClient(caFile: pki.path("ca-chain.pem"), certificate: pki.path("\(device).pem"),
                          key: pki.path("\(device).key"))
    }

    /// Moves bytes both ways until the client's side of the handshake is done or has failed (in
    /// TLS 1.3 it is done once it sent its Finished, whatever the server then makes of it).
    @discardableResult
    private func pump(_ client: InMemoryTLSClient) async throws -> InMemoryTLSClient.Step {
        let deadline = Deadline(.seconds(5))
        while true {
            let step = client.handshake()
            try channel.send(client.outgoing())
            guard step == .wantRead else { return step }
            switch try channel.receive(timeout: deadline.remaining) {
            case let .bytes(bytes): client.incoming(bytes)
            case .endOfStream: return client.handshake()
            case .nothingYet: throw WaitTimeoutError(what: "the server's handshake flight", timeout: deadline.timeout)
            }
        }
    }

    /// Feeds the client what the server sent until a read gives more than "want more", or the
    /// server closed.
    private func readFromServer(_ client: InMemoryTLSClient) throws -> InMemoryTLSClient.ReadOutcome {
        let deadline = Deadline(.seconds(5))
        while true {
            let outcome = client.read()
            guard outcome == .wantRead, !deadline.hasPassed else { return outcome }
            switch try channel.receive(timeout: deadline.remaining) {
            case let .bytes(bytes): client.incoming(bytes)
            case .endOfStream, .nothingYet: return client.read()
            }
        }
    }

    /// In TLS 1.3 the client is done once it sent its Finished; the server's verdict on its
    /// certificate reaches it as an alert on its first read.
    private func refusal(after step: InMemoryTLSClient.Step, _ device: InMemoryTLSClient) -> String? {
        if case let .failed(reason) = step { return reason }
        if case let .failed(reason) = try? readFromServer(device) { return reason }
        return nil
    }

    func testAnImmediateAcceptFinishesTheHandshakeWithTheGatesNote() async throws {
        let gate = ScriptedGate(immediate: .accept(note: "OCSP good (cached)"))
        try await makeChannel(gate: gate)
        let device = client()

        let step = try await pump(device)
        try await waitUntil(timeout: .seconds(5), "the server to finish its side") { self.recorder.completed != nil }

        XCTAssertEqual(step, .done)
        XCTAssertEqual(recorder.completed?.certificateCheck, "OCSP good (cached)")
        XCTAssertEqual(gate.askedChains, [["device-1", "StapleGate Demo Issuing CA", "StapleGate Demo Root CA"]],
                       "the verified chain, leaf first, reaches the gate once")
    }

    func testARevokedVerdictSendsTheCertificateRevokedAlert() async throws {
        try await makeChannel(gate: ScriptedGate(immediate: .reject(.revoked, reason: "revoked at noon, reason keyCompromise")))
        let device = client()

        let step = try await pump(device)

        guard let reason = refusal(after: step, device) else { return XCTFail("the device was let in") }
        XCTAssertTrue(reason.contains("certificate revoked"), reason)
        XCTAssertNil(recorder.completed)
        let failure = try XCTUnwrap(recorder.failureReason)
        XCTAssertTrue(failure.contains("device certificate: certificate revoked: revoked at noon, reason keyCompromise"), failure)
    }

    func testOtherRefusalsSendCertificateUnknown() async throws {
        try await makeChannel(gate: ScriptedGate(immediate: .reject(.statusUnavailable, reason: "responder timed out after 5 s")))
        let device = client()
        let step = try await pump(device)

        guard let reason = refusal(after: step, device) else { return XCTFail("the device was let in") }
        XCTAssertTrue(reason.contains("certificate unknown"), reason)
        XCTAssertTrue(recorder.failureReason?.contains("responder timed out after 5 s") ?? false, recorder.failureReason ?? "nil")
    }

    func testTheHandshakeWaitsForAVerdictThatTakesTime() async throws {
        let gate = ScriptedGate(immediate: nil)
        try await makeChannel(gate: gate)
        let device = client()

        try await pump(device)
        try await waitUntil(timeout: .seconds(5), "the gate to be asked") { gate.askedChains.count == 1 }
        XCTAssertNil(recorder.completed, "the server has not finished its side")
        XCTAssertEqual(try channel.receive(timeout: .zero), .nothingYet, "nothing reaches the device meanwhile")
        XCTAssertNil(recorder.failureReason)

        gate.release(.accept(note: "OCSP good (from http://responder)"))
        try await waitUntil(timeout: .seconds(5), "the handshake to complete") { self.recorder.completed != nil }
        let step = try await pump(device)

        XCTAssertEqual(step, .done)
        XCTAssertEqual(recorder.completed?.certificateCheck, "OCSP good (from http://responder)")
        // Application data flows once admitted: the async mode is off for the established session.
        device.write(Array("ping".utf8))
        try channel.send(device.outgoing())
        try await waitUntil(timeout: .seconds(5), "plaintext to arrive") { self.recorder.receivedText == "ping" }
    }

    func testALateRefusalAlsoSendsItsAlert() async throws {
        let gate = ScriptedGate(immediate: nil)
        try await makeChannel(gate: gate)
        let device = client()
        try await pump(device)
        try await waitUntil(timeout: .seconds(5), "the gate to be asked") { gate.askedChains.count == 1 }

        gate.release(.reject(.revoked, reason: "revoked (asked the responder)"))
        try await waitUntil(timeout: .seconds(5), "the handshake to fail") { self.recorder.failureReason != nil }
        let step = try await pump(device)

        guard let reason = refusal(after: step, device) else { return XCTFail("the device was let in") }
        XCTAssertTrue(reason.contains("certificate revoked"), reason)
    }

    func testADeviceThatLeavesWhileItsVerdictIsAwaitedIsForgotten() async throws {
        let gate = ScriptedGate(immediate: nil)
        try await makeChannel(gate: gate)
        try await pump(client())
        try await waitUntil(timeout: .seconds(5), "the gate to be asked") { gate.askedChains.count == 1 }

        channel.closePeer()  // the device went away (not our close)
        try await waitUntil(timeout: .seconds(5), "the handler to report the device gone") { self.recorder.failureReason != nil }
        XCTAssertTrue(recorder.failureReason?.contains("disconnected while its certificate was being checked") ?? false,
                      recorder.failureReason ?? "nil")
        // The verdict arriving afterwards finds the connection gone and changes nothing.
        gate.release(.accept(note: "too late"))
        await Task.yield()
        XCTAssertNil(recorder.completed)
    }
}

/// A gate answering from a script: `immediate`, or (when nil) whatever `release` sends later.
final class ScriptedGate: DeviceCertificateGate, @unchecked Sendable {
    private let immediate: DeviceCertificateVerdict?
    private let asked = NIOLockedValueBox<[[String]]>([])
    private let verdicts: AsyncStream<DeviceCertificateVerdict>
    private let continuation: AsyncStream<DeviceCertificateVerdict>.Continuation

    init(immediate: DeviceCertificateVerdict?) {
        self.immediate = immediate
        (verdicts, continuation) = AsyncStream.makeStream()
    }

    /// The CN (or subject) of each certificate of each chain asked about.
    var askedChains: [[String]] { asked.withLockedValue { $0 } }

    func release(_ verdict: DeviceCertificateVerdict) { continuation.yield(verdict) }

    func immediateVerdict(for chain: [X509Certificate]) -> DeviceCertificateVerdict? {
        asked.withLockedValue { $0.append(chain.map { $0.commonName ?? $0.subject }) }
        return immediate
    }

    func verdict(for chain: [X509Certificate]) async -> DeviceCertificateVerdict {
        for await verdict in verdicts { return verdict }
        return .reject(.statusUnavailable, reason: "no verdict")
    }

    func allowsResumption(of certificate: X509Certificate) -> Bool { false }
}

/// What the TLS handler reports, readable from the test while the channel's loop writes it.
final class ThreadSafeEventRecorder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private struct Events {
        var completed: TLSHandshakeSummary?
        var failureReason: String?
        var received: [UInt8] = []
    }
    private let events = NIOLockedValueBox(Events())

    var completed: TLSHandshakeSummary? { events.withLockedValue { $0.completed } }
    var failureReason: String? { events.withLockedValue { $0.failureReason } }
    var receivedText: String? {
        events.withLockedValue { $0.received.isEmpty ? nil : String(decoding: $0.received, as: UTF8.self) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        events.withLockedValue { $0.received += buffer.readableBytesView }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let TLSEvent.handshakeCompleted(summary): events.withLockedValue { $0.completed = summary }
        case let TLSEvent.handshakeFailed(reason): events.withLockedValue { $0.failureReason = reason }
        default: break
        }
    }
}
