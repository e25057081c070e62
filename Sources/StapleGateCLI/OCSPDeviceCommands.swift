import ArgumentParser
import Foundation
import Logging
import StapleGateConfig
import StapleGateFleet
import StapleGateOCSP
import StapleGateServer

/// Where the gateway keeps its state, from --config or --state-dir.
struct StateDirectoryOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The gateway's YAML configuration file (to find its state directory).")
    var config: String?

    @Option(name: .customLong("state-dir"), help: "The state directory, instead of reading it from --config.")
    var stateDirectory: String?

    func validate() throws {
        guard (config == nil) != (stateDirectory == nil) else {
            throw ValidationError("give either --config or --state-dir")
        }
    }

    func directory() throws -> String {
        try stateDirectory ?? loadConfigurationOrExit(path: config!).configuration.stateDirectory
    }

    func controlSocket() throws -> String { "\(try directory())/control.sock" }
}

struct OCSPCacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "List the device certificate statuses the gateway has cached.",
        discussion: "Asks the running gateway; when it is not running, reads the persisted cache (answers only) instead."
    )

    @OptionGroup var state: StateDirectoryOptions

    @Flag(name: .long, help: "Print the entries as JSON.")
    var json = false

    func run() async throws {
        let directory = try state.directory()
        var entries: [CachedOCSPStatus.Listing]
        do {
            let (status, body) = try await ControlClient.send(method: .GET, target: "/ocsp/cache", socketPath: "\(directory)/control.sock")
            guard status == 200 else { throw CommandFailure(message: Self.errorText(body)) }
            entries = try Self.decoder.decode([CachedOCSPStatus.Listing].self, from: Data(body))
        } catch is ControlClient.Failure {
            entries = try persistedEntries(directory: directory)
        }
        if json {
            print(String(decoding: try StaplePersistence.encoder.encode(entries), as: UTF8.self))
        } else if entries.isEmpty {
            print("no cached device statuses")
        } else {
            print(entries.map(Self.describe).joined(separator: "\n"))
        }
    }

    /// With the gateway stopped: what its store holds — the state directory's file, or, in a
    /// fleet (`--config` naming `fleet.store: postgres`), the fleet's shared table.
    private func persistedEntries(directory: String) throws -> [CachedOCSPStatus.Listing] {
        let logger = Logger(label: "staplegate")
        let database = try state.config.flatMap { try loadConfigurationOrExit(path: $0).configuration.fleet.openDatabase(logger: logger) }
        defer { database?.close() }
        let path = "\(directory)/ocsp-cache.sqlite"
        if let database {
            guard database.readyBlocking(within: .seconds(10), orFirstFailure: true) else {
                throw CommandFailure(message: "the gateway is not running and the fleet database \(database.location) cannot be read (\(database.health))")
            }
        } else if !FileManager.default.fileExists(atPath: path) {
            throw CommandFailure(message: "the gateway is not running and \(path) does not exist")
        }
        let store = try FleetStores.deviceStatus(database: database, sqlitePath: path, logger: logger)
        FileHandle.standardError.write(Data("staplegate: the gateway is not running; showing the persisted cache in \(store.location)\n".utf8))
        return try store.loadAll(notExpiredAt: Date()).map(\.listing)
    }

    static func describe(_ entry: CachedOCSPStatus.Listing) -> String {
        func date(_ value: Date?) -> String { value.map { ISO8601DateFormatter().string(from: $0) } ?? "-" }
        var status = entry.status
        if let revokedAt = entry.revokedAt {
            status += " at \(date(revokedAt))" + (entry.revocationReason.map { " (\($0))" } ?? "")
        }
        if let failure = entry.failure { status += ": \(failure)" }
        let name = entry.identity.map { "\($0)  \(entry.subject)" } ?? entry.subject
        return "\(entry.serial)  \(name)  \(status)  checked \(date(entry.checkedAt))  until \(date(entry.expiresAt))"
    }

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    static func errorText(_ body: [UInt8]) -> String {
        (try? JSONDecoder().decode([String: String].self, from: Data(body)))?["error"] ?? String(decoding: body, as: UTF8.self)
    }
}

struct OCSPRecheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recheck",
        abstract: "Ask the OCSP responder again now about a device, and cut its sessions if it is refused.",
        discussion: """
            Every certificate the running gateway knows for the device or serial (in its status cache, \
            on disk, or connected now) is asked about at its responder right away; the answer replaces \
            what was cached, and the sessions a new connection would be refused for are closed. One line \
            per certificate says what the responder answered and what was done.
            Exit status: 0 every certificate accepted; 3 at least one refused (its sessions closed); \
            4 the gateway knows nothing about the device or serial (nothing was done); 5 none refused, but \
            at least one could not be asked (responder unreachable, CA unknown); 1 the gateway could not be reached.
            """
    )

    static let refusedExitCode: Int32 = 3
    static let nothingKnownExitCode: Int32 = 4
    static let incompleteExitCode: Int32 = 5

    @OptionGroup var state: StateDirectoryOptions

    @Option(name: .long, help: "The certificate serial number in hex (as `openssl x509 -serial` or `-text` prints it).")
    var serial: String?

    @Option(name: .long, help: "The device identity (certificate CN by default, see admission.identity), instead of --serial.")
    var device: String?

    @Flag(name: .long, help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        guard (serial == nil) != (device == nil) else { throw ValidationError("give either --serial or --device") }
        if let serial, let problem = CertificateSelector.serialProblem(serial) {
            throw ValidationError("--serial: \(problem)")
        }
        if let device, device.isEmpty { throw ValidationError("--device needs an identity") }
    }

    func run() async throws {
        let query = serial.map { "serial=\(encode($0))" } ?? "device=\(encode(device!))"
        let (status, body): (Int, [UInt8])
        do {
            (status, body) = try await ControlClient.send(method: .POST, target: "/ocsp/recheck?\(query)",
                                                          socketPath: try state.controlSocket())
        } catch let failure as ControlClient.Failure {
            throw CommandFailure(message: failure.description)
        }
        guard status == 200 else { throw CommandFailure(message: OCSPCacheCommand.errorText(body)) }
        let report = try OCSPCacheCommand.decoder.decode(RecheckReport.self, from: Data(body))
        if json {
            print(String(decoding: try StaplePersistence.encoder.encode(report), as: UTF8.self))
        } else {
            print(report.lines.joined(separator: "\n"))
        }
        switch report.outcome {
        case .accepted: return
        case .refused: throw ExitCode(Self.refusedExitCode)
        case .nothingKnown: throw ExitCode(Self.nothingKnownExitCode)
        case .incomplete: throw ExitCode(Self.incompleteExitCode)
        }
    }

    private func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? text
    }
}

/// A failure the command reports in one line on stderr, exiting 1.
struct CommandFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
