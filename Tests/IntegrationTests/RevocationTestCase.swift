import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// Base of the suites that revoke devices while a gateway runs: each test gets a PKI of its own
/// (revocations change its index), a real `openssl ocsp` responder for it and the real
/// `staplegate` binary; the class's broker is shared. Optionally the responder runs behind a
/// `CountingTCPProxy` on the port the certificates' AIA names, so that a test can count the
/// requests the gateway makes while its own direct queries go around the count.
class RevocationTestCase: GatewayTestCase {
    var ownPKI: TestPKI?
    var responder: OCSPResponder?
    /// In front of the responder, when the test asked for counting.
    var responderProxy: CountingTCPProxy?
    var gateway: StapleGateProcess?

    override func tearDown() async throws {
        await gateway?.stop()
        gateway = nil
        await responderProxy?.stop()
        responderProxy = nil
        await responder?.stop()
        responder = nil
        ownPKI?.remove()
        ownPKI = nil
        try await super.tearDown()
    }

    /// A fresh PKI, its responder (asked by the gateway on the port in its certificates' AIA,
    /// through a counting proxy when `countingRequests`), and a gateway for it with
    /// `deviceOCSP` as its `device_ocsp` keys. `prepare` runs on the PKI before the responder
    /// starts (an `openssl ocsp -multi` responder sees new certificates one request late).
    func startGatewayWithOwnPKI(deviceOCSP: [String] = [], countingRequests: Bool = false,
                                prepare: (TestPKI) throws -> Void = { _ in }) async throws -> (TestPKI, StapleGateProcess) {
        let pki = try TestPKI.make()
        ownPKI = pki
        try prepare(pki)
        if countingRequests {
            let responder = try await OCSPResponder.start(pki: pki, port: try FreePort.next())
            self.responder = responder
            responderProxy = try await CountingTCPProxy.start(forwardingTo: responder.port, port: pki.ocspPort)
        } else {
            responder = try await OCSPResponder.start(pki: pki)
        }
        let sections = deviceOCSP.isEmpty ? [] : [(["device_ocsp:"] + deviceOCSP.map { "  \($0)" }).joined(separator: "\n")]
        let gateway = try await StapleGateProcess.start(pki: pki, broker: broker, directory: try makeTemporaryDirectory(),
                                                        sections: sections)
        self.gateway = gateway
        addTeardownBlock { [weak self] in
            guard let run = self?.testRun, run.failureCount + run.unexpectedExceptionCount > 0 else { return }
            print("--- gateway log ---\n\(gateway.process.stderr.text)\n--- broker log ---\n\(self?.broker.log ?? "")")
        }
        return (pki, gateway)
    }

    func serial(of name: String, in pki: TestPKI) throws -> String {
        try XCTUnwrap(PEMFile.certificateChain(at: pki.certificate(name)).first).serialHex
    }

    /// What the responder itself answers for `name` ("good", "revoked", …), asked directly
    /// (around any counting proxy).
    func responderStatus(of name: String, in pki: TestPKI) async throws -> String {
        try await OCSPResponder.status(of: name, in: pki, port: responder?.port ?? pki.ocspPort)
    }

    /// Revokes `name` in the index, then waits until the responder answers "revoked" three
    /// times in a row: each `-multi` worker serves one stale answer after the index changed,
    /// and consecutive connections go to alternating workers, so by then none is stale.
    func revokeAtTheResponder(_ name: String, in pki: TestPKI) async throws {
        try await pki.revoke(name, reason: "keyCompromise")
        var answers: [String] = []
        try await waitUntil(timeout: .seconds(20), pollEvery: .milliseconds(50), "the responder to answer revoked for \(name)",
                            details: { answers.joined(separator: ", ") }) {
            answers.append(try await responderStatus(of: name, in: pki))
            return answers.suffix(3) == ["revoked", "revoked", "revoked"]
        }
    }

    /// A mosquitto_sub as `name`, subscribed through the gateway.
    func subscribe(as name: String, pki: TestPKI, gateway: StapleGateProcess) async throws -> MosquittoSubscriber {
        try await MosquittoSubscriber.start(.gateway(port: gateway.port, pki: pki, device: name), broker: broker,
                                            topic: uniqueTopic("revocation"))
    }

    /// The subscriber's session is gone: the broker saw the client leave, and mosquitto_sub,
    /// whose reconnect the gateway refuses, gives up reporting the lost connection.
    func assertSessionClosed(_ subscriber: MosquittoSubscriber, timeout: Duration = .seconds(20),
                             file: StaticString = #filePath, line: UInt = #line) async throws {
        try await waitUntil(timeout: timeout, "the broker to see \(subscriber.clientID) leave", details: { self.broker.log }) {
            self.broker.log.contains("Client \(subscriber.clientID) closed its connection")
        }
        let status = try await subscriber.process.waitForExit(timeout: timeout)
        XCTAssertNotEqual(status, .exited(0), subscriber.process.output, file: file, line: line)
        XCTAssertTrue(subscriber.process.stderr.contains("The connection was lost"), subscriber.process.output, file: file, line: line)
    }

    /// A new handshake as `name` is refused with the certificate_revoked alert.
    func assertRefusedAsRevoked(_ name: String, pki: TestPKI, gateway: StapleGateProcess,
                                file: StaticString = #filePath, line: UInt = #line) async throws {
        let client = try OpenSSLClient(port: gateway.port, pki: pki, device: name)
        let refused = try await client.waitUntilRefused(timeout: .seconds(15))
        XCTAssertTrue(refused.output.contains("alert certificate revoked"), "\(refused)", file: file, line: line)
    }

    /// A full handshake as `name` that saves the session ticket the gateway sends after it
    /// into `file` (s_client reports the ticket only when it exits: its stdout is buffered).
    func saveSessionTicket(as name: String, to file: String, pki: TestPKI, gateway: StapleGateProcess) async throws {
        let first = try OpenSSLClient(port: gateway.port, pki: pki, device: name, extraArgs: ["-sess_out", file])
        try await waitUntil(timeout: .seconds(10), "s_client to save the session ticket", details: { first.output }) {
            ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").contains("-----END SSL SESSION PARAMETERS-----")
        }
        let full = try await first.finish()
        XCTAssertTrue(full.stdout.contains("New, TLSv1.3"), "\(full)")
        XCTAssertTrue(full.stdout.contains("Post-Handshake New Session Ticket arrived"), "\(full)")
    }
}

/// One entry of `staplegate ocsp cache --json`.
struct OCSPCacheListing: Decodable {
    let serial: String
    let identity: String?
    let status: String
    let revocationReason: String?
    let expiresAt: Date

    /// The gateway's cache as the command lists it.
    static func read(from gateway: StapleGateProcess) async throws -> [OCSPCacheListing] {
        let listing = try await gateway.command(["ocsp", "cache", "--json"])
        return try JSONDecoder.iso8601.decode([OCSPCacheListing].self, from: Data(listing.stdout.utf8))
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
