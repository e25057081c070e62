import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `count` real devices, each a long-lived `mosquitto_pub -l -q 1` with a certificate of its own
/// and a client id of its own, connected through the gateway and reading its input from a FIFO
/// the test writes to: one line written is one message published on `<root>/<index>`, with the
/// payload "<index> <seq>".
final class ReloadFleet: @unchecked Sendable {
    final class Device {
        let index: Int
        let clientID: String
        let input: NamedPipeInput
        let process: ManagedProcess
        var sent = 0

        init(index: Int, clientID: String, input: NamedPipeInput, process: ManagedProcess) {
            self.index = index
            self.clientID = clientID
            self.input = input
            self.process = process
        }
    }

    let devices: [Device]
    let topicRoot: String
    private let pipes: TemporaryDirectory
    private let lock = NSLock()
    private var roundsPublished = 0

    private init(devices: [Device], topicRoot: String, pipes: TemporaryDirectory) {
        self.devices = devices
        self.topicRoot = topicRoot
        self.pipes = pipes
    }

    /// Starts the devices in batches, each batch connected (the broker logged each client id)
    /// before the next starts.
    static func connect(certificates: [(certificate: String, key: String)], pki: TestPKI, gatewayPort: Int, topicRoot: String,
                        pipes: TemporaryDirectory, broker: MosquittoBroker, batch: Int = 25) async throws -> ReloadFleet {
        var devices: [Device] = []
        let run = UUID().uuidString.prefix(6).lowercased()
        for start in stride(from: 0, to: certificates.count, by: batch) {
            var started: [Device] = []
            for offset in start..<min(start + batch, certificates.count) {
                let index = offset + 1
                let input = try NamedPipeInput(in: pipes, name: "device-\(index).fifo")
                let clientID = "fleet-\(run)-\(index)"
                let arguments = ["-h", "localhost", "-p", "\(gatewayPort)", "--cafile", pki.caChain,
                                 "--cert", certificates[offset].certificate, "--key", certificates[offset].key,
                                 "-t", "\(topicRoot)/\(index)", "-q", "1", "-i", clientID, "-l"]
                let process = try ManagedProcess("mosquitto_pub", arguments, input: .file(input.path))
                started.append(Device(index: index, clientID: clientID, input: input, process: process))
            }
            devices += started
            let batchDevices = started
            try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(100),
                                "devices \(start + 1)…\(start + started.count) to connect",
                                details: { connectionDetails(batchDevices, broker.log) }) {
                if let dead = batchDevices.first(where: { !$0.process.isRunning }) {
                    throw ReloadTestFailure("\(dead.process.commandLine) exited\n\(dead.process.output)")
                }
                let connected = connectedClientIDs(broker.log)
                return batchDevices.allSatisfy { connected.contains($0.clientID) }
            }
        }
        return ReloadFleet(devices: devices, topicRoot: topicRoot, pipes: pipes)
    }

    /// Ends every device's input (it then publishes what is queued and exits) and removes the FIFOs.
    func closeInputs() {
        for device in devices { device.input.close() }
    }

    func removePipes() {
        closeInputs()
        pipes.remove()
    }

    /// One message from every device.
    func publishRound() {
        lock.withLock {
            for device in devices {
                device.sent += 1
                try? device.input.write(Array("\(device.index) \(device.sent)\n".utf8))
            }
            roundsPublished += 1
        }
    }

    var rounds: Int { lock.withLock { roundsPublished } }
    var totalSent: Int { lock.withLock { devices.reduce(0) { $0 + $1.sent } } }

    /// Every message published so far, as the subscriber prints it ("topic payload").
    var expectedLines: Set<String> {
        lock.withLock {
            Set(devices.flatMap { device in (0..<device.sent).map { "\(topicRoot)/\(device.index) \(device.index) \($0 + 1)" } })
        }
    }

    func waitUntilDelivered(to subscriber: MosquittoSubscriber, timeout: Duration = .seconds(60)) async throws {
        let expected = expectedLines
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(100), "\(expected.count) messages to reach the subscriber",
                            details: { "received \(subscriber.messageCount); missing e.g. \(expected.subtracting(subscriber.process.stdout.lines).sorted().prefix(10))" }) {
            subscriber.messageCount >= expected.count && expected.isSubset(of: Set(subscriber.process.stdout.lines))
        }
    }

    struct Publishing {
        /// Rounds published from the start of the publishing to its end.
        let rounds: Int
        /// Rounds published while `during` ran (signal sent → reload logged / command returned).
        let roundsDuring: Int
        let reloadMilliseconds: Int
    }

    /// Publishes round after round (each once the previous one is delivered) while `during` runs:
    /// at least one round before it starts and one after it ends.
    func publishing(to subscriber: MosquittoSubscriber, during: @escaping () async throws -> Void) async throws -> Publishing {
        let stop = StopFlag()
        let first = rounds
        let publisher = Task {
            while !stop.isSet {
                self.publishRound()
                let target = self.totalSent
                try await waitUntil(timeout: .seconds(60), pollEvery: .milliseconds(20), "round \(self.rounds) to be delivered") {
                    subscriber.messageCount >= target
                }
            }
        }
        do {
            try await waitUntil(timeout: .seconds(60), "a round published before the reload") { self.rounds > first }
            let startRound = rounds
            let start = ContinuousClock.now
            try await during()
            let end = ContinuousClock.now
            let endRound = rounds
            try await waitUntil(timeout: .seconds(60), "a round published after the reload") { self.rounds > endRound }
            stop.set()
            try await publisher.value
            try await waitUntilDelivered(to: subscriber)
            return Publishing(rounds: rounds - first, roundsDuring: endRound - startRound,
                              reloadMilliseconds: Int((end - start).seconds * 1000))
        } catch {
            stop.set()
            publisher.cancel()
            throw error
        }
    }

    struct Tally {
        let expected: Int
        let received: Int
        let duplicates: Int
        let missing: [String]
        let unexpected: [String]
    }

    func tally(_ subscriber: MosquittoSubscriber) -> Tally {
        let expected = expectedLines
        let lines = subscriber.process.stdout.lines
        let received = Set(lines)
        return Tally(expected: expected.count, received: lines.count, duplicates: lines.count - received.count,
                     missing: expected.subtracting(received).sorted(), unexpected: received.subtracting(expected).sorted())
    }

    // MARK: The broker's log

    /// The broker log lines naming each device's client id (as a whole word).
    func brokerLinesByClient(_ log: String) -> [String: [String]] {
        let ids = Set(devices.map(\.clientID))
        var found: [String: [String]] = [:]
        for line in log.split(separator: "\n") where line.contains("fleet-") {
            for word in line.split(separator: " ") {
                let token = String(word.trimmingCharacters(in: CharacterSet(charactersIn: ".,:()")))
                if ids.contains(token) { found[token, default: []].append(String(line)) }
            }
        }
        return found
    }

    static func connectedClientIDs(_ log: String) -> Set<String> {
        var connected: Set<String> = []
        for line in log.split(separator: "\n") where line.contains("New client connected") {
            guard let range = line.range(of: " as ") else { continue }
            connected.insert(String(line[range.upperBound...].prefix { $0 != " " }))
        }
        return connected
    }

    private static func connectionDetails(_ devices: [Device], _ log: String) -> String {
        let connected = connectedClientIDs(log)
        let waiting = devices.filter { !connected.contains($0.clientID) }
        return "\(waiting.count) not connected, e.g. \(waiting.prefix(3).map { "\($0.clientID): \($0.process.output)" })"
    }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

struct ReloadTestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
