import Foundation
import TestSupport
import XCTest

/// A device publishing numbered messages through the gateway at QoS 1 or 2, written packet by
/// packet (`HandwrittenMQTTClient`), so that the test knows exactly which ones the broker
/// acknowledged: message `n` has packet id `n` and payload "n", and the broker's PUBACK, PUBREC
/// and PUBCOMP are read back from the device's input by packet id. mosquitto_pub would retry and
/// hide them.
final class SequencedPublisher: @unchecked Sendable {
    let client: HandwrittenMQTTClient
    let topic: String
    let qos: UInt8
    private let lock = NSLock()
    private var published = 0
    /// QoS 2: packet ids whose PUBREL was sent.
    private var releasedIDs: Set<Int> = []

    /// Connects (TLS handshake, CONNECT, CONNACK) as `device` with a client id of its own.
    static func connect(port: Int, pki: TestPKI, device: String, topic: String, qos: UInt8,
                        directory: TemporaryDirectory) async throws -> SequencedPublisher {
        precondition(qos == 1 || qos == 2, "acknowledged messages need QoS 1 or 2")
        let client = try HandwrittenMQTTClient(port: port, pki: pki, device: device, clientID: uniqueClientID("seq"),
                                               directory: directory)
        try await client.waitForHandshake(timeout: .seconds(30))
        try await client.connect(keepalive: 0, timeout: .seconds(30))
        return SequencedPublisher(client: client, topic: topic, qos: qos)
    }

    private init(client: HandwrittenMQTTClient, topic: String, qos: UInt8) {
        self.client = client
        self.topic = topic
        self.qos = qos
    }

    var clientID: String { client.clientID }
    var isConnected: Bool { client.process.isRunning }
    var sent: Int { lock.withLock { published } }

    /// Publishes the next message; returns its number.
    @discardableResult
    func publishNext() throws -> Int {
        try lock.withLock {
            let number = published + 1
            precondition(number <= 0x3FFF, "packet ids stay below 0x4000, so that no id byte looks like an acknowledgement")
            let name = Array(topic.utf8)
            let payload = Array("\(number)".utf8)
            let body = [UInt8(name.count >> 8), UInt8(name.count & 0xFF)] + name + [UInt8(number >> 8), UInt8(number & 0xFF)] + payload
            try client.send([0x30 | (qos << 1)] + Self.remainingLength(body.count) + body)
            published = number
            return number
        }
    }

    /// QoS 2: sends PUBREL for every PUBREC not released yet (the second half of the exchange,
    /// after which the broker delivers the message and answers PUBCOMP).
    func releaseReceived() throws {
        let received = acknowledgements().received
        try lock.withLock {
            for id in received.subtracting(releasedIDs).sorted() {
                try client.send([0x62, 0x02, UInt8(id >> 8), UInt8(id & 0xFF)])
                releasedIDs.insert(id)
            }
        }
    }

    /// What the broker answered so far, by packet id.
    struct Acknowledgements {
        /// PUBACK (QoS 1).
        var acknowledged: Set<Int> = []
        /// PUBREC (QoS 2, first half).
        var received: Set<Int> = []
        /// PUBCOMP (QoS 2, complete).
        var completed: Set<Int> = []
        /// Any of them twice for one id: the gateway must never invent or repeat an answer.
        var repeated: [String] = []

        /// The messages the device may forget: PUBACK at QoS 1, PUBCOMP at QoS 2.
        func done(qos: UInt8) -> Set<Int> { qos == 1 ? acknowledged : completed }
    }

    /// Scans the device's input after the TLS handshake report (ASCII, which has no 0x02 byte)
    /// for PUBACK (40 02 id), PUBREC (50 02 id) and PUBCOMP (70 02 id).
    func acknowledgements() -> Acknowledgements {
        let bytes = [UInt8](client.process.stdout.data)
        var result = Acknowledgements()
        var index = 0
        while index + 3 < bytes.count {
            guard bytes[index + 1] == 0x02, [0x40, 0x50, 0x70].contains(bytes[index]) else {
                index += 1
                continue
            }
            let id = Int(bytes[index + 2]) << 8 | Int(bytes[index + 3])
            switch bytes[index] {
            case 0x40: if !result.acknowledged.insert(id).inserted { result.repeated.append("PUBACK \(id)") }
            case 0x50: if !result.received.insert(id).inserted { result.repeated.append("PUBREC \(id)") }
            default: if !result.completed.insert(id).inserted { result.repeated.append("PUBCOMP \(id)") }
            }
            index += 4
        }
        return result
    }

    /// Waits until every message published so far is done (QoS 2: released as PUBRECs come in).
    func waitUntilAllDone(timeout: Duration = .seconds(60)) async throws {
        try await waitUntil(timeout: timeout, pollEvery: .milliseconds(50), "\(sent) messages acknowledged on \(topic)",
                            details: { "done: \(self.acknowledgements().done(qos: self.qos).count)\n\(self.client.process.stderr.text)" }) {
            if self.qos == 2 { try self.releaseReceived() }
            if !self.isConnected { throw ReloadTestFailure("the connection of \(self.clientID) was closed\n\(self.client.process.output)") }
            return self.acknowledgements().done(qos: self.qos).count >= self.sent
        }
    }

    /// The message numbers a subscriber printed (`mosquitto_sub -v`: "topic payload" lines) for this topic.
    func numbers(receivedBy subscriber: MosquittoSubscriber) -> [Int] {
        subscriber.messages.filter { $0.topic == topic }.compactMap { Int($0.payload) }
    }

    static func remainingLength(_ length: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = length
        repeat {
            var byte = UInt8(rest % 128)
            rest /= 128
            if rest > 0 { byte |= 0x80 }
            bytes.append(byte)
        } while rest > 0
        return bytes
    }
}

/// Publishes one message every `interval` (the device's own pace) until stopped, at most
/// `window` of them unacknowledged at a time, as a device's in-flight limit would.
final class SteadyPublishing: @unchecked Sendable {
    private let stopFlag = StopFlag()
    private let task: Task<Void, Error>

    init(_ publisher: SequencedPublisher, every interval: Duration = .milliseconds(10), window: Int = 20) {
        let stopFlag = stopFlag
        task = Task {
            while !stopFlag.isSet {
                if publisher.qos == 2 { try publisher.releaseReceived() }
                if publisher.sent - publisher.acknowledgements().done(qos: publisher.qos).count < window {
                    try publisher.publishNext()
                }
                try await Task.sleep(for: interval)
            }
        }
    }

    /// Stops publishing; rethrows what stopped it early (a write to a closed connection).
    func stop() async throws {
        stopFlag.set()
        try await task.value
    }
}
