import Foundation
import TestSupport
import XCTest

/// The real `staplegate run` binary with a configuration written for the test: listening on a
/// free port, forwarding to `broker`, trusting the PKI's CA chain, keeping its state in its own
/// folder. Extra YAML sections (`stapling`, `device_ocsp`, …) are passed as text.
final class StapleGateProcess {
    let port: Int
    /// The admin listener's port, read from its "admin listening on" log line; nil when it is off.
    let adminPort: Int?
    let configPath: String
    let stateDirectory: String
    let process: ManagedProcess
    /// Where its output goes instead of this process's memory (a long run's info log).
    let logFile: String?

    var output: String {
        guard let logFile else { return process.output }
        return (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
    }

    /// - Parameters:
    ///   - sections: top-level YAML sections, e.g. "device_ocsp:\n  timeout: 1s".
    ///   - deviceCA: the device CA bundle (default: the PKI's ca-chain.pem).
    ///   - tls: more keys of the `tls` section, e.g. "handshake_timeout: 30s".
    ///   - listen: more keys of the `listen` section, e.g. "max_sessions: 3".
    ///   - upstreamKeys: more keys of the default `upstream` section, e.g. "proxy_protocol: v2";
    ///     `upstreamPort` replaces the broker's port there (a relay in front of it).
    ///   - logging: the `logging` section, as a flow mapping.
    ///   - directory: where the config and the state go; reused across a restart.
    ///   - admin: the `admin` section's value; by default port 0, so parallel gateways never collide.
    ///   - upstream: the `upstream` section's value as a flow mapping; by default `broker`'s address.
    ///   - environment: added to the binary's (e.g. a `FakeClock`'s).
    ///   - logFile: its standard output and error go to this file (appended), not to memory.
    static func start(pki: TestPKI, broker: MosquittoBroker, directory: TemporaryDirectory, sections: [String] = [],
                      deviceCA: String? = nil, tls: [String] = [], listen: [String] = [], port: Int? = nil,
                      upstreamKeys: [String] = [], upstreamPort: Int? = nil,
                      logging: String = "{ level: debug }", stapling: Bool = false,
                      admin: String = "{ port: 0 }", upstream: String? = nil,
                      environment: [String: String]? = nil, logFile: String? = nil) async throws -> StapleGateProcess {
        let port = try port ?? FreePort.next()
        let state = directory.file("state")
        var text = """
        listen: { address: "127.0.0.1", port: \(port)\(listen.map { ", \($0)" }.joined()) }
        tls:
          certificates:
            - { certificate: "\(pki.certificate("server"))", key: "\(pki.key("server"))" }
          device_ca: "\(deviceCA ?? pki.caChain)"
        \(tls.map { "  \($0)\n" }.joined())upstream: \(upstream ?? "{ address: 127.0.0.1, port: \(upstreamPort ?? broker.port!)\(upstreamKeys.map { ", \($0)" }.joined()) }")
        state_directory: "\(state)"
        logging: \(logging)

        """
        if !stapling { text += "stapling: { enabled: false }\n" }
        text += "admin: \(admin)\n"
        text += sections.joined(separator: "\n") + "\n"
        let configPath = try directory.write("staplegate.yaml", text)
        let executable = try CommandLineTests.findExecutable()
        let process: ManagedProcess
        if let logFile {
            // `exec`: the process is the gateway itself, so its pid and signals are the gateway's.
            process = try ManagedProcess("/bin/sh", ["-c", "exec \"$0\" \"$@\" >>\"$STAPLEGATE_LOG_FILE\" 2>&1",
                                                     executable, "run", "--config", configPath],
                                         environment: (environment ?? [:]).merging(["STAPLEGATE_LOG_FILE": logFile]) { $1 })
        } else {
            process = try ManagedProcess(executable, ["run", "--config", configPath], environment: environment)
        }
        let gateway = StapleGateProcess(port: port, adminPort: nil, configPath: configPath, stateDirectory: state,
                                        process: process, logFile: logFile)
        // In either log format: the JSON one has the message as a string field.
        try await gateway.waitForOutput("listening for devices", timeout: .seconds(20))
        guard !admin.contains("enabled: false") else { return gateway }
        try await gateway.waitForOutput(adminLogLine, timeout: .seconds(20))
        return StapleGateProcess(port: port, adminPort: Self.adminPort(in: gateway.output), configPath: configPath,
                                 stateDirectory: state, process: process, logFile: logFile)
    }

    static let adminLogLine = "admin listening on "

    /// The port of the last "admin listening on 127.0.0.1:PORT" line of `output`.
    static func adminPort(in output: String) -> Int? {
        guard let line = output.split(separator: "\n").last(where: { $0.contains(adminLogLine) }),
              let address = line.range(of: adminLogLine).map({ line[$0.upperBound...] }),
              let colon = address.lastIndex(of: ":") else { return nil }
        return Int(address[address.index(after: colon)...].prefix { $0.isNumber })
    }

    private init(port: Int, adminPort: Int?, configPath: String, stateDirectory: String, process: ManagedProcess,
                 logFile: String?) {
        self.port = port
        self.adminPort = adminPort
        self.configPath = configPath
        self.stateDirectory = stateDirectory
        self.process = process
        self.logFile = logFile
    }

    /// SIGTERM, and waits for the exit.
    func stop() async {
        await process.terminate()
    }

    func waitForOutput(_ text: String, timeout: Duration = .seconds(15)) async throws {
        guard logFile != nil else { return try await process.waitForOutput(text, timeout: timeout) }
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(50), "\"\(text)\" in the gateway's log", details: { self.output }) {
            guard self.process.isRunning else { throw ManagedProcess.LaunchError(command: "staplegate run", reason: "exited\n\(self.output)") }
            return self.output.contains(text)
        }
    }

    /// Runs `staplegate <arguments>` (e.g. ["ocsp", "recheck", "--serial", …]) against this
    /// gateway's state directory.
    func command(_ arguments: [String], timeout: Duration = .seconds(20)) async throws -> CommandResult {
        let executable = try CommandLineTests.findExecutable()
        return try await ManagedProcess(executable, arguments + ["--state-dir", stateDirectory]).commandResult(timeout: timeout)
    }
}
