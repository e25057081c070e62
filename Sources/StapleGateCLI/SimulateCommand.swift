import ArgumentParser
import Foundation
import StapleGateSimulator

struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Connect as a device through libmosquitto (OCSP stapling required), publish and receive.",
        discussion: """
        Prints the TLS parameters and the stapled OCSP response the gateway sent (status, thisUpdate, \
        nextUpdate, responder), subscribes, publishes one message and waits for it to come back. \
        Exits non-zero when any step fails — including a gateway that staples no valid response, \
        unless --no-ocsp-required is given.
        """
    )

    @Option(help: "Gateway host name (must match its certificate).") var host = "localhost"
    @Option(help: "Gateway port.") var port = 8883
    @Option(help: "CA bundle to verify the gateway with.") var cafile: String
    @Option(help: "The device's certificate chain (PEM).") var cert: String
    @Option(help: "The device's private key (PEM).") var key: String
    @Option(help: "MQTT client id.") var clientID = "staplegate-sim-\(getpid())"
    @Option(help: "Topic to subscribe and publish to (default: staplegate/simulate/<client id>).") var topic: String?
    @Option(help: "Message to publish.") var message = "hello from the StapleGate simulator"
    @Flag(inversion: .prefixedNo, help: "Require a valid stapled OCSP response, as MOSQ_OPT_TLS_OCSP_REQUIRED does.")
    var ocspRequired = true
    @Option(help: "Seconds to wait for each exchange.") var timeout = 10

    func run() throws {
        let simulator = DeviceSimulator(
            options: .init(host: host, port: port, caFile: cafile, certificate: cert, key: key, clientID: clientID,
                           topic: topic ?? "staplegate/simulate/\(clientID)", message: message,
                           requireOCSP: ocspRequired, timeout: .seconds(timeout)),
            report: { print($0) })
        do {
            try simulator.run()
            print("ok")
        } catch {
            FileHandle.standardError.write(Data("staplegate simulate: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}
