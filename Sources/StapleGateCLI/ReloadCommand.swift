import ArgumentParser
import Foundation
import StapleGateConfig
import StapleGateServer

struct ReloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Make the running gateway re-read its configuration, certificates, keys and CA bundles.",
        discussion: """
            The same as SIGHUP (`systemctl reload staplegate`), but waits for the outcome and prints it. \
            New handshakes use the new material; sessions already open are untouched. A configuration \
            with any error changes nothing: the error is printed and the exit status is 78. \
            A new server certificate is switched in once its OCSP staple is held (at most \
            stapling.reload_staple_wait).
            """
    )

    @OptionGroup var state: StateDirectoryOptions

    func run() async throws {
        let socket: String
        if let config = state.config {
            // Checked here first, so a broken file is reported without bothering the gateway
            // (which would refuse it the same way).
            do {
                socket = try ConfigLoader.load(path: config).configuration.controlSocketPath
            } catch {
                FileHandle.standardError.write(Data("staplegate: not reloaded, the gateway keeps its configuration: \(error)\n".utf8))
                throw configurationErrorExitCode
            }
        } else {
            socket = try state.controlSocket()
        }
        let (status, body): (Int, [UInt8])
        do {
            (status, body) = try await ControlClient.send(method: .POST, target: "/reload", socketPath: socket)
        } catch let failure as ControlClient.Failure {
            throw CommandFailure(message: failure.description)
        }
        guard let outcome = try? JSONDecoder().decode(ReloadOutcome.self, from: Data(body)) else {
            throw CommandFailure(message: OCSPCacheCommand.errorText(body))
        }
        for warning in outcome.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
        guard outcome.applied, status == 200 else {
            FileHandle.standardError.write(Data("staplegate: \(outcome.message)\n".utf8))
            throw configurationErrorExitCode
        }
        print(outcome.message)
    }
}
