import NIOCore
import StapleGateProxyProtocol
import XCTest

let v2Signature = hexBytes("0d0a0d0a000d0a515549540a")
/// 127.0.0.1:42 to 127.0.0.1:1337, as in HAProxy's regression tests.
let loopbackBlock = hexBytes("7F000001 7F000001 002A 0539")

/// A v2 header around `body`, its length field taken from the body unless given.
func v2Header(_ versionCommand: UInt8 = 0x21, _ family: UInt8 = 0x11, _ body: [UInt8], length: Int? = nil) -> [UInt8] {
    let length = length ?? body.count
    return v2Signature + [versionCommand, family, UInt8(length >> 8), UInt8(length & 0xFF)] + body
}

func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
    [type, UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
}

/// The binary header, proxy-protocol.txt §2.2: prefix, addresses, command, family and size.
final class ProxyV2ParserTests: XCTestCase {
    private let loopback = ProxyIPv4Address(127, 0, 0, 1)

    // MARK: Families

    func testSpecIPv4ExampleLeavesTheClientHelloInTheBuffer() {
        assertParses(Fixture.specV2IPv4 + Fixture.clientHello, Fixture.ipv4Header, remaining: Fixture.clientHello)
    }

    func testIPv6() {
        let body = hexBytes("20010db8000000000000000000000001 fe800000000000000000000000000002 c350 22b3")
        assertParses(
            v2Header(0x21, 0x21, body),
            ProxyHeader(
                version: .v2, source: .ipv6(ProxyIPv6Address("2001:db8::1")!, port: 50000),
                destination: .ipv6(ProxyIPv6Address("fe80::2")!, port: 8883)))
    }

    func testUNIXStreamPathsLoseTheirPadding() {
        func field(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: 108 - bytes.count) }
        let filesystem = Array("/run/haproxy/front.sock".utf8)
        let abstract: [UInt8] = [0] + Array("gateway".utf8)
        // The bytes after a filesystem path's NUL are whatever the sender's sockaddr held.
        var source = field(filesystem)
        source[60] = 0x41
        assertParses(
            v2Header(0x21, 0x31, source + field(abstract)),
            ProxyHeader(version: .v2, source: .unix(path: filesystem), destination: .unix(path: abstract)))
        let full = [UInt8](repeating: UInt8(ascii: "a"), count: 108)
        assertParses(
            v2Header(0x21, 0x31, full + field([])),
            ProxyHeader(version: .v2, source: .unix(path: full), destination: .unix(path: [])))
    }

    func testLocalCommandDiscardsItsWholeBlock() {
        let local = ProxyHeader(version: .v2, command: .local)
        // What HAProxy's health checks send: LOCAL, AF_UNSPEC, no address.
        assertParses(v2Header(0x20, 0x00, []) + [0x16], local, remaining: [0x16])
        // §2.2: "Receivers MUST always consider this field to skip the appropriate number of
        // bytes and must not assume zero is presented for LOCAL connections."
        assertParses(v2Header(0x20, 0x11, loopbackBlock + tlv(0x02, Array("x".utf8))) + [1, 2], local, remaining: [1, 2])
        // The family is ignored too, even one the spec does not define, and so are bad TLVs.
        assertParses(v2Header(0x20, 0xFF, [0xDE, 0xAD]), local)
    }

    func testProxyOverUnspecifiedFamilyIgnoresItsBlock() {
        assertParses(v2Header(0x21, 0x00, []), ProxyHeader(version: .v2, command: .proxy))
        assertParses(v2Header(0x21, 0x00, [1, 2, 3, 4, 5]) + [9], ProxyHeader(version: .v2, command: .proxy), remaining: [9])
        assertParses(v2Header(0x21, 0x01, []), ProxyHeader(version: .v2, command: .proxy))
    }

    // MARK: Prefix errors, each found as soon as its byte arrives

    func testWrongSignatureFailsAtTheFirstWrongByte() {
        var bytes = Fixture.specV2IPv4
        bytes[4] = 0x01
        assertRefused(
            Array(bytes.prefix(5)),
            "no PROXY protocol header (the connection starts with bytes 0D 0A 0D 0A 01, not the PROXY v2 signature)",
            kind: .noHeader)
        assertRefused(
            Array("\r\nGET".utf8),
            "no PROXY protocol header (the connection starts with bytes 0D 0A 47, not the PROXY v2 signature)", kind: .noHeader)
        for count in 1...15 {
            XCTAssertEqual(outcome(Array(Fixture.specV2IPv4.prefix(count))), .needMoreBytes, "\(count) bytes")
        }
    }

    func testVersionNibbleMustBeTwo() {
        assertRefused(v2Signature + [0x11], "PROXY v2 version is 1 (byte 13 is 0x11), only 2 exists")
        assertRefused(v2Signature + [0x31], "PROXY v2 version is 3 (byte 13 is 0x31), only 2 exists")
        assertRefused(v2Signature + [0x01, 0x11], "PROXY v2 version is 0 (byte 13 is 0x01), only 2 exists")
    }

    func testCommandMustBeLocalOrProxy() {
        assertRefused(v2Signature + [0x22], "PROXY v2 command 0x2 is neither LOCAL (0x0) nor PROXY (0x1)")
        assertRefused(v2Signature + [0x2F], "PROXY v2 command 0xF is neither LOCAL (0x0) nor PROXY (0x1)")
    }

    func testFamilyAndTransport() {
        assertRefused(v2Signature + [0x21, 0x41], "PROXY v2 address family 0x4 is not UNSPEC, INET, INET6 or UNIX")
        assertRefused(v2Signature + [0x21, 0x13], "PROXY v2 transport protocol 0x3 is not UNSPEC, STREAM or DGRAM")
        assertRefused(
            v2Signature + [0x21, 0x12],
            "PROXY v2 header is for a datagram connection (AF_INET DGRAM); this gateway relays streams", kind: .unsupported)
        assertRefused(
            v2Signature + [0x21, 0x32],
            "PROXY v2 header is for a datagram connection (AF_UNIX DGRAM); this gateway relays streams", kind: .unsupported)
        assertRefused(
            v2Signature + [0x21, 0x20],
            "PROXY v2 header gives AF_INET6 addresses over an unspecified transport; this gateway relays streams",
            kind: .unsupported)
    }

    func testLengthMustCoverTheAddressBlock() {
        assertRefused(
            v2Signature + [0x21, 0x11, 0x00, 0x0B],
            "PROXY v2 length 11 is shorter than the 12-byte TCP over IPv4 address block")
        assertRefused(
            v2Signature + [0x21, 0x21, 0x00, 0x0C],
            "PROXY v2 length 12 is shorter than the 36-byte TCP over IPv6 address block")
        assertRefused(
            v2Signature + [0x21, 0x31, 0x00, 0xD7],
            "PROXY v2 length 215 is shorter than the 216-byte UNIX stream address block")
    }

    func testOversizedHeaderIsRefusedFromItsPrefix() {
        assertRefused(
            v2Signature + [0x21, 0x11, 0xFF, 0xFF], "PROXY v2 header announces 65551 bytes, more than the 4096 allowed",
            kind: .tooLarge)
        assertRefused(
            v2Signature + [0x21, 0x11, 0x0F, 0xF1], "PROXY v2 header announces 4097 bytes, more than the 4096 allowed",
            kind: .tooLarge)
        XCTAssertEqual(outcome(v2Signature + [0x21, 0x11, 0x0F, 0xF0]), .needMoreBytes, "4096 bytes exactly")
        // LOCAL headers are bounded too: their block is buffered before it is skipped.
        assertRefused(
            v2Signature + [0x20, 0x00, 0x00, 0x31], "PROXY v2 header announces 65 bytes, more than the 64 allowed",
            kind: .tooLarge, maximumHeaderSize: 64)
        let atTheLimit = v2Header(0x21, 0x11, loopbackBlock + tlv(0xE0, [UInt8](repeating: 7, count: 33)))
        XCTAssertEqual(atTheLimit.count, 64)
        XCTAssertEqual(
            outcome(atTheLimit, maximumHeaderSize: 64),
            .header(
                ProxyHeader(
                    version: .v2, source: .ipv4(loopback, port: 42), destination: .ipv4(loopback, port: 1337),
                    tlvs: [.unknown(type: 0xE0, value: [UInt8](repeating: 7, count: 33))]),
                remaining: []))
    }

    func testV2IsRefusedWhereOnlyV1IsAccepted() {
        assertRefused(
            Fixture.specV2IPv4,
            "the connection starts with byte 0x0D, as a PROXY v2 header does, but this listener accepts only PROXY v1",
            kind: .versionNotAccepted, accepting: .v1)
        XCTAssertEqual(outcome(Fixture.specV2IPv4, accepting: .v2), .header(Fixture.ipv4Header, remaining: []))
    }

    // MARK: First byte

    func testATLSClientHelloIsRefusedAtItsFirstByte() {
        let reason = { (expected: String) in
            "no \(expected) (the connection starts with a TLS record, byte 0x16: is the balancer sending the PROXY protocol?)"
        }
        assertRefused([0x16], reason("PROXY protocol header"), kind: .noHeader)
        assertRefused(Fixture.clientHello, reason("PROXY protocol header"), kind: .noHeader)
        assertRefused([0x16], reason("PROXY v1 line"), kind: .noHeader, accepting: .v1)
        assertRefused([0x16], reason("PROXY v2 header"), kind: .noHeader, accepting: .v2)
    }

    func testOtherFirstBytesAreNamed() {
        assertRefused(
            [0x10, 0x0C],
            "no PROXY protocol header (the connection starts with an MQTT CONNECT, byte 0x10: "
                + "is the balancer sending the PROXY protocol?)",
            kind: .noHeader)
        assertRefused(
            Array("GET / HTTP/1.1".utf8),
            "no PROXY protocol header (the connection starts with \"G\", byte 0x47: is the balancer sending the PROXY protocol?)",
            kind: .noHeader)
        assertRefused(
            [0x00],
            "no PROXY protocol header (the connection starts with byte 0x00: is the balancer sending the PROXY protocol?)",
            kind: .noHeader)
        XCTAssertEqual(outcome([]), .needMoreBytes)
    }

    // MARK: Arrival in pieces

    func testTruncatedHeaderFedByteByByte() {
        let trailing = Fixture.clientHello
        let bytes = Fixture.sslCNWithCRC + trailing
        var parser = ProxyHeaderParser(accepting: .v2)
        var buffer = ByteBuffer()
        for count in 1...bytes.count {
            buffer.writeInteger(bytes[count - 1])
            let result = outcome(of: &parser, &buffer)
            guard count == Fixture.sslCNWithCRC.count else {
                XCTAssertEqual(result, .needMoreBytes, "after \(count) bytes")
                continue
            }
            XCTAssertEqual(result, .header(Fixture.sslCNHeader, remaining: []))
            XCTAssertEqual(buffer.readerIndex, 177, "exactly the header's bytes consumed")
            buffer.writeBytes(bytes[count...])
            XCTAssertEqual(Array(buffer.readableBytesView), trailing)
            return
        }
        XCTFail("the header never completed")
    }

    func testStartsAtTheReaderIndexAndTheParserIsReusable() {
        var parser = ProxyHeaderParser()
        var buffer = ByteBuffer(bytes: [0xAA, 0xBB] + Fixture.specV2IPv4 + Fixture.specV1)
        buffer.moveReaderIndex(forwardBy: 2)
        XCTAssertEqual(outcome(of: &parser, &buffer), .header(Fixture.ipv4Header, remaining: Fixture.specV1))
        guard case .header(let second, let remaining) = outcome(of: &parser, &buffer) else {
            return XCTFail("the same parser reads the next connection's header")
        }
        XCTAssertEqual(second.version, .v1)
        XCTAssertEqual(remaining, [])
        // An error resets the parser too.
        var refused = ByteBuffer(bytes: Array("PROXY UNKNOWN\n".utf8))
        XCTAssertEqual(
            outcome(of: &parser, &refused), .refused(.init(.malformed, "PROXY v1 line ends with a bare LF (CRLF is required)")))
        var fresh = ByteBuffer(bytes: Array("PROXY UNKNOWN\r\n".utf8))
        XCTAssertEqual(outcome(of: &parser, &fresh), .header(ProxyHeader(version: .v1), remaining: []))
    }
}
