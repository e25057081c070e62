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
    let responder: OCSPResponder
    let requestDER: [UInt8]

    private init(pki: TestPKI, scratch: TemporaryDirectory, responder: OCSPResponder, requestDER: [UInt8]) {
        self.pki = pki
        self.scratch = scratch
        self.responder = responder
        self.requestDER = requestDER
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// Blocking (class-level setUp). Returns once the responder accepts TCP connections.
    static func start() throws -> OpenSSLResponder {
        let pki = try TestPKI.make()
        var responder: OCSPResponder?
        var scratchDirectory: TemporaryDirectory?
        do {
            let scratch = try TemporaryDirectory(prefix: "ocsp-http")
            scratchDirectory = scratch
            responder = try OCSPResponder.startBlocking(pki: pki)

            let requestFile = scratch.file("request.der")
            let makeRequest = try ManagedProcess("openssl", [
                "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.path("device-1.pem"),
                "-reqout", requestFile, "-no_nonce",
            ])
            guard try makeRequest.waitForExitBlocking(timeout: .seconds(30)).succeeded else {
                throw Failure(description: "\(makeRequest.commandLine) failed\n\(makeRequest.output)")
            }
            let requestDER = try [UInt8](Data(contentsOf: URL(fileURLWithPath: requestFile)))
            return OpenSSLResponder(pki: pki, scratch: scratch, responder: responder!, requestDER: requestDER)
        } catch {
            responder?.stopBlocking()
            scratchDirectory?.remove()
            pki.remove()
            throw error
        }
    }

    /// SIGTERM to its process group (see `terminateProcessGroup`): about two seconds, as
    /// openssl sleeps one second after a worker dies and one more before exiting.
    func stop() {
        responder.stopBlocking()
        scratch.remove()
        pki.remove()
    }
}
