import Foundation
import TestSupport
import XCTest

/// The real `staplegate` binary, as an operator or a service manager runs it: its subcommands,
/// its exit statuses (0, 78 for EX_CONFIG, non-zero otherwise), its messages, and `run` relaying
/// a device to the broker until SIGTERM or SIGINT.
final class CommandLineTests: GatewayTestCase {
    private var executable: String!

    override func setUp() async throws {
        try await super.setUp()
        executable = try Self.findExecutable()
    }

    /// `swift test` builds the `staplegate` product into the folder that holds the test bundle.
    static func findExecutable() throws -> String {
        // `make soak` runs the release build, as operators do.
        if let chosen = ProcessInfo.processInfo.environment["STAPLEGATE_EXECUTABLE"], !chosen.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: chosen) else {
                throw SetupFailure("STAPLEGATE_EXECUTABLE=\(chosen) is not an executable file")
            }
            return chosen
        }
        let bundle = Bundle(for: CommandLineTests.self).bundleURL
        let folders = [bundle.deletingLastPathComponent(), bundle, Bundle.main.bundleURL,
                       Bundle.main.executableURL?.deletingLastPathComponent()].compactMap { $0 }
        let candidates = folders.map { $0.appendingPathComponent("staplegate").path }
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw SetupFailure(
                "the staplegate executable is not next to the test bundle (looked for \(candidates.joined(separator: ", "))); "
                    + "build it with `swift build --product staplegate` or run the tests with `swift test`")
        }
        return found
    }

    private func staplegate(_ arguments: [String], in directory: String? = nil,
                            timeout: Duration = .seconds(20)) async throws -> CommandResult {
        try await ManagedProcess(executable, arguments, currentDirectory: directory).commandResult(timeout: timeout)
    }

    /// A complete configuration: listen on 127.0.0.1:`listenPort`, forward to the class's broker.
    private func configuration(listenPort: Int, certificate: String, key: String, deviceCA: String,
                               extraTLS: [String] = []) -> String {
        """
        # Written by CommandLineTests.
        listen:
          address: "127.0.0.1"
          port: \(listenPort)
        tls:
          certificates:
            - certificate: "\(certificate)"
              key: "\(key)"
          device_ca: "\(deviceCA)"
        \(extraTLS.map { "  \($0)\n" }.joined())  handshake_timeout: 10s
        upstream:
          address: 127.0.0.1
          port: \(broker.port!)
          connect_timeout: 5s
        logging:
          level: info
        # Beside this file, never in the machine's /var/lib.
        state_directory: state
        # No OCSP responder runs for these tests (DeviceRevocationTests cover device checks).
        device_ocsp: { enabled: false }
        # Any free port: gateways of parallel test runs never compete for the default one.
        admin: { port: 0 }

        """
    }

    /// The demo PKI's server certificate and key, with absolute paths.
    private func goodConfiguration(listenPort: Int = 0, extraTLS: [String] = []) -> String {
        configuration(listenPort: listenPort, certificate: pki.certificate("server"), key: pki.key("server"),
                      deviceCA: pki.caChain, extraTLS: extraTLS)
    }

    /// 1-based number of the first line of `text` containing `needle`.
    private func line(of needle: String, in text: String) throws -> Int {
        let lines = text.components(separatedBy: "\n")
        return try XCTUnwrap(lines.firstIndex { $0.contains(needle) }, "no \"\(needle)\" in\n\(text)") + 1
    }

    // MARK: version and help

    func testVersionNamesItselfAndTheOpenSSLInUse() async throws {
        let result = try await staplegate(["version"])

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        let output = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertNotNil(output.range(of: #"^staplegate \d+\.\d+\.\d+ "#, options: .regularExpression), output)
        XCTAssertTrue(output.contains("OpenSSL 3."), output)
        // The same library the system's openssl command runs on.
        let openssl = try await ManagedProcess("openssl", ["version"]).waitForOutputText()
        let library = try XCTUnwrap(openssl.range(of: #"OpenSSL 3\.\d+\.\d+"#, options: .regularExpression).map { openssl[$0] })
        XCTAssertTrue(output.contains(library), "\(output) vs openssl version: \(openssl)")
    }

    func testHelpListsSubcommandsAndRunTakesConfig() async throws {
        let help = try await staplegate(["--help"])
        XCTAssertEqual(help.status, .exited(0), "\(help)")
        for subcommand in ["run", "check-config", "version"] {
            XCTAssertNotNil(help.stdout.range(of: #"(?m)^\s+\#(subcommand)\s"#, options: .regularExpression),
                            "--help does not list \(subcommand):\n\(help)")
        }

        let runHelp = try await staplegate(["run", "--help"])
        XCTAssertEqual(runHelp.status, .exited(0), "\(runHelp)")
        XCTAssertTrue(runHelp.stdout.contains("--config"), "\(runHelp)")
    }

    /// Negative counterparts: usage mistakes fail, name the mistake, and are not EX_CONFIG.
    func testUsageErrorsFailWithMessage() async throws {
        let unknown = try await staplegate(["frobnicate"])
        XCTAssertNotEqual(unknown.status, .exited(0), "\(unknown)")
        XCTAssertNotEqual(unknown.status, .exited(78), "\(unknown)")
        XCTAssertTrue(unknown.stderr.contains("frobnicate"), "\(unknown)")

        let noConfig = try await staplegate(["run"])
        XCTAssertNotEqual(noConfig.status, .exited(0), "\(noConfig)")
        XCTAssertTrue(noConfig.stderr.contains("--config"), "\(noConfig)")
    }

    // MARK: check-config

    func testCheckConfigSummarisesGoodConfiguration() async throws {
        let directory = try makeTemporaryDirectory()
        let path = try directory.write("good.yaml", goodConfiguration())
        let serial = try await ManagedProcess("openssl", ["x509", "-in", pki.certificate("server"), "-noout", "-serial"])
            .waitForOutputText().replacingOccurrences(of: "serial=", with: "")
        let subject = try await ManagedProcess("openssl", ["x509", "-in", pki.certificate("server"), "-noout", "-subject",
                                                           "-nameopt", "RFC2253"])
            .waitForOutputText().replacingOccurrences(of: "subject=", with: "")

        let result = try await staplegate(["check-config", "--config", path])

        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertTrue(result.stdout.contains("configuration OK"), "\(result)")
        let server = try XCTUnwrap(result.stdout.components(separatedBy: "\n").first { $0.contains("server:") }, "\(result)")
        XCTAssertTrue(server.contains("ECDSA \(subject)"), "\(server) (expected subject \(subject))")
        XCTAssertTrue(server.contains("serial \(serial)"), "\(server) (expected serial \(serial))")
        XCTAssertTrue(result.stdout.contains("upstream:  127.0.0.1:\(broker.port!)"), "\(result)")
        XCTAssertTrue(result.stdout.contains("fleet:     sqlite "), "\(result)")
        XCTAssertTrue(result.stdout.contains("ocsp-cache.sqlite (this gateway only)"), "\(result)")
        XCTAssertFalse(result.stderr.contains("error"), "\(result)")
    }

    func testCheckConfigRefusesKeyOfAnotherCertificate() async throws {
        let directory = try makeTemporaryDirectory()
        let text = configuration(listenPort: 0, certificate: pki.certificate("server"), key: pki.key("device-1"),
                                 deviceCA: pki.caChain)
        let path = try directory.write("wrong-key.yaml", text)

        let result = try await staplegate(["check-config", "--config", path])

        XCTAssertEqual(result.status, .exited(78), "\(result)")
        let keyLine = try line(of: "key: ", in: text)
        XCTAssertTrue(result.stderr.contains("\(path):\(keyLine): tls.certificates[0].key:"), "\(result)")
        XCTAssertTrue(result.stderr.contains(pki.key("device-1")), "\(result)")
        XCTAssertTrue(result.stderr.contains("does not match"), "\(result)")
        XCTAssertFalse(result.stdout.contains("configuration OK"), "\(result)")
    }

    func testCheckConfigRefusesUnknownKeyAndSuggestsTheRealOne() async throws {
        let directory = try makeTemporaryDirectory()
        let text = goodConfiguration(extraTLS: [#"min_verison: "1.3""#])
        let path = try directory.write("typo.yaml", text)

        let result = try await staplegate(["check-config", "--config", path])

        XCTAssertEqual(result.status, .exited(78), "\(result)")
        let typoLine = try line(of: "min_verison", in: text)
        XCTAssertTrue(result.stderr.contains("\(path):\(typoLine): tls.min_verison:"), "\(result)")
        XCTAssertTrue(result.stderr.contains(#"did you mean "min_version""#), "\(result)")
    }

    func testCheckConfigRefusesMissingFile() async throws {
        let path = try makeTemporaryDirectory().file("nowhere.yaml")

        let result = try await staplegate(["check-config", "--config", path])

        XCTAssertEqual(result.status, .exited(78), "\(result)")
        XCTAssertTrue(result.stderr.contains(path), "\(result)")
        XCTAssertTrue(result.stderr.contains("no such file"), "\(result)")
    }

    /// Relative paths are taken from the configuration file's folder, wherever staplegate runs from.
    func testRelativePathsResolveFromTheConfigurationFolder() async throws {
        let directory = try makeTemporaryDirectory()
        let certs = try directory.subdirectory("certs")
        let conf = try directory.subdirectory("conf")
        for name in ["server.pem", "server.key", "ca-chain.pem"] {
            try FileManager.default.copyItem(atPath: pki.path(name), toPath: "\(certs)/\(name)")
        }
        let fromConfigFolder = try directory.write("conf/staplegate.yaml", configuration(
            listenPort: 0, certificate: "../certs/server.pem", key: "../certs/server.key", deviceCA: "../certs/ca-chain.pem"))

        let accepted = try await staplegate(["check-config", "--config", fromConfigFolder], in: "/")
        XCTAssertEqual(accepted.status, .exited(0), "\(accepted)")
        XCTAssertTrue(accepted.stdout.contains("configuration OK"), "\(accepted)")

        // Negative: paths that would only be right from the working directory are not found.
        let fromWorkingDirectory = try directory.write("conf/cwd-relative.yaml", configuration(
            listenPort: 0, certificate: "certs/server.pem", key: "certs/server.key", deviceCA: "certs/ca-chain.pem"))
        let refused = try await staplegate(["check-config", "--config", fromWorkingDirectory], in: directory.path)
        XCTAssertEqual(refused.status, .exited(78), "\(refused)")
        XCTAssertTrue(refused.stderr.contains("tls.certificates[0].certificate"), "\(refused)")
        XCTAssertTrue(refused.stderr.contains("\(conf)/certs/server.pem"), "\(refused)")
    }

    // MARK: run

    /// Starts `staplegate run` and waits until it listens on `port`.
    private func startRun(configPath: String, port: Int, in directory: String? = nil) async throws -> ManagedProcess {
        let process = try ManagedProcess(executable, ["run", "--config", configPath], currentDirectory: directory)
        try await process.waitForOutput("listening for devices", timeout: .seconds(20))
        XCTAssertNoThrow(try RawTCPClient(port: port).closeSocket(), "staplegate logged that it listens, but \(port) refuses")
        return process
    }

    func testRunRelaysDevicesAndExitsCleanlyOnSIGTERM() async throws {
        let port = try FreePort.next()
        let path = try makeTemporaryDirectory().write("staplegate.yaml", goodConfiguration(listenPort: port))
        let gateway = try await startRun(configPath: path, port: port)
        let topic = uniqueTopic("cli/run")
        let subscriber = try await MosquittoSubscriber.start(.broker(broker), broker: broker, topic: topic)

        let publish = try await mosquittoPub(port: port, pki: pki, device: "device-1", topic: topic, message: "via the binary")

        XCTAssertEqual(publish.status, .exited(0), "\(publish)\n\(gateway.output)")
        let messages = try await subscriber.waitForMessages(1)
        XCTAssertEqual(messages.map(\.payload), ["via the binary"])
        try await gateway.waitForOutput("TLS handshake completed", timeout: .seconds(5))

        gateway.signal(SIGTERM)
        let status = try await gateway.waitForExit(timeout: .seconds(10))
        XCTAssertEqual(status, .exited(0), gateway.output)
        XCTAssertTrue(gateway.stderr.contains("stopped"), gateway.output)
        XCTAssertThrowsError(try RawTCPClient(port: port), "127.0.0.1:\(port) still accepts after staplegate exited")
    }

    /// SIGINT (Ctrl-C) too, with a device session still open, and a configuration with relative paths.
    func testRunExitsCleanlyOnSIGINTWithOpenSession() async throws {
        let port = try FreePort.next()
        let directory = try makeTemporaryDirectory()
        for name in ["server.pem", "server.key", "ca-chain.pem"] {
            try FileManager.default.copyItem(atPath: pki.path(name), toPath: directory.file(name))
        }
        let path = try directory.write("staplegate.yaml", configuration(
            listenPort: port, certificate: "server.pem", key: "server.key", deviceCA: "ca-chain.pem"))
        let gateway = try await startRun(configPath: path, port: port, in: "/")
        let subscriber = try await MosquittoSubscriber.start(.gateway(port: port, pki: pki, device: "device-2"),
                                                             broker: broker, topic: uniqueTopic("cli/sigint"))

        gateway.signal(SIGINT)
        let status = try await gateway.waitForExit(timeout: .seconds(10))

        XCTAssertEqual(status, .exited(0), gateway.output)
        XCTAssertThrowsError(try RawTCPClient(port: port), "127.0.0.1:\(port) still accepts after staplegate exited")
        // The open session was closed with it.
        try await broker.waitForLog("Client \(subscriber.clientID) closed its connection.")
    }

    /// One event loop per core it may run on: under `taskset` (as under systemd's CPUAffinity=)
    /// one loop on one core, not one per core of the machine.
    func testRunSizesItsEventLoopsToTheCoresItMayRunOn() async throws {
        let path = try makeTemporaryDirectory().write("staplegate.yaml", goodConfiguration(listenPort: 0))
        var cases = [("0", 1)]
        if ProcessInfo.processInfo.activeProcessorCount >= 2 { cases.append(("0,1", 2)) }
        for (cores, loops) in cases {
            let gateway = try ManagedProcess("taskset", ["--cpu-list", cores, executable, "run", "--config", path])
            try await gateway.waitForOutput("listening for devices", timeout: .seconds(20))
            XCTAssertTrue(gateway.stderr.contains("event_loops=\(loops) "), "on cores \(cores):\n\(gateway.output)")
            gateway.signal(SIGTERM)
            _ = try await gateway.waitForExit(timeout: .seconds(10))
        }
    }

    func testRunWithBadConfigurationExits78WithoutListening() async throws {
        let port = try FreePort.next()
        let path = try makeTemporaryDirectory().write("wrong-key.yaml", configuration(
            listenPort: port, certificate: pki.certificate("server"), key: pki.key("device-1"), deviceCA: pki.caChain))

        let result = try await staplegate(["run", "--config", path])

        XCTAssertEqual(result.status, .exited(78), "\(result)")
        XCTAssertTrue(result.stderr.contains("configuration error"), "\(result)")
        XCTAssertTrue(result.stderr.contains("tls.certificates[0].key"), "\(result)")
        XCTAssertFalse(result.stderr.contains("listening for devices"), "\(result)")
        XCTAssertThrowsError(try RawTCPClient(port: port), "something listens on \(port)")
    }

    func testRunOnPortInUseFailsNamingTheAddress() async throws {
        let occupied = try ListeningSocket()
        defer { occupied.close() }
        let path = try makeTemporaryDirectory().write("staplegate.yaml", goodConfiguration(listenPort: occupied.port))

        let result = try await staplegate(["run", "--config", path])

        guard case let .exited(code) = result.status, code != 0 else {
            return XCTFail("expected a non-zero exit status: \(result)")
        }
        XCTAssertNotEqual(code, 78, "a busy port is not a configuration error: \(result)")
        XCTAssertTrue(result.stderr.contains("cannot listen on 127.0.0.1:\(occupied.port)"), "\(result)")
        XCTAssertFalse(result.stderr.contains("listening for devices"), "\(result)")
    }
}

private extension ManagedProcess {
    /// Waits for a short-lived command that must succeed and returns its stdout, trimmed.
    func waitForOutputText(timeout: Duration = .seconds(10)) async throws -> String {
        let result = try await commandResult(timeout: timeout)
        guard result.status.succeeded else { throw SetupFailure("\(commandLine) failed: \(result)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Something the test needs is missing or broken (not what the test is about).
private struct SetupFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
