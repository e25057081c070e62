import COpenSSL
import Logging
import NIOCore
import NIOEmbedded
@testable import StapleGateTLS
import TestSupport
import XCTest

/// The serving half of stapling: whatever bytes the store holds for the certificate a handshake
/// presents are what a client that asked for a status receives, and nothing when the store is
/// empty. (Fetching and verifying those bytes is the OCSP core's job, tested there.)
final class StapleServingTests: SharedPKITestCase {
    private func makeContext(_ identities: [String]) throws -> ServerContext {
        try ServerContext(configuration: TLSServerConfiguration(
            certificates: identities.map { .init(chainPath: pki.path("\($0).pem"), keyPath: pki.path("\($0).key")) },
            deviceCABundlePath: pki.path("ca-chain.pem")))
    }

    /// A full handshake between a fresh in-memory client and a fresh server handler.
    private func handshake(_ context: ServerContext, requestStaple: Bool = true, tls12Ciphers: String? = nil) throws -> InMemoryTLSClient {
        let client = InMemoryTLSClient(
            caFile: pki.path("ca-chain.pem"), certificate: pki.path("device-1.pem"), key: pki.path("device-1.key"),
            maxVersion: tls12Ciphers == nil ? nil : TLS1_2_VERSION, tls12Ciphers: tls12Ciphers, requestStaple: requestStaple)
        let channel = EmbeddedChannel(handler: OpenSSLServerHandler(context: context, logger: Logger(label: "test")))
        defer { _ = try? channel.finish() }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        for _ in 0..<10 {
            _ = client.handshake()
            let toServer = client.outgoing()
            if !toServer.isEmpty { try channel.writeInbound(channel.allocator.buffer(bytes: toServer)) }
            var toClient: [UInt8] = []
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { toClient += buffer.readableBytesView }
            client.incoming(toClient)
            if toServer.isEmpty, toClient.isEmpty { break }
        }
        XCTAssertEqual(client.handshake(), .done)
        return client
    }

    func testNothingIsStapledWhileTheStoreIsEmpty() throws {
        let context = try makeContext(["server"])
        XCTAssertNil(try handshake(context).receivedStaple)
    }

    func testTheStoredBytesAreStapledExactlyAndSwapsApplyToTheNextHandshake() throws {
        let context = try makeContext(["server"])
        context.staples.setStaple([0x30, 0x03, 0x0A, 0x01, 0x00], forCertificateAt: 0)
        XCTAssertEqual(try handshake(context).receivedStaple, [0x30, 0x03, 0x0A, 0x01, 0x00])

        context.staples.setStaple([0x30, 0x03, 0x0A, 0x01, 0x01], forCertificateAt: 0)
        XCTAssertEqual(try handshake(context).receivedStaple, [0x30, 0x03, 0x0A, 0x01, 0x01])

        context.staples.setStaple(nil, forCertificateAt: 0)
        XCTAssertNil(try handshake(context).receivedStaple)
    }

    func testAStapleIsNotServedFromItsValidUntilOnWhateverTheServiceDid() throws {
        let context = try makeContext(["server"])
        let validUntil = Date(timeIntervalSince1970: 1_800_000_000)
        context.staples.setStaple([0x30, 0x03, 0x0A, 0x01, 0x00], validUntil: validUntil, forCertificateAt: 0)
        XCTAssertEqual(context.staples.staple(forCertificateAt: 0, now: validUntil - 1), [0x30, 0x03, 0x0A, 0x01, 0x00])
        XCTAssertNil(context.staples.staple(forCertificateAt: 0, now: validUntil), "expired: the wall clock passed it")

        // In a handshake, against the real clock: a staple that expired a minute ago is not sent.
        context.staples.setStaple([0x30, 0x03, 0x0A, 0x01, 0x00], validUntil: Date() - 60, forCertificateAt: 0)
        XCTAssertNil(try handshake(context).receivedStaple)
        context.staples.setStaple([0x30, 0x03, 0x0A, 0x01, 0x00], validUntil: Date() + 60, forCertificateAt: 0)
        XCTAssertEqual(try handshake(context).receivedStaple, [0x30, 0x03, 0x0A, 0x01, 0x00], "negative control")
    }

    func testTLS12HandshakesAreStapledToo() throws {
        let context = try makeContext(["server"])
        context.staples.setStaple([0x30, 0x03, 0x0A, 0x01, 0x00], forCertificateAt: 0)
        let client = try handshake(context, tls12Ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256")
        XCTAssertEqual(client.protocolVersion, "TLSv1.2")
        XCTAssertEqual(client.receivedStaple, [0x30, 0x03, 0x0A, 0x01, 0x00])
    }

    func testEachCertificateGetsItsOwnStaple() throws {
        let context = try makeContext(["server", "server-rsa"])
        context.staples.setStaple([0xEC], forCertificateAt: 0)
        context.staples.setStaple([0x25, 0x5A], forCertificateAt: 1)

        let rsaClient = try handshake(context, tls12Ciphers: "ECDHE-RSA-AES128-GCM-SHA256")
        XCTAssertTrue(rsaClient.serverPresentedRSA)
        XCTAssertEqual(rsaClient.receivedStaple, [0x25, 0x5A])

        let ecdsaClient = try handshake(context, tls12Ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256")
        XCTAssertFalse(ecdsaClient.serverPresentedRSA)
        XCTAssertEqual(ecdsaClient.receivedStaple, [0xEC])
    }

    func testAConnectionKeepsItsContextAliveForTheStaplingCallback() throws {
        weak var released: ServerContext?
        var handler: OpenSSLServerHandler?
        do {
            let context = try makeContext(["server"])
            released = context
            handler = OpenSSLServerHandler(context: context, logger: Logger(label: "test"))
        }
        XCTAssertNotNil(released, "a replaced context must outlive the handshakes still using it")
        XCTAssertNotNil(handler)
        handler = nil
        XCTAssertNil(released, "and be freed with its last connection")
    }
}
