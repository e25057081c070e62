import Foundation

/// A real `openssl ocsp` responder serving a TestPKI's index on the port its certificates' AIA
/// names. `-multi 2` re-reads index.txt when it changes, so revocations show up while it runs
/// (each worker may give one stale answer first).
public final class OCSPResponder: @unchecked Sendable {
    public let pki: TestPKI
    /// Where it listens: the port the PKI's AIA names, unless told otherwise (a test that puts
    /// a `CountingTCPProxy` on the AIA port runs the responder behind it).
    public let port: Int
    private var process: ManagedProcess?
    /// The last process started, kept after a stop so a test can check nothing was left behind.
    private var lastLaunched: ManagedProcess?

    /// True once every process of the last launch (parent and `-multi` workers) has exited.
    public var processGroupIsGone: Bool { lastLaunched?.processGroupIsGone ?? true }

    /// For failure messages: whether the last launch still runs (or how it ended), and its output.
    public var diagnostics: String {
        guard let process = lastLaunched else { return "responder on port \(port): never started" }
        let state = process.exitStatus.map { "ended: \($0)" } ?? "running"
        return "responder on port \(port), \(process) \(self.process == nil ? "stopped by the test, " : "")\(state)\n\(process.output)"
    }

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// `extraArguments` such as ["-badsig"] or ["-resp_no_certs"] make it misbehave.
    /// `clockOffset` (a libfaketime relative offset such as "-1h", "+2d") runs it with
    /// libfaketime preloaded, so its thisUpdate / nextUpdate are that far off: with "-1h" (and
    /// `-nmin 5`) every answer it gives expired 55 minutes ago. `clock` instead runs it on a
    /// `FakeClock` the test moves while it runs.
    public static func start(pki: TestPKI, port: Int? = nil, extraArguments: [String] = [],
                             clockOffset: String? = nil, clock: FakeClock? = nil) async throws -> OCSPResponder {
        let responder = OCSPResponder(pki: pki, port: port ?? pki.ocspPort)
        try await responder.start(extraArguments: extraArguments, clockOffset: clockOffset, clock: clock)
        return responder
    }

    /// The blocking twin of `start(pki:)`, for class-level setUp.
    public static func startBlocking(pki: TestPKI, extraArguments: [String] = []) throws -> OCSPResponder {
        let responder = OCSPResponder(pki: pki, port: pki.ocspPort)
        let process = try responder.launch(extraArguments)
        try waitUntilBlocking(timeout: .seconds(10), "openssl ocsp to accept connections on port \(responder.port)",
                              details: { process.output }) { try responder.isListening(process) }
        return responder
    }

    private init(pki: TestPKI, port: Int) {
        self.pki = pki
        self.port = port
    }

    public func start(extraArguments: [String] = [], clockOffset: String? = nil, clock: FakeClock? = nil) async throws {
        let process = try launch(extraArguments, clockOffset: clockOffset, clock: clock)
        try await waitUntil(timeout: .seconds(10), "openssl ocsp to accept connections on port \(port)",
                            details: { process.output }) { try self.isListening(process) }
    }

    private func launch(_ extraArguments: [String], clockOffset: String? = nil, clock: FakeClock? = nil) throws -> ManagedProcess {
        // Not the `faketime` command: it forks openssl as its child, which then leads a process
        // group of its own that `stop()` would not reach. `env` execs openssl itself, and the
        // -multi workers inherit the preload.
        var wrapper = ["openssl"]
        if let clockOffset {
            guard let library = FakeClock.libfaketime else {
                throw Failure(description: "libfaketime.so.1 not found (Debian package faketime / libfaketime)")
            }
            wrapper = ["env", "LD_PRELOAD=\(library)", "FAKETIME=\(clockOffset)", "openssl"]
        }
        let process = try ManagedProcess(wrapper[0], Array(wrapper.dropFirst()) + [
            "ocsp", "-index", pki.path("index.txt"), "-CA", pki.path("issuing-ca.pem"),
            "-rsigner", pki.path("ocsp-signer.pem"), "-rkey", pki.path("ocsp-signer.key"),
            "-port", "\(port)", "-nmin", "5", "-multi", "2",
        ] + extraArguments, environment: clock?.environment)
        process.killProcessGroupAtExit()
        self.process = process
        lastLaunched = process
        return process
    }

    /// Ready once it printed "ACCEPT [::]:PORT", which it does after binding. Not probed with a
    /// TCP connect: an empty connection would hold one of its two workers for good.
    private func isListening(_ process: ManagedProcess) throws -> Bool {
        guard process.isRunning else { throw Failure(description: "openssl ocsp exited\n\(process.output)") }
        return process.stdout.contains("ACCEPT") || process.stderr.contains("ACCEPT")
    }

    /// Stops it (its whole process group: `-multi` workers hold the port too) and waits until the
    /// port is free.
    public func stop() async {
        await process?.terminateProcessGroup()
        process = nil
    }

    /// What a responder on `port` answers for the PKI's certificate `name` ("good", "revoked", …),
    /// asked with `openssl ocsp` as a client; "no answer: …" when it gives none.
    public static func status(of name: String, in pki: TestPKI, port: Int) async throws -> String {
        let result = try await ManagedProcess("openssl", [
            "ocsp", "-issuer", pki.path("issuing-ca.pem"), "-cert", pki.certificate(name),
            "-url", "http://127.0.0.1:\(port)", "-CAfile", pki.caChain,
        ]).commandResult(timeout: .seconds(10))
        let line = result.stdout.split(separator: "\n").first { $0.hasPrefix("\(pki.certificate(name)):") }
        return line.map { String($0.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespaces) } ?? "no answer: \(result)"
    }

    /// The blocking twin of `stop()`.
    public func stopBlocking() {
        process?.terminateProcessGroupBlocking()
        process = nil
    }
}
