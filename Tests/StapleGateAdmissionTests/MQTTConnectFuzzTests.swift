import NIOCore
import StapleGateAdmission
import TestSupport
import XCTest

/// Random and mutated inputs for the CONNECT parser (and the framer): no crash, every call
/// returns promptly, and whatever is accepted re-encodes to a packet that parses to the same
/// value. Fixed seeds: a failure names the seed and iteration that reproduce it.
final class MQTTConnectFuzzTests: XCTestCase {
    private let clock = ContinuousClock()
    private var slowest = Duration.zero
    private var failures = 0
    /// How many inputs were accepted, needed more bytes or were refused: a fuzz run whose
    /// mutations are all refused at the first byte would prove little.
    private var accepted = 0, incomplete = 0, refused = 0

    /// Longest a single parse may take, even in a debug build on a busy machine.
    private let parseBound = Duration.milliseconds(500)

    func testMutatedValidConnects() {
        var random = SplitMix64(seed: 0xC0_4E_C7)
        var corpus = CapturedConnect.all.map(\.1)
        corpus += (0..<50).map { _ in randomConnect(&random).encoded() }
        for iteration in 0..<50_000 where failures < 10 {
            var bytes = random.pick(corpus)
            for _ in 0...random.below(3) { mutate(&bytes, &random) }
            check(bytes, cap: random.pick([64, 1_024, 65_536]), "mutation \(iteration) (seed 0xC04EC7)")
        }
        XCTAssertLessThan(slowest, parseBound, "slowest parse")
        XCTAssertGreaterThan(accepted, 2_000, "mutations that are still a CONNECT")
        XCTAssertGreaterThan(incomplete, 2_000, "mutations that need more bytes")
        XCTAssertGreaterThan(refused, 20_000, "mutations refused")
        print("mutated CONNECTs: \(accepted) accepted, \(incomplete) incomplete, \(refused) refused; slowest parse \(slowest)")
    }

    func testRandomBytes() {
        var random = SplitMix64(seed: 0xB17E5)
        for iteration in 0..<20_000 where failures < 10 {
            // Half start like a CONNECT with a plausible length, so that parsing gets past the fixed header.
            var bytes = random.bytes(random.below(80))
            if random.oneIn(2) { bytes = [0x10] + ConnectBuilder.varint(bytes.count) + bytes }
            check(bytes, cap: random.pick([16, 65_536]), "random input \(iteration) (seed 0xB17E5)")
        }
        XCTAssertLessThan(slowest, parseBound, "slowest parse")
    }

    func testGeneratedConnectsRoundTrip() {
        var random = SplitMix64(seed: 0x6E4E4A7E)
        for iteration in 0..<5_000 where failures < 10 {
            let connect = randomConnect(&random)
            let bytes = connect.encoded()
            guard MQTTConnectParser.parse(bytes, maximumPacketSize: .max) == .connect(connect, packetLength: bytes.count) else {
                failures += 1
                XCTFail("generated CONNECT \(iteration) (seed 0x6E4E4A7E) does not round-trip: \(connect) → \(bytes)")
                continue
            }
            check(Array(bytes.prefix(random.below(bytes.count))), cap: .max, "prefix of generated CONNECT \(iteration)")
        }
    }

    /// Mutated sessions fed to the framer in random pieces report what they report whole.
    func testFramerGivesTheSameReportForAnySplit() {
        var random = SplitMix64(seed: 0xF4A3E4)
        let publishes: [[UInt8]] = [
            publishPacket(topic: "a/b", payload: [1, 2, 3]),
            publishPacket(topic: "q", qos: 1, payload: Array(repeating: 0, count: 300)),
            publishPacket(topic: "", qos: 2, properties: [0x23, 0x00, 0x09], payload: [7]),
            publishPacket(topic: "p", properties: [0x26] + ConnectBuilder.string("k") + ConnectBuilder.string("v"), payload: []),
            [0x40, 0x02, 0x00, 0x01], [0xC0, 0x00], [0xE0, 0x00],
        ]
        for iteration in 0..<3_000 {
            var stream = (0..<random.below(12)).flatMap { _ in random.pick(publishes) }
            if random.oneIn(2) { mutate(&stream, &random) }
            let version: MQTTProtocolVersion = random.pick([.v3_1_1, .v5])
            var whole = MQTTPacketFramer(protocolVersion: version, direction: .deviceToBroker)
            var pieces = MQTTPacketFramer(protocolVersion: version, direction: .deviceToBroker)
            let expected = whole.feed(ByteBuffer(bytes: stream))
            var reported: [MQTTPacketSummary] = []
            var offset = 0
            while offset < stream.count {
                let end = min(stream.count, offset + random.below(40))
                reported += pieces.feed(ByteBuffer(bytes: stream[offset..<end]))
                offset = end
            }
            XCTAssertEqual(reported, expected, "stream \(iteration) (seed 0xF4A3E4)")
            if reported != expected { break }
        }
    }

    // MARK: Properties every outcome must have

    private func check(_ bytes: [UInt8], cap: Int, _ context: @autoclosure () -> String) {
        let start = clock.now
        let outcome = MQTTConnectParser.parse(bytes, maximumPacketSize: cap)
        slowest = max(slowest, clock.now - start)
        switch outcome {
        case .needMoreBytes:
            incomplete += 1
            // Anything that fits the cap is decided once it is all there.
            expect(bytes.count < cap, "needs more bytes though \(bytes.count) are there (cap \(cap))", context)
        case .connect(let connect, let packetLength):
            accepted += 1
            expect(packetLength <= bytes.count && packetLength <= cap, "packet length \(packetLength)", context)
            let encoded = connect.encoded()
            let reparsed = MQTTConnectParser.parse(encoded, maximumPacketSize: .max)
            expect(reparsed == .connect(connect, packetLength: encoded.count), "re-encoded \(connect) parses as \(reparsed)", context)
            let shorter = MQTTConnectParser.parse(Array(bytes.prefix(packetLength - 1)), maximumPacketSize: cap)
            expect(shorter == .needMoreBytes, "one byte short gives \(shorter)", context)
        case .refused(let refusal):
            refused += 1
            expect(!refusal.reason.isEmpty, "refusal without a reason", context)
        }
    }

    private func expect(_ condition: Bool, _ message: @autoclosure () -> String, _ context: () -> String) {
        guard !condition else { return }
        failures += 1
        XCTFail("\(context()): \(message())")
    }

    // MARK: Mutations

    private func mutate(_ bytes: inout [UInt8], _ random: inout SplitMix64) {
        guard !bytes.isEmpty else { bytes = random.bytes(random.below(8)); return }
        switch random.below(7) {
        case 0:  // bit flips
            for _ in 0...random.below(3) { bytes[random.below(bytes.count)] ^= 1 << random.below(8) }
        case 1:  // truncation
            bytes.removeLast(random.below(bytes.count) + 1)
        case 2:  // a two-byte length field (or any byte pair) set to a nearby or random value
            let index = random.below(bytes.count)
            let value = random.oneIn(2) ? random.below(65_536) : Int(bytes[index]) + random.below(5) - 2
            bytes[index] = UInt8(truncatingIfNeeded: value >> 8)
            if index + 1 < bytes.count { bytes[index + 1] = UInt8(truncatingIfNeeded: value) }
        case 3:  // inserted bytes
            bytes.insert(contentsOf: random.bytes(random.below(8) + 1), at: random.below(bytes.count + 1))
        case 4:  // deleted bytes
            let start = random.below(bytes.count)
            bytes.removeSubrange(start..<min(bytes.count, start + random.below(6) + 1))
        case 5:  // a byte set to a boundary value
            bytes[random.below(bytes.count)] = random.pick([0x00, 0x01, 0x7F, 0x80, 0xFF])
        default:  // the remaining length edited
            let length = random.oneIn(3) ? random.below(70_000) : max(0, bytes.count - 2 + random.below(5) - 2)
            bytes = [bytes[0]] + ConnectBuilder.varint(length) + bytes.dropFirst(fixedHeaderWidth(bytes))
        }
        // Keep the fixed header honest half the time, so that mutations reach the body's rules.
        if random.oneIn(2), bytes.count >= 2 {
            let body = bytes.dropFirst(fixedHeaderWidth(bytes))
            bytes = [bytes[0]] + ConnectBuilder.varint(body.count) + body
        }
    }

    /// The type byte and the remaining length as written (at most 5 bytes, fewer if cut short).
    private func fixedHeaderWidth(_ bytes: [UInt8]) -> Int {
        var width = 1
        while width < min(bytes.count, 5) {
            width += 1
            if bytes[width - 1] & 0x80 == 0 { break }
        }
        return width
    }

    // MARK: Valid CONNECTs

    private func randomString(_ random: inout SplitMix64, maxLength: Int = 12) -> String {
        let characters: [Character] = ["a", "Z", "0", "/", "+", "#", " ", "é", "€", "😀", "\u{7F}"]
        return String((0..<random.below(maxLength + 1)).map { _ in random.pick(characters) })
    }

    private func randomBinary(_ random: inout SplitMix64) -> [UInt8] { random.bytes(random.below(20)) }

    private func randomProperties(_ random: inout SplitMix64, will: Bool) -> [UInt8] {
        var block: [UInt8] = []
        for _ in 0..<random.below(4) {
            let pair = [0x26] + ConnectBuilder.string(randomString(&random)) + ConnectBuilder.string(randomString(&random))
            let choices: [[UInt8]] = will
                ? [[0x01, random.byte() & 1], [0x02] + random.bytes(4), [0x03] + ConnectBuilder.string(randomString(&random)),
                   [0x08] + ConnectBuilder.string(randomString(&random)), [0x09] + ConnectBuilder.binary(randomBinary(&random)),
                   [0x18] + random.bytes(4), pair]
                : [[0x11] + random.bytes(4), [0x15] + ConnectBuilder.string(randomString(&random)),
                   [0x16] + ConnectBuilder.binary(randomBinary(&random)), [0x17, random.byte() & 1], [0x19, random.byte() & 1],
                   [0x21] + random.bytes(2), [0x22] + random.bytes(2), [0x27] + random.bytes(4), pair]
            block += random.pick(choices)
        }
        return block
    }

    private func randomConnect(_ random: inout SplitMix64) -> MQTTConnect {
        let version = random.pick(MQTTProtocolVersion.allCases)
        let v5 = version == .v5
        let username = random.oneIn(2) ? randomString(&random) : nil
        // Before 5.0 a password needs a username.
        let password = random.oneIn(2) && (username != nil || v5) ? randomBinary(&random) : nil
        let will = random.oneIn(2) ? nil : MQTTConnect.Will(
            topic: randomString(&random), payload: random.bytes(random.below(200)), qos: random.pick(MQTTQoS.allCases),
            retain: random.oneIn(2), properties: v5 ? randomProperties(&random, will: true) : [])
        return MQTTConnect(
            protocolVersion: version, clientID: randomString(&random, maxLength: 30), username: username, password: password,
            cleanStart: random.oneIn(2), keepAlive: UInt16(truncatingIfNeeded: random.next()), will: will,
            properties: v5 ? randomProperties(&random, will: false) : [])
    }
}
