import Foundation
import NIOCore
import NIOPosix
@testable import StapleGateOCSP
import TestSupport
import XCTest

/// A fresh demo PKI, `openssl ocsp -multi 2` serving its index.txt on the PKI's OCSP port, and a
/// DER request (no nonce) for device-1 made by `openssl ocsp -reqout`.
final class OpenSSLResponder {
    let pki: TestPKI
    let scratch: TemporaryDirectory
    let process: ManagedProcess
    let requestDER: [UInt8]

    private init(pki: TestPKI, scratch: TemporaryDirectory, process: ManagedProcess, requestDER: [UInt8]) {
        self.pki = pki
        self.scratch = scratch
        self.process = process
        self.requestDER = requestDER
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// Blocking (class-level setUp). Returns once the responder accepts TCP connections.
    static func start() throws -> OpenSSLResponder {
        let pki = try TestPKI.make()
        var process: ManagedProcess?
        var scratchDirectory: TemporaryDirectory?
        do {
            let scratch = try TemporaryDirectory(prefix: "ocsp-http")
            scratchDirectory = scratch
            let port = pki.ocspPort
            let responder = try ManagedProcess("openssl", [
                "ocsp", "-index", pki.path("index.txt"), "-CA", pki.path("issuing-ca.pem"),
                "-rsigner", pki.path("ocsp-signer.pem"), "-rkey", pki.path("ocsp-signer.key"),
                "-port", "\(port)", "-nmin", "5", "-multi", "2",
            ])
            responder.killProcessGroupAtExit()
            process = responder
            try waitUntilBlocking(timeout: .seconds(10), "openssl ocsp to accept connections on port \(port)",
                                  details: { responder.output }) {
                guard responder.isRunning else {
                    throw Failure(description: "\(responder.commandLine): exited (\(responder.exitStatus!))\n\(responder.output)")
                }
                return OCSPHTTPClientTests.acceptsTCP(port: port)
            }

            let requestFile = scratch.file("request.der")
            let makeRequest = try ManagedProcess("openssl", [
                "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.path("device-1.pem"),
                "-reqout", requestFile, "-no_nonce",
            ])
            guard try makeRequest.waitForExitBlocking(timeout: .seconds(30)).succeeded else {
                throw Failure(description: "\(makeRequest.commandLine) failed\n\(makeRequest.output)")
            }
            let requestDER = try [UInt8](Data(contentsOf: URL(fileURLWithPath: requestFile)))
            return OpenSSLResponder(pki: pki, scratch: scratch, process: responder, requestDER: requestDER)
        } catch {
            process?.terminateProcessGroupBlocking()
            scratchDirectory?.remove()
            pki.remove()
            throw error
        }
    }

    /// SIGTERM to its process group (see `terminateProcessGroup`): about two seconds, as
    /// openssl sleeps one second after a worker dies and one more before exiting.
    func stop() {
        process.terminateProcessGroupBlocking()
        scratch.remove()
        pki.remove()
    }
}
