import NIOCore
import StapleGateProxyProtocol
import XCTest

/// Headers written as a balancer writes them, byte for byte, and read back by the parser.
final class ProxyHeaderEncoderTests: XCTestCase {
    private func encoded(_ header: ProxyHeader, addingCRC32C: Bool = false, file: StaticString = #filePath, line: UInt = #line)
        -> [UInt8]
    {
        do throws(ProxyHeaderEncodingError) {
            return try ProxyHeaderEncoder.bytes(header, addingCRC32C: addingCRC32C)
        } catch {
            XCTFail("\(header) was not encoded: \(error)", file: file, line: line)
            return []
        }
    }

    private func assertNotEncoded(
        _ header: ProxyHeader, _ reason: String, addingCRC32C: Bool = false, file: StaticString = #filePath, line: UInt = #line
    ) {
        do throws(ProxyHeaderEncodingError) {
            let bytes = try ProxyHeaderEncoder.bytes(header, addingCRC32C: addingCRC32C)
            XCTFail("expected a refusal, got \(bytes)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.reason, reason, file: file, line: line)
        }
    }

    private let v4a = ProxyEndpoint.ipv4(ProxyIPv4Address(192, 0, 2, 1), port: 50000)
    private let v4b = ProxyEndpoint.ipv4(ProxyIPv4Address(198, 51, 100, 7), port: 8883)
    private let v6a = ProxyEndpoint.ipv6(ProxyIPv6Address("2001:db8::1")!, port: 50000)
    private let v6b = ProxyEndpoint.ipv6(ProxyIPv6Address("2001:db8:0:0:1::2")!, port: 8883)

    // MARK: v1

    func testV1Lines() {
        XCTAssertEqual(
            encoded(ProxyHeader(version: .v1, source: v4a, destination: v4b)),
            Array("PROXY TCP4 192.0.2.1 198.51.100.7 50000 8883\r\n".utf8))
        XCTAssertEqual(
            encoded(ProxyHeader(version: .v1, source: v6a, destination: v6b)),
            Array("PROXY TCP6 2001:db8::1 2001:db8::1:0:0:2 50000 8883\r\n".utf8))
        XCTAssertEqual(encoded(ProxyHeader(version: .v1)), Array("PROXY UNKNOWN\r\n".utf8))
        let spec = ProxyHeader(
            version: .v1, source: .ipv4(ProxyIPv4Address(192, 168, 0, 1), port: 56324),
            destination: .ipv4(ProxyIPv4Address(192, 168, 0, 11), port: 443))
        XCTAssertEqual(encoded(spec), Fixture.specV1)
    }

    func testV1Refusals() {
        assertNotEncoded(ProxyHeader(version: .v1, command: .local), "PROXY v1 has no LOCAL command (a v2 header has)")
        assertNotEncoded(
            ProxyHeader(version: .v1, source: v4a, destination: v4b, tlvs: [.authority("a")]),
            "PROXY v1 carries no TLVs (a v2 header does)")
        assertNotEncoded(
            ProxyHeader(version: .v1, source: .unix(path: [0x2F]), destination: .unix(path: [0x2F])),
            "PROXY v1 has no UNIX sockets (a v2 header has)")
        assertNotEncoded(
            ProxyHeader(version: .v1, source: v4a, destination: v6b),
            "PROXY header endpoints must be of one family: source 192.0.2.1:50000, destination [2001:db8::1:0:0:2]:8883")
        assertNotEncoded(
            ProxyHeader(version: .v1, source: v4a),
            "PROXY header endpoints must be of one family: source 192.0.2.1:50000, destination none")
    }

    // MARK: v2

    func testV2SpecExampleBytes() {
        XCTAssertEqual(encoded(Fixture.ipv4Header), Fixture.specV2IPv4)
    }

    func testV2LikeSendProxyV2SSLCNWithCRC32C() {
        // The checksum value given is ignored: the encoder computes it.
        var header = Fixture.sslCNHeader
        header.tlvs[0] = .crc32c(0)
        XCTAssertEqual(encoded(header), Fixture.sslCNWithCRC)
        XCTAssertEqual(encoded(Fixture.sslCNHeader), Fixture.sslCNWithCRC)
    }

    func testAddingCRC32CAppendsOneThatVerifies() {
        let header = ProxyHeader(version: .v2, source: v6a, destination: v6b, tlvs: [.authority("broker.example.com")])
        let bytes = encoded(header, addingCRC32C: true)
        guard case .header(let parsed, remaining: []) = outcome(bytes) else { return XCTFail("\(outcome(bytes))") }
        XCTAssertEqual(parsed.tlvs.count, 2)
        XCTAssertEqual(parsed.tlvs.last?.type, 0x03)
        XCTAssertEqual(parsed.authority, "broker.example.com")
        // Not twice when one is already in the list.
        XCTAssertEqual(encoded(Fixture.sslCNHeader, addingCRC32C: true), Fixture.sslCNWithCRC)
    }

    func testLocalAndUnspecified() {
        XCTAssertEqual(encoded(ProxyHeader(version: .v2, command: .local)), v2Header(0x20, 0x00, []))
        XCTAssertEqual(encoded(ProxyHeader(version: .v2, command: .proxy)), v2Header(0x21, 0x00, []))
    }

    func testUNIXPaths() {
        let header = ProxyHeader(
            version: .v2, source: .unix(path: Array("/run/lb.sock".utf8)), destination: .unix(path: [0, 0x67, 0x77]))
        let bytes = encoded(header)
        XCTAssertEqual(bytes.count, 16 + 216)
        XCTAssertEqual(outcome(bytes), .header(header, remaining: []))
    }

    func testV2Refusals() {
        assertNotEncoded(
            ProxyHeader(version: .v2, command: .local, source: v4a, destination: v4b),
            "PROXY v2 LOCAL header carries no addresses: a receiver discards them")
        let noFamily = "PROXY v2 TLVs need an address family: a receiver discards the block of a LOCAL or AF_UNSPEC header"
        assertNotEncoded(ProxyHeader(version: .v2, tlvs: [.authority("a")]), noFamily)
        assertNotEncoded(ProxyHeader(version: .v2, command: .local), noFamily, addingCRC32C: true)
        assertNotEncoded(
            ProxyHeader(version: .v2, source: v6a, destination: v4b),
            "PROXY header endpoints must be of one family: source [2001:db8::1]:50000, destination 198.51.100.7:8883")
        let long = [UInt8](repeating: 0x61, count: 109)
        assertNotEncoded(
            ProxyHeader(version: .v2, source: .unix(path: long), destination: .unix(path: [])),
            "PROXY v2 UNIX source path is 109 bytes, longer than the 108 of sun_path")
        assertNotEncoded(
            ProxyHeader(version: .v2, source: .unix(path: []), destination: .unix(path: [0x61, 0, 0x62])),
            "PROXY v2 UNIX destination path \"a\\x00b\" would not read back the same")
    }

    func testTLVRefusals() {
        func header(_ tlvs: [ProxyTLV]) -> ProxyHeader { ProxyHeader(version: .v2, source: v4a, destination: v4b, tlvs: tlvs) }
        assertNotEncoded(
            header([.authority("a"), .authority("b")]), "PROXY v2 TLV 0x02 (AUTHORITY) given twice (a receiver refuses that)")
        assertNotEncoded(
            header([.unknown(type: 0x20, value: [])]),
            "PROXY v2 TLV 0x20 (SSL) is registered: give it as its own case, not as unknown")
        assertNotEncoded(
            header([.uniqueID([UInt8](repeating: 0, count: 129))]),
            "PROXY v2 TLV 0x05 (UNIQUE_ID) is 129 bytes, more than the 128 allowed")
        assertNotEncoded(header([.authority("a\u{0}b")]), "PROXY v2 TLV 0x02 (AUTHORITY) contains a NUL byte: \"a\\x00b\"")
        assertNotEncoded(header([.networkNamespace("é")]), "PROXY v2 TLV 0x30 (NETNS) is not printable US-ASCII: \"\\xC3\\xA9\"")
        assertNotEncoded(header([.noop(length: -1)]), "PROXY v2 TLV 0x04 (NOOP) length -1 is negative")
        assertNotEncoded(
            header([.unknown(type: 0xE0, value: [UInt8](repeating: 0, count: 65536))]),
            "PROXY v2 TLV 0xE0 value is 65536 bytes, more than a TLV holds (65535)")
        assertNotEncoded(
            header([
                .unknown(type: 0xE0, value: [UInt8](repeating: 0, count: 40000)),
                .unknown(type: 0xE1, value: [UInt8](repeating: 0, count: 40000)),
            ]),
            "PROXY v2 header would be 80018 bytes after its prefix, more than its length field holds (65535)")
        let cn = { (subTLVs: [ProxySSLInfo.SubTLV]) in header([.ssl(ProxySSLInfo(client: .ssl, verify: 0, subTLVs: subTLVs))]) }
        assertNotEncoded(
            cn([.commonName("a"), .commonName("b")]), "PROXY v2 SSL sub-TLV 0x22 (CN) given twice (a receiver refuses that)")
        assertNotEncoded(
            cn([.unknown(type: 0x21, value: [])]),
            "PROXY v2 SSL sub-TLV 0x21 (VERSION) is registered: give it as its own case, not as unknown")
        assertNotEncoded(
            cn([.cipher("AES\tGCM")]), "PROXY v2 SSL sub-TLV 0x23 (CIPHER) is not printable US-ASCII: \"AES\\x09GCM\"")
    }

    // MARK: Round trips

    func testRoundTrips() {
        let ssl = ProxySSLInfo(
            client: [.ssl, .certificateInSession], verify: 0, version: "TLSv1.2", commonName: "sensor-7",
            cipher: "ECDHE-RSA-AES128-GCM-SHA256")
        let headers = [
            Fixture.ipv4Header, Fixture.sslCNHeader,
            ProxyHeader(version: .v1, source: v4a, destination: v4b), ProxyHeader(version: .v1, source: v6a, destination: v6b),
            ProxyHeader(version: .v1), ProxyHeader(version: .v2, command: .local), ProxyHeader(version: .v2),
            ProxyHeader(
                version: .v2, source: v6a, destination: v6b, tlvs: [.ssl(ssl), .noop(length: 5), .networkNamespace("ns1")]),
            ProxyHeader(version: .v2, source: v4a, destination: v4b, tlvs: [.unknown(type: 0xEE, value: [1, 2, 3]), .alpn([])]),
        ]
        for header in headers {
            let bytes = encoded(header)
            XCTAssertEqual(outcome(bytes + Fixture.clientHello), .header(header, remaining: Fixture.clientHello), "\(header)")
        }
    }

    func testGeneratedHeadersRoundTrip() {
        var random = FuzzRandom(seed: 0x50_50_52_54)
        for iteration in 0..<2_000 {
            let header = randomHeader(&random)
            // A checksum needs TLVs, which need an address family.
            let withCRC = random.oneIn(3) && header.version == .v2 && header.source != nil
            let bytes = encoded(header, addingCRC32C: withCRC)
            guard case .header(let parsed, remaining: []) = outcome(bytes) else {
                return XCTFail("generated header \(iteration) (seed 0x50505254) does not parse: \(outcome(bytes))")
            }
            var expected = header
            if withCRC, case .crc32c(let checksum)? = parsed.tlvs.last { expected.tlvs.append(.crc32c(checksum)) }
            XCTAssertEqual(parsed, expected, "generated header \(iteration) (seed 0x50505254)")
        }
    }
}

/// A random header of any shape the encoder accepts.
func randomHeader(_ random: inout FuzzRandom) -> ProxyHeader {
    func port() -> UInt16 { UInt16(truncatingIfNeeded: random.next()) }
    func ascii(_ count: Int) -> String {
        String(decoding: (0..<count).map { _ in UInt8(0x21 + random.below(94)) }, as: UTF8.self)
    }
    let version: ProxyProtocolVersion = random.oneIn(3) ? .v1 : .v2
    let family = random.below(version == .v1 ? 3 : 5)
    var header = ProxyHeader(version: version)
    switch family {
    case 0:
        header.source = .ipv4(ProxyIPv4Address(value: UInt32(truncatingIfNeeded: random.next())), port: port())
        header.destination = .ipv4(ProxyIPv4Address(value: UInt32(truncatingIfNeeded: random.next())), port: port())
    case 1:
        // Zero runs of every length, so that the v1 text compresses them in every way.
        func address() -> ProxyIPv6Address {
            ProxyIPv6Address(bytes: (0..<16).map { _ in random.oneIn(2) ? 0 : random.byte() })!
        }
        header.source = .ipv6(address(), port: port())
        header.destination = .ipv6(address(), port: port())
    case 2:
        header.command = version == .v2 && random.oneIn(2) ? .local : .proxy
    default:
        header.source = .unix(path: Array(ascii(random.below(108)).utf8))
        header.destination = .unix(path: [0] + Array(ascii(1 + random.below(107)).utf8))
    }
    guard version == .v2, header.source != nil else { return header }
    var tlvs: [ProxyTLV] = []
    if random.oneIn(2) { tlvs.append(.alpn(random.bytes(random.below(20)))) }
    if random.oneIn(2) { tlvs.append(.authority(ascii(random.below(60)) + "é")) }
    if random.oneIn(3) { tlvs.append(.uniqueID(random.bytes(random.below(129)))) }
    if random.oneIn(2) {
        let ssl = ProxySSLInfo(
            client: ProxySSLInfo.ClientFlags(rawValue: random.byte() & 0x07), verify: UInt32(truncatingIfNeeded: random.next()),
            version: random.oneIn(2) ? ascii(7) : nil, commonName: random.oneIn(2) ? ascii(random.below(64)) : nil,
            keyAlgorithm: random.oneIn(3) ? ascii(7) : nil, signatureAlgorithm: random.oneIn(3) ? ascii(10) : nil,
            cipher: random.oneIn(2) ? ascii(22) : nil)
        tlvs.append(.ssl(ssl))
    }
    if random.oneIn(4) { tlvs.append(.noop(length: random.below(8))) }
    if random.oneIn(4) { tlvs.append(.networkNamespace(ascii(1 + random.below(10)))) }
    if random.oneIn(3) { tlvs.append(.unknown(type: 0xE0 + UInt8(random.below(32)), value: random.bytes(random.below(30)))) }
    for index in tlvs.indices.reversed() where random.oneIn(2) { tlvs.swapAt(index, random.below(index + 1)) }
    header.tlvs = tlvs
    return header
}
