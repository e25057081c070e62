import Foundation

/// A real HAProxy (Debian's 2.6) in TCP mode, in the foreground, logging to its stdout, with a
/// configuration the test writes: the balancer operators put in front of several gateways
/// (`send-proxy-v2`), or a receiver of the gateway's own PROXY header (`accept-proxy`).
public final class HAProxy: @unchecked Sendable {
    public let process: ManagedProcess
    /// The frontend's port.
    public let port: Int

    /// What HAProxy logged (one line per connection with `option logasap`).
    public var log: String { process.output }

    /// Runs `haproxy -db -f` on a configuration made of a global/defaults preamble (log to
    /// stdout, raw format, TCP mode, short timeouts) and `sections`, then waits until it answers
    /// on a monitor frontend of its own (probing the test's frontend would count as a client).
    public static func start(port: Int, sections: String, in directory: TemporaryDirectory) async throws -> HAProxy {
        let monitorPort = try FreePort.next()
        let configuration = """
        global
            log stdout format raw local0 info
            maxconn 1000
        defaults
            mode tcp
            log global
            option logasap
            timeout connect 2s
            timeout client 60s
            timeout server 60s
        frontend ready
            bind 127.0.0.1:\(monitorPort)
            mode http
            no log
            monitor-uri /ready
        \(sections)

        """
        let path = try directory.write("haproxy-\(port).cfg", configuration)
        let process = try ManagedProcess("haproxy", ["-db", "-f", path])
        process.killProcessGroupAtExit()
        let proxy = HAProxy(process: process, port: port)
        try await waitUntil(timeout: .seconds(15), "haproxy to accept connections on port \(monitorPort)", details: { process.output }) {
            guard process.isRunning else { throw ManagedProcess.LaunchError(command: "haproxy -f \(path)", reason: "exited\n\(process.output)\n\(configuration)") }
            guard let probe = try? RawTCPClient(port: monitorPort) else { return false }
            probe.closeSocket()
            return true
        }
        return proxy
    }

    private init(process: ManagedProcess, port: Int) {
        self.process = process
        self.port = port
    }

    public func stop() async {
        await process.terminateProcessGroup()
    }
}
