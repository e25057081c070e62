import Foundation

/// Where a mosquitto_pub / mosquitto_sub connects.
public enum MQTTTarget {
    /// Through the gateway: TLS, verifying the gateway with ca-chain.pem, presenting
    /// `device`'s certificate and key (none when `device` is nil).
    case gateway(port: Int, pki: TestPKI, device: String?)
    /// Straight to the broker, plain MQTT.
    case broker(MosquittoBroker)

    public var arguments: [String] {
        switch self {
        case let .gateway(port, pki, device):
            var arguments = ["-h", "localhost", "-p", "\(port)", "--cafile", pki.caChain]
            if let device { arguments += ["--cert", pki.certificate(device), "--key", pki.key(device)] }
            return arguments
        case let .broker(broker):
            return broker.clientArguments
        }
    }
}

/// What a finished command printed and how it ended.
public struct CommandResult: CustomStringConvertible {
    public let status: ProcessExit
    public let stdout: String
    public let stderr: String
    public var output: String { stdout + stderr }
    public var description: String { "\(status)\nstdout:\n\(stdout)\nstderr:\n\(stderr)" }
}

/// What mosquitto_pub sends.
public enum MQTTPayload {
    case message(String)
    /// The whole file as one message (`-f`).
    case file(String)
    /// One message per line of the file (`-l`, reading the file as its input).
    case linesOf(String)
}

private var clientCounter = 0
private let clientCounterLock = NSLock()

/// A client id nobody else in this run uses.
public func uniqueClientID(_ prefix: String) -> String {
    clientCounterLock.lock()
    defer { clientCounterLock.unlock() }
    clientCounter += 1
    return "\(prefix)-\(getpid())-\(clientCounter)"
}

/// Starts a real mosquitto_pub (without waiting for it).
public func startMosquittoPub(_ target: MQTTTarget, topic: String, payload: MQTTPayload, qos: Int = 1,
                              clientID: String? = nil, extraArgs: [String] = []) throws -> ManagedProcess {
    var arguments = target.arguments + ["-t", topic, "-q", "\(qos)", "-i", clientID ?? uniqueClientID("pub")]
    var input = ManagedProcess.Input.null
    switch payload {
    case let .message(text): arguments += ["-m", text]
    case let .file(path): arguments += ["-f", path]
    case let .linesOf(path):
        arguments += ["-l"]
        input = .file(path)
    }
    return try ManagedProcess("mosquitto_pub", arguments + extraArgs, input: input)
}

/// Runs mosquitto_pub to the end.
public func mosquittoPub(_ target: MQTTTarget, topic: String, payload: MQTTPayload, qos: Int = 1,
                         clientID: String? = nil, extraArgs: [String] = [],
                         timeout: Duration = .seconds(10)) async throws -> CommandResult {
    let process = try startMosquittoPub(target, topic: topic, payload: payload, qos: qos,
                                        clientID: clientID, extraArgs: extraArgs)
    let status = try await process.waitForExit(timeout: timeout)
    return CommandResult(status: status, stdout: process.stdout.text, stderr: process.stderr.text)
}

/// A device publishing through the gateway: `--cafile ca-chain.pem --cert DEVICE.pem --key DEVICE.key
/// -h localhost -p PORT` (no certificate at all when `device` is nil).
public func mosquittoPub(port: Int, pki: TestPKI, device: String? = "device-1", topic: String,
                         message: String? = nil, file: String? = nil, qos: Int = 1,
                         clientID: String? = nil, extraArgs: [String] = [],
                         timeout: Duration = .seconds(10)) async throws -> CommandResult {
    precondition((message == nil) != (file == nil), "give either a message or a file")
    return try await mosquittoPub(.gateway(port: port, pki: pki, device: device), topic: topic,
                                  payload: message.map { .message($0) } ?? .file(file!), qos: qos,
                                  clientID: clientID, extraArgs: extraArgs, timeout: timeout)
}

/// A real mosquitto_sub that is known to be subscribed once `start` returns.
///
/// "Subscribed" is read from the broker's own log (`log_type subscribe` prints
/// "<client id> <qos> <topic>" when it has registered the subscription), which works the same
/// for text and raw binary output and for subscribers behind the gateway.
public final class MosquittoSubscriber: @unchecked Sendable {
    public enum Output {
        /// `-v`: one "topic payload" line per message.
        case lines
        /// `-N -C count`: the payloads' raw bytes back to back, then exit.
        case raw(count: Int)
    }

    public let process: ManagedProcess
    public let clientID: String
    public let topic: String

    private init(process: ManagedProcess, clientID: String, topic: String) {
        self.process = process
        self.clientID = clientID
        self.topic = topic
    }

    public static func start(_ target: MQTTTarget, broker: MosquittoBroker, topic: String, qos: Int = 1,
                             output: Output = .lines, clientID: String? = nil,
                             timeout: Duration = .seconds(10)) async throws -> MosquittoSubscriber {
        let id = clientID ?? uniqueClientID("sub")
        var arguments = target.arguments + ["-t", topic, "-q", "\(qos)", "-i", id]
        switch output {
        case .lines: arguments += ["-v"]
        case let .raw(count): arguments += ["-N", "-C", "\(count)"]
        }
        let process = try ManagedProcess("mosquitto_sub", arguments)
        let subscriber = MosquittoSubscriber(process: process, clientID: id, topic: topic)
        let registered = "\(id) \(qos) \(topic)"
        try await waitUntil(timeout: timeout, "mosquitto_sub \(id) to be subscribed to \(topic)",
                            details: { "subscriber:\n\(process.output)\nbroker:\n\(broker.log)" }) {
            if broker.log.split(separator: "\n").contains(where: { $0.hasSuffix(": " + registered) }) { return true }
            if !process.isRunning {
                throw ManagedProcess.LaunchError(command: process.commandLine,
                                                 reason: "exited (\(process.exitStatus!)) before subscribing\n\(process.output)")
            }
            return false
        }
        return subscriber
    }

    /// Received messages as (topic, payload), from `-v` lines.
    public var messages: [(topic: String, payload: String)] {
        process.stdout.lines.map(Self.parse)
    }

    public var messageCount: Int { process.stdout.lineCount }

    static func parse(_ line: String) -> (topic: String, payload: String) {
        guard let space = line.firstIndex(of: " ") else { return (line, "") }
        return (String(line[..<space]), String(line[line.index(after: space)...]))
    }

    /// Waits until at least `count` messages arrived (text mode).
    @discardableResult
    public func waitForMessages(_ count: Int, timeout: Duration = .seconds(15)) async throws -> [(topic: String, payload: String)] {
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(50), "\(count) messages on \(topic)",
                            details: { "received \(self.messageCount)\n\(self.process.stderr.text)" }) {
            self.messageCount >= count
        }
        return messages
    }

    /// Raw mode: waits for mosquitto_sub to exit after its `-C` messages and returns their bytes.
    public func waitForRawPayload(timeout: Duration = .seconds(15)) async throws -> Data {
        let status = try await process.waitForExit(timeout: timeout)
        guard status.succeeded else {
            throw ManagedProcess.LaunchError(command: process.commandLine, reason: "failed (\(status))\n\(process.output)")
        }
        return process.stdout.data
    }

    public func stop() async { await process.terminate() }
}
