import Foundation

/// A complete demo PKI made by the project's own `certs/make-demo-pki.sh` in a temp folder.
public final class TestPKI: @unchecked Sendable {
    public let directory: TemporaryDirectory
    /// The OCSP URL written into the certificates (nothing listens there unless a test starts a responder).
    public let ocspURL: String
    public let ocspPort: Int

    public static var script: String { Repository.path("certs/make-demo-pki.sh") }

    /// Runs the script (blocking: meant for class-level setUp). Takes well under a second.
    public init(ocspPort: Int? = nil, timeout: Duration = .seconds(60)) throws {
        let port = try ocspPort ?? FreePort.next()
        self.ocspPort = port
        self.ocspURL = "http://127.0.0.1:\(port)"
        directory = try TemporaryDirectory(prefix: "pki")
        let out = directory.file("pki")
        let script = try ManagedProcess(Self.script, ["--out", out, "--ocsp-url", ocspURL])
        let status = try script.waitForExitBlocking(timeout: timeout)
        guard status.succeeded, FileManager.default.fileExists(atPath: "\(out)/ca-chain.pem") else {
            directory.remove()
            throw ManagedProcess.LaunchError(command: script.commandLine, reason: "failed (\(status))\n\(script.output)")
        }
    }

    /// Same as `init`: builds a fresh demo PKI.
    public static func make(ocspPort: Int? = nil) throws -> TestPKI {
        try TestPKI(ocspPort: ocspPort)
    }

    public var folder: String { directory.file("pki") }

    /// The absolute path of a file the script made, e.g. `path("device-1.pem")`.
    public func path(_ name: String) -> String {
        "\(folder)/\(name)"
    }

    public var caChain: String { path("ca-chain.pem") }
    public func certificate(_ name: String) -> String { path("\(name).pem") }
    public func key(_ name: String) -> String { path("\(name).key") }

    /// Marks a certificate revoked in the CA database (the script's `revoke` mode).
    public func revoke(_ name: String, reason: String? = nil) async throws {
        let revoke = try ManagedProcess(Self.script, ["revoke", "--out", folder, name] + (reason.map { [$0] } ?? []))
        let status = try await revoke.waitForExit(timeout: .seconds(30))
        guard status.succeeded else {
            throw ManagedProcess.LaunchError(command: revoke.commandLine, reason: "failed (\(status))\n\(revoke.output)")
        }
    }

    public func remove() { directory.remove() }
}
