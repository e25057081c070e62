import Foundation

/// A device that speaks MQTT 3.1.1 packets written by the test, byte by byte, through a real
/// `openssl s_client` (device certificate, CA verification): for behaviour no MQTT client tool
/// lets a test pace, such as a PINGREQ every 200 ms (mosquitto_sub's keepalive is at least 5 s).
///
/// s_client reads the packets from a FIFO (`NamedPipeInput`) and writes what the broker answers,
/// raw, to its stdout, after its own (ASCII) handshake report.
public final class HandwrittenMQTTClient: @unchecked Sendable {
    public let process: ManagedProcess
    public let input: NamedPipeInput
    public let clientID: String

    /// CONNACK "accepted" (no session present) and PINGRESP, as the broker sends them.
    static let connackAccepted: [UInt8] = [0x20, 0x02, 0x00, 0x00]
    static let pingResponse: [UInt8] = [0xD0, 0x00]

    public init(port: Int, pki: TestPKI, device: String, clientID: String, directory: TemporaryDirectory) throws {
        self.clientID = clientID
        input = try NamedPipeInput(in: directory, name: "\(clientID).fifo")
        // -nocommands: a packet starting with "Q", "R" or "k" must not be taken for a command.
        process = try ManagedProcess("openssl", [
            "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost", "-CAfile", pki.caChain,
            "-cert", pki.certificate(device), "-key", pki.key(device), "-no_ign_eof", "-nocommands",
        ], input: .file(input.path))
    }

    /// Waits until the TLS handshake has completed with the gateway's certificate verified.
    public func waitForHandshake(timeout: Duration = .seconds(10)) async throws {
        try await process.waitForOutput("Verify return code: 0 (ok)", timeout: timeout)
    }

    /// Sends CONNECT (clean session, the given keepalive) and waits for the broker's CONNACK.
    public func connect(keepalive: UInt16 = 60, timeout: Duration = .seconds(10)) async throws {
        let id = Array(clientID.utf8)
        var body: [UInt8] = [0x00, 0x04] + Array("MQTT".utf8) + [0x04, 0x02, UInt8(keepalive >> 8), UInt8(keepalive & 0xFF)]
        body += [UInt8(id.count >> 8), UInt8(id.count & 0xFF)] + id
        precondition(body.count < 128, "client id too long for a one-byte remaining length")
        try input.write([0x10, UInt8(body.count)] + body)
        try await waitUntil(timeout: timeout, "CONNACK for \(clientID)", details: { self.process.output }) {
            if self.received(Self.connackAccepted) >= 1 { return true }
            if !self.process.isRunning { throw ClosedError(clientID: self.clientID, output: self.process.output) }
            return false
        }
    }

    /// Sends PINGREQ.
    public func ping() throws {
        try input.write([0xC0, 0x00])
    }

    /// Sends `bytes` as they are: a first packet that is not a CONNECT, a malformed or partial
    /// one, anything a well-behaved client would never write.
    public func send(_ bytes: [UInt8]) throws {
        try input.write(bytes)
    }

    /// Waits until s_client has exited, which it does when the other end closes the connection
    /// (its input, the FIFO, stays open); returns how it ended.
    @discardableResult
    public func waitForClose(timeout: Duration = .seconds(10)) async throws -> ProcessExit {
        try await process.waitForExit(timeout: timeout)
    }

    /// How many PINGRESP the broker has sent so far.
    public var pingResponses: Int { received(Self.pingResponse) }

    /// Waits until the broker has answered `count` PINGREQ in all; throws if s_client exits first.
    public func waitForPingResponses(_ count: Int, timeout: Duration = .seconds(5)) async throws {
        try await waitUntil(timeout: timeout, "PINGRESP number \(count) for \(clientID)", details: { self.process.output }) {
            if self.pingResponses >= count { return true }
            if !self.process.isRunning { throw ClosedError(clientID: self.clientID, output: self.process.output) }
            return false
        }
    }

    /// Occurrences of `packet` in s_client's stdout (the handshake report is ASCII, so the
    /// packets' high-bit bytes cannot be confused with it).
    public func received(_ packet: [UInt8]) -> Int {
        let bytes = [UInt8](process.stdout.data)
        guard bytes.count >= packet.count else { return 0 }
        var count = 0
        var index = 0
        while index <= bytes.count - packet.count {
            if bytes[index..<(index + packet.count)].elementsEqual(packet) {
                count += 1
                index += packet.count
            } else {
                index += 1
            }
        }
        return count
    }

    public struct ClosedError: Error, CustomStringConvertible {
        public let clientID: String
        public let output: String
        public var description: String { "the connection of \(clientID) was closed\n\(output)" }
    }
}
