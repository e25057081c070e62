import Foundation

/// A real server made of socat on a free port: a TLS terminator (OPENSSL-LISTEN) in front of a
/// plain TCP port, which is how the tests put an https:// responder in front of `openssl ocsp`,
/// or a server that answers every connection with fixed bytes. socat forks one child per
/// connection into its own process group, so it is stopped by group.
public final class SocatListener: @unchecked Sendable {
    public let port: Int
    private let process: ManagedProcess
    /// Holds what `answering(_:)` serves; removed on stop.
    private var ownedFolder: TemporaryDirectory?

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Listens on every IPv4 address (so a test can also reach it as 127.0.0.2, an address the
    /// certificate does not name) and serves `certificate` (leaf first, then its chain).
    public static func tlsFront(certificate: String, key: String, forwardingTo targetPort: Int) async throws -> SocatListener {
        try await start { port in
            ["OPENSSL-LISTEN:\(port),reuseaddr,fork,cert=\(certificate),key=\(key),verify=0", "TCP:127.0.0.1:\(targetPort)"]
        }
    }

    /// Sends `text` to every client as soon as it connects, then reads and drops what the
    /// client sends until it closes: e.g. a plain HTTP server where a TLS one was expected.
    /// The text goes through a file: socat parses quotes in its address itself, so text inlined
    /// in the shell command (quotes, CR LF) reached sh broken, the command failed before its
    /// `cat` could read the ClientHello, and the kernel reset the connection under the answer.
    public static func answering(_ text: String) async throws -> SocatListener {
        let folder = try TemporaryDirectory(prefix: "socat-answer")
        do {
            let listener = try await answering(fileAt: try folder.write("answer", text))
            listener.ownedFolder = folder
            return listener
        } catch {
            folder.remove()
            throw error
        }
    }

    /// Sends the bytes of the file at `path` (e.g. a whole HTTP response with a binary DER body)
    /// to every client as soon as it connects, then reads and drops whatever the client sends
    /// until the client closes. Reading the request before closing keeps the kernel from
    /// resetting the connection under a response the client has not read yet. The path must not
    /// contain a quote or a comma (socat's address syntax).
    public static func answering(fileAt path: String) async throws -> SocatListener {
        precondition(!path.contains("'") && !path.contains(","), "unsuitable path for socat: \(path)")
        return try await start { port in ["TCP-LISTEN:\(port),reuseaddr,fork", "SYSTEM:cat '\(path)'; cat >/dev/null"] }
    }

    private static func start(_ addresses: (Int) -> [String]) async throws -> SocatListener {
        let port = try FreePort.next()
        let process = try ManagedProcess("socat", addresses(port))
        process.killProcessGroupAtExit()
        let listener = SocatListener(port: port, process: process)
        do {
            try await waitUntil(timeout: .seconds(10), "socat to accept connections on port \(port)",
                                details: { process.output }) {
                guard process.isRunning else { throw Failure(description: "socat exited\n\(process.output)") }
                return MosquittoBroker.acceptsTCP(port: port)
            }
        } catch {
            await listener.stop()
            throw error
        }
        return listener
    }

    private init(port: Int, process: ManagedProcess) {
        self.port = port
        self.process = process
    }

    /// socat lingers about a second after SIGTERM; it holds no state worth a clean exit, so
    /// SIGKILL follows quickly.
    public func stop() async {
        await process.terminateProcessGroup(grace: .milliseconds(100))
        ownedFolder?.remove()
    }
}
