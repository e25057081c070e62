import NIOCore
import StapleGateProxyProtocol
import XCTest

/// Bytes from hex, spaces allowed between them (fixtures are written grouped by field).
func hexBytes(_ hex: String) -> [UInt8] {
    let digits = [Character](hex.filter { !$0.isWhitespace })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

/// Headers written by hand from proxy-protocol.txt and from HAProxy's regression tests
/// (reg-tests/connection/*.vtc, whose `sendhex` lines are what HAProxy is fed).
enum Fixture {
    /// §2.1's example line, and the request that follows it there.
    static let specV1 = Array("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".utf8)
    static let specV1Request = Array("GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n".utf8)

    /// The same connection as a v2 header: signature, PROXY, TCP over IPv4, 12 address bytes,
    /// 192.168.0.1 and 192.168.0.11, ports 56324 (0xDC04) and 443 (0x01BB).
    static let specV2IPv4 = hexBytes("0d0a0d0a000d0a515549540a 21 11 000c c0a80001 c0a8000b dc04 01bb")

    /// proxy_protocol_tlv_validation.vtc, client c1 (accepted): 127.0.0.1:42 to
    /// 127.0.0.1:1337, PP2_TYPE_AUTHORITY "12345".
    static let haproxyAuthority = hexBytes(
        "0d0a0d0a000d0a515549540a 21 11 0014 7F000001 7F000001 002A 0539 02 0005 3132333435")
    /// c3 (connection closed): the AUTHORITY TLV announces 10 bytes where the header has 5 left.
    static let haproxyTLVOverrun = hexBytes(
        "0d0a0d0a000d0a515549540a 21 11 0014 7F000001 7F000001 002A 0539 02 000A 31323334353132333435")
    /// c4 (connection closed): a 7-byte TLV in 8 bytes of TLV area; the 8th byte is the first of
    /// the request that follows ("G").
    static let haproxyStrayByte =
        hexBytes(
            "0d0a0d0a000d0a515549540a 21 11 0014 7F000001 7F000001 002A 0539 02 0004 31323334") + Array("GET / HTTP/1.1\r\n".utf8)

    /// proxy_protocol_tlv_embedded_nul.vtc, c1: AUTHORITY, UNIQUE_ID and custom 0xE1 of
    /// "public", and an SSL TLV with client 0 and verify 0 (what send-proxy-v2-ssl sends for a
    /// client that is not on TLS).
    static let haproxyEmbeddedNULc1 = hexBytes(
        "0d0a0d0a000d0a515549540a 2111 002f 7f0000017f000001002a0539 020006 7075626c6963 050006 7075626c6963 "
            + "e10006 7075626c6963 200005 0000000000")
    /// c2: the same values as "public\0x", which HAProxy's text fetches refuse to match.
    static let haproxyEmbeddedNULc2 = hexBytes(
        "0d0a0d0a000d0a515549540a 2111 002d 7f0000017f000001002a0539 020008 7075626c69630078 050008 7075626c69630078 "
            + "e10008 7075626c69630078")

    /// What HAProxy's `send-proxy-v2-ssl-cn` with `proxy-v2-options crc32c,unique-id,
    /// cert-key,cert-sig,ssl-cipher` writes, in its order (conn_send_proxy / make_proxy_line_v2):
    /// CRC32C first, ALPN, AUTHORITY, UNIQUE_ID, then SSL with VERSION, CN, KEY_ALG, SIG_ALG,
    /// CIPHER. [2001:db8::1]:50000 to [2001:db8::2]:8883; client flags SSL, CERT_CONN and
    /// CERT_SESS, verify 0. The checksum, 0x99B65E24, was computed with a bit-by-bit CRC-32C
    /// written separately from the library's table-driven one.
    static let sslCNWithCRC = hexBytes(
        "0d0a0d0a000d0a515549540a 2121 00a1"
            + "20010db8000000000000000000000001 20010db8000000000000000000000002 c350 22b3"
            + "030004 99b65e24"
            + "010004 6d717474"
            + "020012 62726f6b65722e6578616d706c652e636f6d"
            + "050009 636f6e6e2d30303031"
            + "20004b 07 00000000"
            + "210007 544c5376312e33"
            + "220009 6465766963652d3432"
            + "250007 52534132303438"
            + "24000a 5253412d534841323536"
            + "230016 544c535f4145535f3235365f47434d5f534841333834")

    static let sslCNHeader = ProxyHeader(
        version: .v2, command: .proxy,
        source: .ipv6(ProxyIPv6Address(high: 0x2001_0db8_0000_0000, low: 1), port: 50000),
        destination: .ipv6(ProxyIPv6Address(high: 0x2001_0db8_0000_0000, low: 2), port: 8883),
        tlvs: [
            .crc32c(0x99B6_5E24), .alpn(Array("mqtt".utf8)), .authority("broker.example.com"),
            .uniqueID(Array("conn-0001".utf8)),
            .ssl(
                ProxySSLInfo(
                    client: [.ssl, .certificateOnConnection, .certificateInSession], verify: 0, version: "TLSv1.3",
                    commonName: "device-42", keyAlgorithm: "RSA2048", signatureAlgorithm: "RSA-SHA256",
                    cipher: "TLS_AES_256_GCM_SHA384")),
        ])

    /// The first bytes of a TLS ClientHello: a handshake record (0x16), TLS 1.0 record version,
    /// length 0x0200, ClientHello (0x01).
    static let clientHello = hexBytes("16 0301 0200 01 0001fc 0303") + [UInt8](repeating: 0xAB, count: 32)

    static let ipv4Header = ProxyHeader(
        version: .v2, source: .ipv4(ProxyIPv4Address(192, 168, 0, 1), port: 56324),
        destination: .ipv4(ProxyIPv4Address(192, 168, 0, 11), port: 443))
}

/// SplitMix64 (Steele, Lea & Flood, 2014): the same values on every platform and every run, so
/// a failing iteration of a fuzz loop reproduces from its seed.
struct FuzzRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 0..<bound.
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in byte() } }
    mutating func oneIn(_ odds: Int) -> Bool { below(odds) == 0 }
    mutating func pick<T>(_ choices: [T]) -> T { choices[below(choices.count)] }
}

/// What one call of the parser made of some bytes.
enum Outcome: Equatable {
    case header(ProxyHeader, remaining: [UInt8])
    case needMoreBytes
    case refused(ProxyHeaderError)
}

/// Parses `bytes` with a fresh parser, in one call.
func outcome(
    _ bytes: [UInt8], accepting: ProxyHeaderParser.AcceptedVersions = .any,
    maximumHeaderSize: Int = ProxyHeaderParser.defaultMaximumHeaderSize
) -> Outcome {
    var parser = ProxyHeaderParser(accepting: accepting, maximumHeaderSize: maximumHeaderSize)
    var buffer = ByteBuffer(bytes: bytes)
    return outcome(of: &parser, &buffer)
}

func outcome(of parser: inout ProxyHeaderParser, _ buffer: inout ByteBuffer) -> Outcome {
    let before = buffer
    do throws(ProxyHeaderError) {
        guard let header = try parser.parse(&buffer) else {
            XCTAssertEqual(buffer, before, "an incomplete header must leave the buffer as it was")
            return .needMoreBytes
        }
        return .header(header, remaining: Array(buffer.readableBytesView))
    } catch {
        return .refused(error)
    }
}

extension XCTestCase {
    func assertRefused(
        _ bytes: [UInt8], _ reason: String, kind: ProxyHeaderError.Kind = .malformed,
        accepting: ProxyHeaderParser.AcceptedVersions = .any, maximumHeaderSize: Int = ProxyHeaderParser.defaultMaximumHeaderSize,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(
            outcome(bytes, accepting: accepting, maximumHeaderSize: maximumHeaderSize), .refused(ProxyHeaderError(kind, reason)),
            file: file, line: line)
    }

    func assertRefused(_ line: String, _ reason: String, file: StaticString = #filePath, line testLine: UInt = #line) {
        assertRefused(Array(line.utf8), reason, file: file, line: testLine)
    }

    func assertParses(
        _ bytes: [UInt8], _ expected: ProxyHeader, remaining: [UInt8] = [], file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(outcome(bytes), .header(expected, remaining: remaining), file: file, line: line)
    }
}
