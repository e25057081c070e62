import Foundation

/// A real `openssl ocsp` responder serving a TestPKI's index on the port its certificates' AIA
/// names. `-multi 2` re-reads index.txt when it changes, so revocations show up while it runs
/// (each worker may give one stale answer first).
public final class OCSPResponder: @unchecked Sendable {
    public let pki: TestPKI
    public var port: Int { pki.ocspPort }
    private var process: ManagedProcess?
    /// The last process started, kept after a stop so a test can check nothing was left behind.
    private var lastLaunched: ManagedProcess?

    /// True once every process of the last launch (parent and `-multi` workers) has exited.
    public var processGroupIsGone: Bool { lastLaunched?.processGroupIsGone ?? true }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// `extraArguments` such as ["-badsig"] or ["-resp_no_certs"] make it misbehave.
    public static func start(pki: TestPKI, extraArguments: [String] = []) async throws -> OCSPResponder {
        let responder = OCSPResponder(pki: pki)
        try await responder.start(extraArguments: extraArguments)
        return responder
    }

    /// The blocking twin of `start(pki:)`, for class-level setUp.
    public static func startBlocking(pki: TestPKI, extraArguments: [String] = []) throws -> OCSPResponder {
        let responder = OCSPResponder(pki: pki)
        let process = try responder.launch(extraArguments)
        try waitUntilBlocking(timeout: .seconds(10), "openssl ocsp to accept connections on port \(responder.port)",
                              details: { process.output }) { try responder.isListening(process) }
        return responder
    }

    private init(pki: TestPKI) {
        self.pki = pki
    }

    public func start(extraArguments: [String] = []) async throws {
        let process = try launch(extraArguments)
        try await waitUntil(timeout: .seconds(10), "openssl ocsp to accept connections on port \(port)",
                            details: { process.output }) { try self.isListening(process) }
    }

    private func launch(_ extraArguments: [String]) throws -> ManagedProcess {
        let process = try ManagedProcess("openssl", [
            "ocsp", "-index", pki.path("index.txt"), "-CA", pki.path("issuing-ca.pem"),
            "-rsigner", pki.path("ocsp-signer.pem"), "-rkey", pki.path("ocsp-signer.key"),
            "-port", "\(port)", "-nmin", "5", "-multi", "2",
        ] + extraArguments)
        process.killProcessGroupAtExit()
        self.process = process
        lastLaunched = process
        return process
    }

    private func isListening(_ process: ManagedProcess) throws -> Bool {
        guard process.isRunning else { throw Failure(description: "openssl ocsp exited\n\(process.output)") }
        return MosquittoBroker.acceptsTCP(port: port)
    }

    /// Stops it (its whole process group: `-multi` workers hold the port too) and waits until the
    /// port is free.
    public func stop() async {
        await process?.terminateProcessGroup()
        process = nil
    }

    /// The blocking twin of `stop()`.
    public func stopBlocking() {
        process?.terminateProcessGroupBlocking()
        process = nil
    }
}
