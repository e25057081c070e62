import NIOCore
import StapleGateProxyProtocol
import XCTest

/// Mutated and random inputs for the parser: no crash; every input is a header, incomplete or
/// refused; the same whether it arrives whole or in two pieces; and whatever is accepted
/// re-encodes to bytes that parse to the same header. Fixed seeds: a failure names the seed
/// and iteration that reproduce it.
final class ProxyHeaderFuzzTests: XCTestCase {
    private var failures = 0
    /// A run whose mutations were all refused at the first byte would prove little.
    private var accepted = 0, incomplete = 0, refused = 0

    func testMutatedHeaders() {
        var random = FuzzRandom(seed: 0x9E4D_E5)
        var corpus = [
            Fixture.specV1, Fixture.specV2IPv4, Fixture.haproxyAuthority, Fixture.haproxyEmbeddedNULc1, Fixture.sslCNWithCRC,
            Array("PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 65535 0\r\n".utf8), Array("PROXY UNKNOWN\r\n".utf8),
            v2Header(0x20, 0x00, []), v2Header(0x21, 0x31, [UInt8](repeating: 0x61, count: 216)),
        ]
        for _ in 0..<60 {
            let header = randomHeader(&random)
            let withCRC = header.version == .v2 && header.source != nil && random.oneIn(3)
            if let bytes = try? ProxyHeaderEncoder.bytes(header, addingCRC32C: withCRC) { corpus.append(bytes) }
        }
        for iteration in 0..<20_000 where failures < 10 {
            var bytes = random.pick(corpus)
            for _ in 0...random.below(3) { mutate(&bytes, &random) }
            if random.oneIn(2) { bytes += Fixture.clientHello.prefix(random.below(12)) }
            check(bytes, &random, "mutation \(iteration) (seed 0x9E4DE5)")
        }
        print("mutated headers: \(accepted) accepted, \(incomplete) incomplete, \(refused) refused")
        XCTAssertGreaterThan(accepted, 800, "mutations that are still a header")
        XCTAssertGreaterThan(incomplete, 1_500, "mutations that need more bytes")
        XCTAssertGreaterThan(refused, 10_000, "mutations refused")
    }

    func testRandomBytes() {
        var random = FuzzRandom(seed: 0xB17E5)
        for iteration in 0..<10_000 where failures < 10 {
            // Most start with a signature, so that parsing gets past it.
            var bytes = random.bytes(random.below(120))
            switch random.below(4) {
            case 0: bytes = v2Signature + [0x20 | UInt8(random.below(2)), random.pick([0x00, 0x11, 0x21, 0x31])] + bytes
            case 1: bytes = v2Signature + bytes
            case 2: bytes = Array("PROXY ".utf8) + bytes.map { random.oneIn(8) ? UInt8(ascii: " ") : 0x20 + $0 % 0x5F }
            default: break
            }
            check(bytes, &random, "random input \(iteration) (seed 0xB17E5)")
        }
    }

    private func check(_ bytes: [UInt8], _ random: inout FuzzRandom, _ label: String) {
        // Mostly settings that take the header, so that mutations get past the first byte.
        let accepting = random.pick([ProxyHeaderParser.AcceptedVersions.any, .any, .any, .v1, .v2])
        let maximum = random.pick([
            128, ProxyHeaderParser.defaultMaximumHeaderSize, ProxyHeaderParser.defaultMaximumHeaderSize, 65_551,
        ])
        let whole = outcome(bytes, accepting: accepting, maximumHeaderSize: maximum)
        switch whole {
        case .header: accepted += 1
        case .needMoreBytes: incomplete += 1
        case .refused: refused += 1
        }

        // The same bytes in two reads of one connection: the first read's outcome, then the
        // second's, must agree with one read of all of them.
        let split = random.below(bytes.count + 1)
        var parser = ProxyHeaderParser(accepting: accepting, maximumHeaderSize: maximum)
        var buffer = ByteBuffer(bytes: bytes[..<split])
        let first = outcome(of: &parser, &buffer)
        switch first {
        case .needMoreBytes:
            buffer.writeBytes(bytes[split...])
            expect(outcome(of: &parser, &buffer), whole, "\(label), split at \(split)")
        case .refused:
            expect(first, whole, "\(label), refused at \(split) of \(bytes.count) bytes")
        case .header(let header, let remaining):
            guard case .header(header, let wholeRemaining) = whole, wholeRemaining == remaining + bytes[split...] else {
                return fail("\(label): \(split) bytes gave \(first), all \(bytes.count) gave \(whole)")
            }
        }

        guard case .header(let header, let remaining) = whole else { return }
        guard bytes.count >= remaining.count, Array(bytes.suffix(remaining.count)) == remaining else {
            return fail("\(label): what is left is not the end of the input")
        }
        // Anything accepted can be written again and reads back the same. A LOCAL header
        // that came with a block (a v2 receiver skips it), or a v1 UNKNOWN with a tail, is
        // written without one: the same header, other bytes, so another checksum.
        guard let reencoded = try? ProxyHeaderEncoder.bytes(header) else {
            return fail("\(label): accepted \(header), which the encoder refuses")
        }
        guard case .header(let again, remaining: []) = outcome(reencoded, maximumHeaderSize: 65_551) else {
            return fail("\(label): \(header) re-encoded does not parse: \(outcome(reencoded))")
        }
        expect(
            .header(withoutChecksum(again), remaining: []), .header(withoutChecksum(header), remaining: []),
            "\(label), re-encoded")
    }

    private func withoutChecksum(_ header: ProxyHeader) -> ProxyHeader {
        var header = header
        header.tlvs = header.tlvs.map { (tlv: ProxyTLV) -> ProxyTLV in
            if case .crc32c = tlv { return .crc32c(0) }
            return tlv
        }
        return header
    }

    private func expect(_ actual: Outcome, _ expected: Outcome, _ label: String) {
        guard actual != expected else { return }
        fail("\(label): got \(actual), expected \(expected)")
    }

    private func fail(_ message: String) {
        failures += 1
        XCTFail(message)
    }

    private func mutate(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        guard !bytes.isEmpty else {
            bytes = random.bytes(1 + random.below(20))
            return
        }
        let index = random.below(bytes.count)
        switch random.below(8) {
        case 0: bytes[index] = random.byte()
        case 1: bytes[index] ^= 1 << UInt8(random.below(8))
        case 2: bytes.insert(random.byte(), at: index)
        case 3: bytes.remove(at: index)
        case 4: bytes = Array(bytes.prefix(index))
        case 5 where bytes.count >= 16 && bytes[0] == 0x0D:
            // The v2 length field, a little off either way.
            let length = Int(bytes[14]) << 8 | Int(bytes[15])
            let changed = UInt16(clamping: max(0, length + random.below(9) - 4))
            bytes[14] = UInt8(changed >> 8)
            bytes[15] = UInt8(changed & 0xFF)
        case 5, 6:
            // Bytes that mean something to one of the two formats.
            let meaningful: [UInt8] = [0x00, 0x01, 0x03, 0x04, 0x05, 0x20, 0x21, 0x22, 0x30, 0xFF, 0x0D, 0x0A, 0x3A, 0x2E, 0x30]
            bytes[index] = random.pick(meaningful)
        default:
            let end = min(bytes.count, index + 1 + random.below(16))
            bytes.insert(contentsOf: bytes[index..<end], at: random.below(bytes.count + 1))
        }
    }
}
