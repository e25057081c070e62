import COpenSSL
import NIOCore
@testable import StapleGateTLS
import TestSupport
import XCTest

/// The key ring in real TLS 1.3 handshakes: `SSLConnection` on the server side (as the gateway
/// drives it), a real OpenSSL client on the other, bytes passed between them in memory. Each
/// `ServerContext` is what a gateway process or a reload builds, so a ticket from one context
/// resuming on another is a ticket resuming on another gateway, after a reload or a restart.
final class SessionTicketKeyRingTests: SharedPKITestCase {
    private let first = SessionTicketKey.random()
    private let second = SessionTicketKey.random()
    private let third = SessionTicketKey.random()

    private func ring(_ keys: SessionTicketKey...) -> SessionTicketKeyRing {
        SessionTicketKeyRing(keys: keys, source: .file("test.keys"))
    }

    private func context(_ ring: SessionTicketKeyRing?, gate: (any DeviceCertificateGate)? = nil) throws -> ServerContext {
        try serverContext(resumption: ring, gate: gate)
    }

    // MARK: Tests

    func testNewTicketsAreEncryptedUnderTheFirstKey() throws {
        let handshake = try TicketHandshake(context: context(ring(first, second)), pki: pki)
        XCTAssertFalse(handshake.resumed)
        XCTAssertEqual(try XCTUnwrap(handshake.ticket).ticketKeyName, Array(first.name))
    }

    func testATicketResumesOnAnotherContextHoldingTheSameKey() throws {
        let issued = try XCTUnwrap(TicketHandshake(context: context(ring(first)), pki: pki).ticket)
        // Another SSL_CTX, another ring object with the same key: a reload, a restart, another gateway.
        let resumed = try TicketHandshake(context: context(ring(first)), pki: pki, offering: issued)
        XCTAssertTrue(resumed.resumed)
    }

    func testATicketUnderAKeyKeptForDecryptionResumesAndItsDeviceGetsOneUnderTheFirstKey() throws {
        let issued = try XCTUnwrap(TicketHandshake(context: context(ring(first)), pki: pki).ticket)
        let rotated = try TicketHandshake(context: context(ring(second, first)), pki: pki, offering: issued)
        XCTAssertTrue(rotated.resumed)
        // The key callback said "renew" (2): the device leaves with a ticket under the new key.
        XCTAssertEqual(try XCTUnwrap(rotated.ticket).ticketKeyName, Array(second.name))
    }

    func testATicketUnderAKeyNoLongerHeldGetsAFullHandshake() throws {
        let issued = try XCTUnwrap(TicketHandshake(context: context(ring(first)), pki: pki).ticket)
        let dropped = try TicketHandshake(context: context(ring(second, third)), pki: pki, offering: issued)
        XCTAssertFalse(dropped.resumed)
        XCTAssertEqual(try XCTUnwrap(dropped.ticket).ticketKeyName, Array(second.name))
    }

    /// Why the ring exists: OpenSSL's own keys belong to one SSL_CTX, which a reload replaces.
    func testWithoutARingATicketResumesOnItsOwnContextOnly() throws {
        let own = try context(nil)
        let issued = try XCTUnwrap(TicketHandshake(context: own, pki: pki).ticket)
        XCTAssertTrue(try TicketHandshake(context: own, pki: pki, offering: issued).resumed, "negative control")
        XCTAssertFalse(try TicketHandshake(context: context(nil), pki: pki, offering: issued).resumed)
    }

    /// The key callback only decrypts: the gate still decides whether the session is resumed.
    func testTheGateStillDecidesResumptionOfATicketUnderASharedKey() throws {
        let issued = try XCTUnwrap(TicketHandshake(context: context(ring(first), gate: ResumptionGate(allows: true)),
                                                   pki: pki).ticket)
        let allowed = try TicketHandshake(context: context(ring(first), gate: ResumptionGate(allows: true)),
                                          pki: pki, offering: issued)
        XCTAssertTrue(allowed.resumed, "negative control")
        XCTAssertEqual(allowed.questions, ["resumption"])
        let refused = try TicketHandshake(context: context(ring(first), gate: ResumptionGate(allows: false)),
                                          pki: pki, offering: issued)
        XCTAssertFalse(refused.resumed)
        XCTAssertEqual(refused.questions, ["resumption", "chain"], "the refused resumption became a full, checked handshake")
    }

    /// `tls.session_ticket_keys: fleet`: the ring an existing context holds is swapped in place,
    /// and the next handshake uses the new keys; the key made at start keeps decrypting.
    func testAFleetRingSwappedInPlaceIsUsedByTheContextHoldingIt() throws {
        let fleet = SessionTicketKeyRing.fleet(location: "postgres://db/fleet")
        XCTAssertFalse(fleet.isShared)
        XCTAssertTrue(fleet.summary.contains("fleet keys not loaded yet from postgres://db/fleet"), fleet.summary)
        let startKey = fleet.encryptionKey
        let serving = try context(fleet)
        let beforeSwap = try XCTUnwrap(TicketHandshake(context: serving, pki: pki).ticket)
        XCTAssertEqual(beforeSwap.ticketKeyName, Array(startKey.name))

        fleet.share([first, second])
        XCTAssertTrue(fleet.isShared)
        XCTAssertEqual(fleet.keys, [first, second, startKey], "the start key is kept last")
        let afterSwap = try TicketHandshake(context: serving, pki: pki)
        XCTAssertEqual(try XCTUnwrap(afterSwap.ticket).ticketKeyName, Array(first.name), "the same SSL_CTX, the new key")
        let resumed = try TicketHandshake(context: serving, pki: pki, offering: beforeSwap)
        XCTAssertTrue(resumed.resumed, "a ticket from before the database answered still resumes here")

        fleet.share([second])
        XCTAssertEqual(fleet.keys, [second, startKey])
        XCTAssertFalse(try TicketHandshake(context: serving, pki: pki, offering: try XCTUnwrap(afterSwap.ticket)).resumed,
                       "a key the fleet dropped no longer decrypts")
    }

    func testLookUpTellsTheCurrentKeyFromOlderAndUnknownOnes() {
        let keys = ring(first, second)
        func lookUp(_ key: SessionTicketKey) -> String {
            Array(key.name).withUnsafeBufferPointer { name in
                switch keys.lookUp(name: name.baseAddress!) {
                case let .current(found): "current \(found == key)"
                case let .older(found): "older \(found == key)"
                case .unknown: "unknown"
                }
            }
        }
        XCTAssertEqual(lookUp(first), "current true")
        XCTAssertEqual(lookUp(second), "older true")
        XCTAssertEqual(lookUp(third), "unknown")
    }

    func testKeysNeverPrintTheirSecret() {
        let secret = first.base64
        let shown = ["\(first)", String(reflecting: first), String(describing: [first]), dumped(first), ring(first).summary]
        for text in shown {
            XCTAssertFalse(text.contains(secret) || text.contains(secret.prefix(20)), text)
            XCTAssertTrue(text.contains(first.shortName), text)
        }
    }

    private func dumped(_ value: some Any) -> String {
        var text = ""
        dump(value, to: &text)
        return text
    }
}

extension SharedPKITestCase {
    /// The PKI's server certificate with `resumption` (none: OpenSSL's own tickets) and `gate`:
    /// what a gateway process or a reload builds.
    func serverContext(resumption: (any SessionResumption)?, gate: (any DeviceCertificateGate)? = nil) throws -> ServerContext {
        let configuration = TLSServerConfiguration(
            certificates: [.init(chainPath: pki.path("server.pem"), keyPath: pki.path("server.key"))],
            deviceCABundlePath: pki.path("ca-chain.pem"))
        return try ServerContext(configuration: configuration, material: TLSMaterial.load(configuration),
                                 resumption: resumption, deviceCertificateGate: gate)
    }
}

/// A gate that accepts every chain and answers resumption questions with `allows`.
struct ResumptionGate: DeviceCertificateGate {
    let allows: Bool
    func immediateVerdict(for chain: [X509Certificate]) -> DeviceCertificateVerdict? { .accept(note: "test") }
    func verdict(for chain: [X509Certificate]) async -> DeviceCertificateVerdict { .accept(note: "test") }
    func allowsResumption(of certificate: X509Certificate) -> Bool { allows }
}

/// One TLS 1.3 handshake of device-1 with a context, in memory, on this thread (a paused async
/// job must be resumed on the thread that paused it): the gate's questions are answered as
/// `OpenSSLHandler` answers them.
struct TicketHandshake {
    let resumed: Bool
    /// The session the client keeps afterwards, with the ticket it was given.
    let ticket: ClientSession?
    /// What the gate was asked, in order: "chain", "resumption".
    let questions: [String]
    /// The common names of each chain the gate was asked about, leaf first.
    let chains: [[String]]
    /// How many certificates the device sent besides its own the server's session holds once
    /// the handshake is done.
    let sentChainAfterwards: Int

    init(context: ServerContext, pki: TestPKI, offering session: ClientSession? = nil,
         file: StaticString = #filePath, line: UInt = #line) throws {
        let client = InMemoryTLSClient(caFile: pki.path("ca-chain.pem"), certificate: pki.path("device-1.pem"),
                                       key: pki.path("device-1.key"))
        if let session { client.offer(session) }
        let server = try XCTUnwrap(SSLConnection(context: context))
        var questions: [String] = []
        var chains: [[String]] = []
        var (clientDone, serverDone) = (false, false)
        var rounds = 0
        while !(clientDone && serverDone), rounds < 20 {
            rounds += 1
            if !clientDone {
                switch client.handshake() {
                case .done: clientDone = true
                case .wantRead: break
                case let .failed(reason): throw TicketHandshakeFailure("client: \(reason)")
                }
            }
            let toServer = client.outgoing()
            if !toServer.isEmpty { server.receive(ByteBuffer(bytes: toServer)) }
            serverLoop: while !serverDone {
                switch server.handshake() {
                case .complete: serverDone = true
                case .wantRead: break serverLoop
                case let .paused(question):
                    switch question {
                    case let .chain(chain)?:
                        questions.append("chain")
                        chains.append(chain.map { $0.commonName ?? $0.subject })
                        server.answer(.accept(note: "test"))
                    case let .resumption(certificate)?:
                        questions.append("resumption")
                        server.answerResumption(allowed: server.gate?.allowsResumption(of: certificate) ?? true)
                    case nil: break serverLoop
                    }
                case let .failed(error): throw TicketHandshakeFailure("server: \(error)")
                }
            }
            if let toClient = server.pendingOutput(allocator: ByteBufferAllocator()) {
                client.incoming(Array(toClient.readableBytesView))
            }
        }
        guard clientDone, serverDone else { throw TicketHandshakeFailure("the handshake did not finish") }
        XCTAssertEqual(client.protocolVersion, "TLSv1.3", file: file, line: line)
        // TLS 1.3 tickets come after the handshake: reading takes them in.
        if case let .failed(reason) = client.read() { throw TicketHandshakeFailure("client read: \(reason)") }
        XCTAssertEqual(server.sessionReused, client.sessionReused, "both sides agree on resumption", file: file, line: line)
        resumed = client.sessionReused
        ticket = client.keptSession()
        // A client freed without close_notify marks its session not resumable, as OpenSSL
        // treats a connection that just stopped as possibly tampered with.
        client.shutdown()
        self.questions = questions
        self.chains = chains
        sentChainAfterwards = server.peerChainCount
    }
}

struct TicketHandshakeFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
