import Foundation

/// A real `openssl s_client` handshake against the gateway, as a device would do it.
public final class OpenSSLClient: @unchecked Sendable {
    public let process: ManagedProcess

    /// Connects to 127.0.0.1:`port`, verifies the gateway against ca-chain.pem and presents
    /// `device`'s certificate (none when nil). Its input stays open (an open pipe) so it keeps
    /// reading what the gateway sends until the gateway closes or `finish()` is called.
    public init(port: Int, pki: TestPKI, device: String?, extraArgs: [String] = []) throws {
        var arguments = ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost",
                         "-CAfile", pki.caChain, "-no_ign_eof"]
        if let device { arguments += ["-cert", pki.certificate(device), "-key", pki.key(device)] }
        process = try ManagedProcess("openssl", arguments + extraArgs, input: .pipe)
    }

    /// stdout and stderr together (s_client prints the handshake on stdout, errors and alerts on stderr).
    public var output: String { process.stdout.text + process.stderr.text }

    /// For a connection the gateway is expected to refuse: waits until s_client has exited
    /// (because the gateway closed it) and returns what it printed.
    public func waitUntilRefused(timeout: Duration = .seconds(10)) async throws -> CommandResult {
        let status = try await process.waitForExit(timeout: timeout)
        return CommandResult(status: status, stdout: process.stdout.text, stderr: process.stderr.text)
    }

    public func waitForOutput(_ text: String, timeout: Duration = .seconds(10)) async throws {
        try await process.waitForOutput(text, timeout: timeout)
    }

    /// Closes s_client's input, which makes it send close_notify and exit; returns its output.
    public func finish(timeout: Duration = .seconds(10)) async throws -> CommandResult {
        process.closeInput()
        let status = try await process.waitForExit(timeout: timeout)
        return CommandResult(status: status, stdout: process.stdout.text, stderr: process.stderr.text)
    }
}
