import Foundation

/// A real `openssl ocsp` responder serving a TestPKI's index on the port its certificates' AIA
/// names. `-multi 2` re-reads index.txt when it changes, so revocations show up while it runs
/// (each worker may give one stale answer first).
public final class OCSPResponder: @unchecked Sendable {
    public let pki: TestPKI
    public var port: Int { pki.ocspPort }
    private var process: ManagedProcess?

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// `extraArguments` such as ["-badsig"] or ["-resp_no_certs"] make it misbehave.
    public static func start(pki: TestPKI, extraArguments: [String] = []) async throws -> OCSPResponder {
        let responder = OCSPResponder(pki: pki)
        try await responder.start(extraArguments: extraArguments)
        return responder
    }

    private init(pki: TestPKI) {
        self.pki = pki
    }

    public func start(extraArguments: [String] = []) async throws {
        let process = try ManagedProcess("openssl", [
            "ocsp", "-index", pki.path("index.txt"), "-CA", pki.path("issuing-ca.pem"),
            "-rsigner", pki.path("ocsp-signer.pem"), "-rkey", pki.path("ocsp-signer.key"),
            "-port", "\(port)", "-nmin", "5", "-multi", "2",
        ] + extraArguments)
        process.killProcessGroupAtExit()
        self.process = process
        let port = self.port
        try await waitUntil(timeout: .seconds(10), "openssl ocsp to accept connections on port \(port)", details: { process.output }) {
            guard process.isRunning else { throw Failure(description: "openssl ocsp exited\n\(process.output)") }
            return (try? RawTCPClient(port: port).closeSocket()) != nil
        }
    }

    /// Stops it (its whole process group: `-multi` workers hold the port too) and waits until the
    /// port is free.
    public func stop() async {
        await process?.terminateProcessGroup()
        process = nil
    }
}
