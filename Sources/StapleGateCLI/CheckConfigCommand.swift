import ArgumentParser
import Foundation
import StapleGateConfig
import StapleGateFleet

struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file and every file it names, without starting.",
        discussion: "Exits 0 when the gateway would start with this file, 78 when it would not."
    )

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String

    func run() throws {
        let loaded = try loadConfigurationOrExit(path: config)
        for warning in loaded.warnings {
            FileHandle.standardError.write(Data("staplegate: warning: \(warning)\n".utf8))
        }
        print(ConfigurationSummary(loaded: loaded, path: config).text)
    }
}

/// What check-config prints: the facts an operator wants to confirm before a restart.
struct ConfigurationSummary {
    let loaded: LoadedConfiguration
    let path: String

    var text: String {
        let configuration = loaded.configuration
        var lines = ["configuration OK: \(path)"]
        lines.append("  listen:    \(configuration.listen.address):\(configuration.listen.port)")
        for identity in loaded.tlsMaterial.identities {
            let leaf = identity.leaf
            let expiry = leaf.notAfter.map { ISO8601DateFormatter().string(from: $0) } ?? "?"
            lines.append("  server:    \(leaf.keyAlgorithm) \(leaf.subject) (serial \(leaf.serialHex), expires \(expiry), chain of \(identity.chain.count))")
        }
        lines.append("  devices:   \(loaded.tlsMaterial.deviceCAs.count) trusted CA(s): "
            + loaded.tlsMaterial.deviceCAs.map(\.subject).joined(separator: " | "))
        lines.append("  tls:       min \(configuration.tls.minimumVersion.rawValue), verify depth \(configuration.tls.verifyDepth), handshake timeout \(configuration.tls.handshakeTimeout)")
        let fleet = configuration.fleet
        let fleetTickets = "the fleet's keys in \(fleet.postgres?.redactedURL ?? "?"), sealed with \(fleet.secretFile ?? "?"), rotated every \(fleet.ticketKeyRotation)"
        lines.append("  tickets:   " + (loaded.sessionTicketKeys?.summary
            ?? (configuration.tls.sessionTicketKeys == .fleet ? fleetTickets
                : "a random key per gateway process (tls.session_ticket_keys not set)")))
        let upstream = configuration.upstream
        lines.append("  upstream:  \(upstream.summary)\(upstream.brokers.count > 1 ? ", down_time \(upstream.downTime)" : "")")
        lines.append("  fleet:     " + configuration.fleet.summary(sqlitePath: configuration.deviceOCSPCachePath))
        return lines.joined(separator: "\n")
    }
}
