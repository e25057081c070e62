import Foundation
import StapleGateConfig
import TestSupport
import XCTest

/// The shipped systemd files (systemd/staplegate.service and the Mosquitto drop-in
/// systemd/mosquitto.service.d/staplegate-loopback.conf), read by systemd itself:
/// `systemd-analyze verify` must accept both without a word, and the unit must ask for what the
/// binary relies on (notify protocol, watchdog, reload on SIGHUP, a sandbox, enough descriptors).
final class SystemdUnitTests: XCTestCase {
    static let unitFile = Repository.path("systemd/staplegate.service")
    static let dropInFile = Repository.path("systemd/mosquitto.service.d/staplegate-loopback.conf")

    func testTheUnitAndTheMosquittoDropInPassSystemdAnalyzeVerify() async throws {
        let root = try await makeVerificationRoot()
        let result = try await root.verify(["staplegate.service", "mosquitto.service"])
        XCTAssertEqual(result.status, .exited(0), "\(result)")
        XCTAssertEqual(VerificationRoot.complaints(in: result), [], "\(result)")
    }

    /// Negative controls: the check above can fail. systemd merely warns about an unknown key and
    /// still exits 0, which is why complaints are looked for and not only the exit status.
    func testAMisspelledDirectiveInEitherFileIsReported() async throws {
        let misspeltUnit = try String(contentsOfFile: Self.unitFile, encoding: .utf8)
            .replacingOccurrences(of: "\nNoNewPrivileges=yes\n", with: "\nNoNewPrivilege=yes\n")
        let unitRoot = try await makeVerificationRoot(unit: misspeltUnit)
        let unitResult = try await unitRoot.verify(["staplegate.service"])
        XCTAssertEqual(unitResult.status, .exited(0), "systemd only warns about unknown keys: \(unitResult)")
        XCTAssertTrue(VerificationRoot.complaints(in: unitResult).contains {
            $0.contains("staplegate.service:") && $0.contains("Unknown key 'NoNewPrivilege' in section [Service]")
        }, "\(unitResult)")

        let misspeltDropIn = try String(contentsOfFile: Self.dropInFile, encoding: .utf8)
            .replacingOccurrences(of: "\nIPAddressDeny=any\n", with: "\nIPAdressDeny=any\n")
        let dropInRoot = try await makeVerificationRoot(dropIn: misspeltDropIn)
        let dropInResult = try await dropInRoot.verify(["mosquitto.service"])
        XCTAssertTrue(VerificationRoot.complaints(in: dropInResult).contains {
            $0.contains("staplegate-loopback.conf:") && $0.contains("Unknown key 'IPAdressDeny' in section [Service]")
        }, "\(dropInResult)")
    }

    /// And a unit whose binary is not where ExecStart= says fails outright: the root really is
    /// where systemd looks for it.
    func testAMissingBinaryFailsVerification() async throws {
        let root = try await makeVerificationRoot(installBinary: false)
        let result = try await root.verify(["staplegate.service"])
        XCTAssertNotEqual(result.status, .exited(0), "\(result)")
        XCTAssertTrue(result.output.contains("Command /usr/local/bin/staplegate is not executable"), "\(result)")
    }

    func testTheUnitRunsTheGatewayAsAWatchedNotifyServiceInASandbox() throws {
        let unit = try UnitFile(path: Self.unitFile)
        XCTAssertEqual(unit.values("Service", "Type"), ["notify"])
        XCTAssertEqual(unit.values("Service", "NotifyAccess"), ["main"])
        let watchdog = try XCTUnwrap(unit.values("Service", "WatchdogSec").last.flatMap(UnitFile.seconds))
        XCTAssertGreaterThan(watchdog, 0, "the watchdog is off")
        XCTAssertEqual(unit.values("Service", "ExecReload").last, "/bin/kill -HUP $MAINPID")
        XCTAssertEqual(unit.values("Service", "ExecStart"), ["/usr/local/bin/staplegate run --config /etc/staplegate/staplegate.yaml"])
        XCTAssertEqual(unit.values("Service", "Restart"), ["on-failure"])
        XCTAssertEqual(unit.values("Service", "RestartPreventExitStatus"), ["78"])
        // The configuration's default state_directory is the one systemd creates for the user.
        XCTAssertEqual(unit.values("Service", "User"), ["staplegate"])
        XCTAssertEqual(unit.values("Service", "DynamicUser"), [])
        XCTAssertEqual(unit.values("Service", "StateDirectory").map { "/var/lib/\($0)" },
                       [GatewayConfiguration.defaultStateDirectory])
        XCTAssertEqual(unit.values("Service", "ProtectSystem"), ["strict"])
        XCTAssertEqual(unit.values("Service", "NoNewPrivileges"), ["yes"])
        XCTAssertEqual(unit.values("Service", "CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"])
        XCTAssertEqual(unit.values("Service", "AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"])
        // Two descriptors per session: room for a large fleet, not the default 1024.
        let files = try XCTUnwrap(unit.values("Service", "LimitNOFILE").last.flatMap { Int($0) })
        XCTAssertGreaterThanOrEqual(files, 65536)
        // Longer than the default drain grace period (30 s), or the drain is cut short by SIGKILL.
        let stopTimeout = try XCTUnwrap(unit.values("Service", "TimeoutStopSec").last.flatMap(UnitFile.seconds))
        XCTAssertGreaterThan(stopTimeout, 30)
        XCTAssertTrue(unit.values("Unit", "Wants").joined(separator: " ").split(separator: " ").contains("mosquitto.service"))
        XCTAssertTrue(unit.values("Unit", "After").joined(separator: " ").split(separator: " ").contains("mosquitto.service"))

        let dropIn = try UnitFile(path: Self.dropInFile)
        XCTAssertEqual(dropIn.values("Service", "IPAddressDeny"), ["any"])
        XCTAssertEqual(dropIn.values("Service", "IPAddressAllow"), ["localhost"])
    }

    // MARK: - Helpers

    /// A verification root (see `VerificationRoot`) holding the shipped files, or the given texts
    /// in their place; skips when systemd-analyze is not installed.
    private func makeVerificationRoot(unit: String? = nil, dropIn: String? = nil,
                                      installBinary: Bool = true) async throws -> VerificationRoot {
        guard FileManager.default.isExecutableFile(atPath: VerificationRoot.systemdAnalyze) else {
            throw XCTSkip("\(VerificationRoot.systemdAnalyze) is not installed (Debian package systemd, see `make deps`); the unit files are not verified")
        }
        let directory = try TemporaryDirectory(prefix: "systemd-root")
        addTeardownBlock { directory.remove() }
        return try VerificationRoot(
            directory: directory,
            unit: try unit ?? String(contentsOfFile: Self.unitFile, encoding: .utf8),
            dropIn: try dropIn ?? String(contentsOfFile: Self.dropInFile, encoding: .utf8),
            gatewayBinary: installBinary ? try CommandLineTests.findExecutable() : nil)
    }
}

/// A directory laid out like the root of a machine where StapleGate is installed, for
/// `systemd-analyze verify --root=`: the host's own unit files (the targets every service
/// depends on, and the Debian package's mosquitto.service), our unit and drop-in in
/// /etc/systemd/system as an operator would install them, and every program their Exec*= lines
/// name, at the same path (the built gateway as /usr/local/bin/staplegate). The files are thus
/// verified unchanged, with nothing substituted.
private struct VerificationRoot {
    static let systemdAnalyze = "/usr/bin/systemd-analyze"
    static let gatewayPath = "/usr/local/bin/staplegate"
    let path: String

    init(directory: TemporaryDirectory, unit: String, dropIn: String, gatewayBinary: String?) throws {
        path = directory.path
        let fileManager = FileManager.default
        // /lib is a link to /usr/lib on current Debian; systemd looks in both.
        let hostUnits = URL(fileURLWithPath: "/lib/systemd/system").resolvingSymlinksInPath().path
        guard fileManager.fileExists(atPath: "\(hostUnits)/mosquitto.service") else {
            throw VerificationRootError("no \(hostUnits)/mosquitto.service: install the Debian package mosquitto (`make deps`)")
        }
        try fileManager.createDirectory(atPath: "\(path)/usr/lib/systemd", withIntermediateDirectories: true)
        try fileManager.copyItem(atPath: hostUnits, toPath: "\(path)/usr/lib/systemd/system")
        let system = "\(path)/etc/systemd/system"
        try fileManager.createDirectory(atPath: "\(system)/mosquitto.service.d", withIntermediateDirectories: true)
        try unit.write(toFile: "\(system)/staplegate.service", atomically: true, encoding: .utf8)
        try dropIn.write(toFile: "\(system)/mosquitto.service.d/staplegate-loopback.conf", atomically: true, encoding: .utf8)

        let mosquittoUnit = try String(contentsOfFile: "\(hostUnits)/mosquitto.service", encoding: .utf8)
        let programs = Set([unit, dropIn, mosquittoUnit].flatMap(UnitFile.executables(in:)))
        for program in programs {
            if program == Self.gatewayPath {
                if let gatewayBinary { try install(gatewayBinary, at: program) }
            } else {
                try install(program, at: program)
            }
        }
    }

    /// A hard link where possible (the debug binary is large), else a copy.
    private func install(_ source: String, at target: String) throws {
        let destination = path + target
        try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        let real = URL(fileURLWithPath: source).resolvingSymlinksInPath().path
        if link(real, destination) != 0 { try FileManager.default.copyItem(atPath: real, toPath: destination) }
    }

    func verify(_ units: [String]) async throws -> CommandResult {
        try await ManagedProcess(Self.systemdAnalyze, ["verify", "--root=\(path)"] + units)
            .commandResult(timeout: .seconds(30))
    }

    /// What systemd-analyze said about our files or the units they configure (it says nothing
    /// about a good file). The host's other units are not ours to judge, so lines about them are
    /// left out.
    static func complaints(in result: CommandResult) -> [String] {
        result.output.split(separator: "\n").map(String.init).filter { line in
            ["staplegate", "mosquitto"].contains { line.contains($0) }
        }
    }
}

/// A systemd unit file (or drop-in), read as systemd's INI dialect: [Section] headers and
/// Key=Value lines; # and ; start comments. Values are kept in order (some keys repeat).
struct UnitFile {
    private var entries: [(section: String, key: String, value: String)] = []

    init(path: String) throws {
        self.init(text: try String(contentsOfFile: path, encoding: .utf8))
    }

    init(text: String) {
        var section = ""
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
            } else if let equals = line.firstIndex(of: "=") {
                entries.append((section, line[..<equals].trimmingCharacters(in: .whitespaces),
                                line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)))
            }
        }
    }

    func values(_ section: String, _ key: String) -> [String] {
        entries.filter { $0.section == section && $0.key == key }.map(\.value)
    }

    /// The programs of every Exec*= line, without systemd's prefixes (-, @, :, +, !).
    static func executables(in text: String) -> [String] {
        UnitFile(text: text).entries.filter { $0.key.hasPrefix("Exec") }.compactMap { entry in
            let command = entry.value.drop { "-@:+!".contains($0) }
            return command.split(separator: " ").first.map(String.init).flatMap { $0.hasPrefix("/") ? $0 : nil }
        }
    }

    /// systemd time spans of the forms the unit uses: "30s", "2min", "45" (seconds).
    static func seconds(_ text: String) -> Double? {
        if let value = Double(text) { return value }
        if text.hasSuffix("min"), let value = Double(text.dropLast(3)) { return value * 60 }
        if text.hasSuffix("s"), let value = Double(text.dropLast()) { return value }
        return nil
    }
}

private struct VerificationRootError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
