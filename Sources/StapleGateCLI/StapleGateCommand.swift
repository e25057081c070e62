import ArgumentParser
import Foundation
import StapleGateConfig
import StapleGateTLS

@main
struct StapleGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "staplegate",
        abstract: "A mutual-TLS front for Mosquitto with OCSP stapling and device revocation checks.",
        version: StapleGateVersion.description,
        subcommands: [RunCommand.self, ReloadCommand.self, CheckConfigCommand.self, OCSPCommand.self, TraceCommand.self,
                      TicketKeysCommand.self, SimulateCommand.self, LoadCommand.self, VersionCommand.self]
    )
}

enum StapleGateVersion {
    static let number = "0.1.0"
    static var description: String { "staplegate \(number) (\(OpenSSLLibrary.version))" }
}

/// Exit status for a configuration that cannot be used (sysexits' EX_CONFIG), so that service
/// managers can tell "fix the file" from a crash and not restart in a loop.
let configurationErrorExitCode = ExitCode(78)

/// Loads the configuration, or says what is wrong with it on stderr and exits with EX_CONFIG.
func loadConfigurationOrExit(path: String) throws -> LoadedConfiguration {
    do {
        return try ConfigLoader.load(path: path)
    } catch {
        FileHandle.standardError.write(Data("staplegate: configuration error: \(error)\n".utf8))
        throw configurationErrorExitCode
    }
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version and the OpenSSL in use.")
    func run() { print(StapleGateVersion.description) }
}
