import ArgumentParser
import Foundation
import StapleGateConfig
import StapleGateOCSP
import StapleGateServer

struct OCSPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocsp",
        abstract: "Inspect and act on the OCSP state of the running gateway.",
        subcommands: [OCSPStatusCommand.self, OCSPCacheCommand.self, OCSPRecheckCommand.self]
    )
}

struct OCSPStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each server certificate's OCSP staple: status, validity, last fetch, next refresh.",
        discussion: "Reads ocsp-status.json, which the running gateway rewrites in its state directory after every change."
    )

    @OptionGroup var state: StateDirectoryOptions

    @Flag(name: .long, help: "Print the status as JSON.")
    var json = false

    func run() async throws {
        let directory = try state.directory()
        let persistence = StaplePersistence(directory: directory)
        guard FileManager.default.fileExists(atPath: persistence.statusFile) else {
            FileHandle.standardError.write(Data("staplegate: no OCSP status in \(directory) (is the gateway running with stapling on, with this state directory?)\n".utf8))
            throw ExitCode.failure
        }
        let statuses = try persistence.loadStatus()
        // The file outlives the gateway: say so rather than show a stopped gateway's staples as live.
        if (try? await ControlClient.send(method: .GET, target: "/ping", socketPath: "\(directory)/control.sock")) == nil {
            let written = (try? FileManager.default.attributesOfItem(atPath: persistence.statusFile)[.modificationDate] as? Date)
                .map { ISO8601DateFormatter().string(from: $0) } ?? "an unknown time"
            FileHandle.standardError.write(Data("staplegate: the gateway is not running: this is the status it last wrote, at \(written); nothing is being refreshed\n".utf8))
        }
        if json {
            print(String(decoding: try StaplePersistence.encoder.encode(statuses), as: UTF8.self))
        } else {
            print(statuses.map(Self.describe).joined(separator: "\n\n"))
        }
    }

    static func describe(_ status: StapleStatus) -> String {
        func date(_ value: Date?) -> String { value.map { ISO8601DateFormatter().string(from: $0) } ?? "-" }
        var lines = ["\(status.subject)  (serial \(status.serial))"]
        var certStatus = status.certStatus
        if let revokedAt = status.revokedAt {
            certStatus += " at \(date(revokedAt))" + (status.revocationReason.map { " (\($0))" } ?? "")
        }
        lines.append("  responder:     \(status.responderURL)")
        lines.append("  policy:        \(status.policy)")
        lines.append("  cert status:   \(certStatus)\(status.serving ? ", stapled" : ", NOT stapled")")
        lines.append("  this update:   \(date(status.thisUpdate))")
        lines.append("  next update:   \(date(status.nextUpdate))")
        lines.append("  produced at:   \(date(status.producedAt))  by \(status.responderID ?? "-")")
        lines.append("  last fetch:    \(date(status.lastFetch))  \(status.lastResult ?? "")")
        lines.append("  next refresh:  \(date(status.nextRefresh))")
        lines.append("  failures:      \(status.consecutiveFailures) in a row")
        return lines.joined(separator: "\n")
    }
}
