import ArgumentParser
import Foundation
import StapleGateConfig
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
            let path = "\(directory)/ocsp-cache.sqlite"
            guard FileManager.default.fileExists(atPath: path) else {
                throw CommandFailure(message: "the gateway is not running and \(path) does not exist")
            }
            FileHandle.standardError.write(Data("staplegate: the gateway is not running; showing the persisted cache\n".utf8))
            entries = try OCSPCacheStore(path: path).loadAll(notExpiredAt: Date()).map(\.listing)
        }
        if json {
            print(String(decoding: try StaplePersistence.encoder.encode(entries), as: UTF8.self))
        } else if entries.isEmpty {
            print("no cached device statuses")
        } else {
            print(entries.map(Self.describe).joined(separator: "\n"))
        }
    }

    static func describe(_ entry: CachedOCSPStatus.Listing) -> String {
        func date(_ value: Date?) -> String { value.map { ISO8601DateFormatter().string(from: $0) } ?? "-" }
        var status = entry.status
        if let revokedAt = entry.revokedAt {
            status += " at \(date(revokedAt))" + (entry.revocationReason.map { " (\($0))" } ?? "")
        }
        if let failure = entry.failure { status += ": \(failure)" }
        return "\(entry.serial)  \(entry.subject)  \(status)  checked \(date(entry.checkedAt))  until \(date(entry.expiresAt))"
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
        abstract: "Ask the OCSP responder again about a device now, and cut its sessions if it is revoked.",
        discussion: """
            The gateway forgets what it cached for the certificate (so its next connect asks the responder too), \
            rechecks every connected session with it, and closes those a new connection would be refused for. \
            Exits 0 when the device is accepted or not connected, 3 when its sessions were closed.
            """
    )

    @OptionGroup var state: StateDirectoryOptions

    @Option(name: .long, help: "The certificate serial number, in hex (as `openssl x509 -serial` prints it).")
    var serial: String?

    @Option(name: .long, help: "The device identity (certificate CN), instead of --serial.")
    var device: String?

    func validate() throws {
        guard (serial == nil) != (device == nil) else { throw ValidationError("give either --serial or --device") }
        if let serial, serial.isEmpty || !serial.allSatisfy(\.isHexDigit) {
            throw ValidationError("--serial must be hexadecimal, e.g. 5B1F03A2")
        }
    }

    func run() async throws {
        let query = serial.map { "serial=\($0)" } ?? "device=\(device!.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")"
        let (status, body): (Int, [UInt8])
        do {
            (status, body) = try await ControlClient.send(method: .POST, target: "/ocsp/recheck?\(query)",
                                                          socketPath: try state.controlSocket())
        } catch let failure as ControlClient.Failure {
            throw CommandFailure(message: failure.description)
        }
        guard status == 200 else { throw CommandFailure(message: OCSPCacheCommand.errorText(body)) }
        let results = try JSONDecoder().decode([SessionRevocationMonitor.RecheckResult].self, from: Data(body))
        if results.isEmpty {
            print("no connected device with \(serial.map { "serial \($0)" } ?? "identity \(device!)"); its cached status was dropped, so its next connect asks the responder")
            return
        }
        for result in results {
            let action = result.refused ? "refused: closed \(result.sessionsClosed) session(s)" : "accepted"
            print("\(result.serial)  \(result.device)  \(action)  (\(result.verdict))")
        }
        if results.contains(where: \.refused) { throw ExitCode(3) }
    }
}

/// A failure the command reports in one line on stderr, exiting 1.
struct CommandFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
