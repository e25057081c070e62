import NIOCore
import StapleGateProxyProtocol
import XCTest

/// The human-readable header, proxy-protocol.txt §2.1.
final class ProxyV1ParserTests: XCTestCase {
    private func v1(_ source: ProxyEndpoint?, _ destination: ProxyEndpoint?) -> ProxyHeader {
        ProxyHeader(version: .v1, command: .proxy, source: source, destination: destination)
    }

    private func ipv6(_ text: String) -> ProxyIPv6Address { ProxyIPv6Address(text)! }

    // MARK: Valid lines

    func testSpecExampleLeavesTheRequestInTheBuffer() {
        assertParses(
            Fixture.specV1 + Fixture.specV1Request,
            v1(.ipv4(ProxyIPv4Address(192, 168, 0, 1), port: 56324), .ipv4(ProxyIPv4Address(192, 168, 0, 11), port: 443)),
            remaining: Fixture.specV1Request)
    }

    func testTCP6() {
        assertParses(
            Array("PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 0 65535\r\n".utf8),
            v1(.ipv6(ipv6("2001:db8::1"), port: 0), .ipv6(ipv6("2001:db8::2"), port: 65535)))
        // inet_pton takes the dotted form of an IPv4-mapped address, as HAProxy (which uses it) does.
        assertParses(
            Array("PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n".utf8),
            v1(
                .ipv6(ProxyIPv6Address(high: 0, low: 0xFFFF_C000_0201), port: 1),
                .ipv6(ProxyIPv6Address(high: 0, low: 0), port: 2)))
    }

    func testUnknownShortFormAndLongFormWhoseRestIsIgnored() {
        assertParses(Array("PROXY UNKNOWN\r\n".utf8) + Fixture.clientHello, v1(nil, nil), remaining: Fixture.clientHello)
        // §2.1: "the receiver must ignore anything presented before the CRLF is found".
        assertParses(Array("PROXY UNKNOWN whatever it is, even 1.2.3 999999\r\n".utf8), v1(nil, nil))
    }

    func testTheLongestLinesOfTheSpecFit() {
        let ffff = Array(repeating: "ffff", count: 8).joined(separator: ":")
        let tcp6 = "PROXY TCP6 \(ffff) \(ffff) 65535 65535\r\n"
        let unknown = "PROXY UNKNOWN \(ffff) \(ffff) 65535 65535\r\n"
        XCTAssertEqual(tcp6.utf8.count, 104)
        XCTAssertEqual(unknown.utf8.count, 107)
        let all = ipv6(ffff)
        assertParses(Array(tcp6.utf8), v1(.ipv6(all, port: 65535), .ipv6(all, port: 65535)))
        assertParses(Array(unknown.utf8), v1(nil, nil))
        assertParses(
            Array("PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n".utf8),
            v1(.ipv4(ProxyIPv4Address(value: .max), port: 65535), .ipv4(ProxyIPv4Address(value: 0), port: 0)))
    }

    // MARK: Length and line ending

    func testALineWithoutCRLFIn107BytesIsRefused() {
        let long = Array(("PROXY UNKNOWN " + String(repeating: "x", count: 93)).utf8)
        XCTAssertEqual(long.count, 107)
        let reason = "PROXY v1 line has no CRLF within its first 107 bytes (the longest a v1 line can be)"
        assertRefused(long, reason, kind: .tooLarge)
        XCTAssertEqual(outcome(Array(long.prefix(106))), .needMoreBytes)
        // A CRLF as bytes 107 and 108 makes a 108-byte line: one too many.
        assertRefused(Array(long.prefix(106)) + Array("\r\n".utf8), reason, kind: .tooLarge)
        XCTAssertEqual(outcome(Array(long.prefix(105)) + Array("\r\n".utf8)), .header(v1(nil, nil), remaining: []), "107 bytes")
    }

    func testOnlyCRLFEndsTheLine() {
        assertRefused("PROXY UNKNOWN\n", "PROXY v1 line ends with a bare LF (CRLF is required)")
        assertRefused("PROXY UNKNOWN\rX\r\n", "PROXY v1 line has a CR that is not followed by LF")
        assertRefused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "PROXY v1 line has a CR that is not followed by LF")
        XCTAssertEqual(outcome(Array("PROXY UNKNOWN\r".utf8)), .needMoreBytes)
    }

    // MARK: Signature

    func testSignatureIsCheckedByteByByte() {
        XCTAssertEqual(outcome(Array("PROX".utf8)), .needMoreBytes)
        XCTAssertEqual(outcome(Array("PROXY ".utf8)), .needMoreBytes)
        assertRefused(
            Array("POST / HTTP/1.1\r\n".utf8), "no PROXY protocol header (the connection starts with \"PO\", not \"PROXY \")",
            kind: .noHeader)
        assertRefused(
            Array("PROXY\r\n".utf8), "no PROXY protocol header (the connection starts with \"PROXY\\r\", not \"PROXY \")",
            kind: .noHeader)
        assertRefused(
            Array("proxy TCP4".utf8),
            "no PROXY protocol header (the connection starts with \"p\", byte 0x70: is the balancer sending the PROXY protocol?)",
            kind: .noHeader)
    }

    func testV1IsRefusedWhereOnlyV2IsAccepted() {
        assertRefused(
            Fixture.specV1, "the connection starts with \"P\", as a PROXY v1 line does, but this listener accepts only PROXY v2",
            kind: .versionNotAccepted, accepting: .v2)
        XCTAssertEqual(outcome(Fixture.specV1, accepting: .v1), outcome(Fixture.specV1, accepting: .any))
    }

    // MARK: Fields

    func testProtocolField() {
        let reason = { (field: String) in "PROXY v1 protocol \(field) is not TCP4, TCP6 or UNKNOWN" }
        assertRefused("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", reason("\"TCP5\""))
        assertRefused("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", reason("\"tcp4\""))
        assertRefused("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", reason("\"UDP4\""))
        assertRefused("PROXY UNKNOWNX\r\n", reason("\"UNKNOWNX\""))
        assertRefused("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", reason("\"\""))
        assertRefused("PROXY \r\n", reason("\"\""))
        assertRefused("PROXY TCP4\t1.2.3.4\r\n", reason("\"TCP4\\x091.2.3.4\""))
    }

    func testMissingAndExtraFields() {
        assertRefused("PROXY TCP4\r\n", "PROXY v1 line ends before the source address")
        assertRefused("PROXY TCP4 1.2.3.4\r\n", "PROXY v1 line ends before the destination address")
        assertRefused("PROXY TCP4 1.2.3.4 5.6.7.8\r\n", "PROXY v1 line ends before the source port")
        assertRefused("PROXY TCP6 ::1 ::2 80\r\n", "PROXY v1 line ends before the destination port")
        assertRefused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY v1 line goes on after the destination port: \" 3\"")
        assertRefused("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "PROXY v1 line goes on after the destination port: \" \"")
    }

    func testIPv4Addresses() {
        let source = { (field: String) in "PROXY v1 source address \(field) is not an IPv4 address (the line says TCP4)" }
        for bad in ["1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.-4", "1..3.4", "1.2.3.4.", "", "0x1.2.3.4", "1.2.3.1000"] {
            assertRefused("PROXY TCP4 \(bad) 5.6.7.8 1 2\r\n", source("\"\(bad)\""))
        }
        // §2.1: "Heading zeroes are not permitted": inet_aton would read 010 as octal 8.
        assertRefused("PROXY TCP4 010.0.0.1 5.6.7.8 1 2\r\n", source("\"010.0.0.1\""))
        assertRefused("PROXY TCP4 10.0.0.00 5.6.7.8 1 2\r\n", source("\"10.0.0.00\""))
        assertRefused("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", source("\"::1\""))
        assertRefused(
            "PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n",
            "PROXY v1 destination address \"5.6.7\" is not an IPv4 address (the line says TCP4)")
    }

    func testIPv6Addresses() {
        let source = { (field: String) in "PROXY v1 source address \(field) is not an IPv6 address (the line says TCP6)" }
        for bad in ["1.2.3.4", "2001:db8::1::2", "::1%eth0", "12345::", "g::1", "1:2:3:4:5:6:7:8:9", ":::", "[::1]"] {
            assertRefused("PROXY TCP6 \(bad) ::2 1 2\r\n", source("\"\(bad)\""))
        }
        // A NUL would end inet_pton's C string: "::1\0x" must not pass as ::1.
        assertRefused(Array("PROXY TCP6 ::1".utf8) + [0] + Array("x ::2 1 2\r\n".utf8), source("\"::1\\x00x\""))
        assertRefused(
            "PROXY TCP6 ::1 2001:db8:::2 1 2\r\n",
            "PROXY v1 destination address \"2001:db8:::2\" is not an IPv6 address (the line says TCP6)")
    }

    func testPorts() {
        let line = { (sourcePort: String, destinationPort: String) in
            "PROXY TCP4 1.2.3.4 5.6.7.8 \(sourcePort) \(destinationPort)\r\n"
        }
        for bad in ["70000", "65536", "+80", "-1", "080", "00", "8a", "1e3", "99999999999999999999"] {
            assertRefused(line(bad, "2"), "PROXY v1 source port \"\(bad)\" is not a port")
            assertRefused(line("1", bad), "PROXY v1 destination port \"\(bad)\" is not a port")
        }
        assertRefused("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n", "PROXY v1 source port \"\" is not a port")
    }

    func testTheFirstBadFieldIsTheOneNamed() {
        assertRefused(
            "PROXY TCP4 1.2.3 5.6.7 70000 70000\r\n",
            "PROXY v1 source address \"1.2.3\" is not an IPv4 address (the line says TCP4)")
        assertRefused("PROXY TCP4 1.2.3.4 5.6.7.8 70000 -1\r\n", "PROXY v1 source port \"70000\" is not a port")
    }

    // MARK: Arrival in pieces

    func testLineFedByteByByte() {
        let bytes = Fixture.specV1 + Fixture.clientHello
        var parser = ProxyHeaderParser()
        var buffer = ByteBuffer()
        for (index, byte) in bytes.enumerated() {
            buffer.writeInteger(byte)
            let result = outcome(of: &parser, &buffer)
            if index < Fixture.specV1.count - 1 {
                XCTAssertEqual(result, .needMoreBytes, "after \(index + 1) bytes")
                continue
            }
            XCTAssertEqual(
                result,
                .header(
                    v1(.ipv4(ProxyIPv4Address(192, 168, 0, 1), port: 56324), .ipv4(ProxyIPv4Address(192, 168, 0, 11), port: 443)),
                    remaining: []))
            buffer.writeBytes(bytes[(index + 1)...])
            XCTAssertEqual(Array(buffer.readableBytesView), Fixture.clientHello, "the ClientHello is left for TLS")
            break
        }
    }

    func testAddressTypesTextForms() {
        XCTAssertEqual(ProxyIPv4Address("192.0.2.1")?.value, 0xC000_0201)
        XCTAssertEqual(ProxyIPv4Address("192.0.2.1")?.description, "192.0.2.1")
        XCTAssertNil(ProxyIPv4Address("192.0.2.01"))
        // RFC 5952 §4: the longest zero run (the first of equals) compressed, one zero never.
        let forms = [
            "2001:DB8:0:0:0:0:0:1": "2001:db8::1", "2001:db8:0:1:1:1:1:1": "2001:db8:0:1:1:1:1:1",
            "2001:0:0:1:0:0:0:1": "2001:0:0:1::1", "2001:db8:0:0:1:0:0:1": "2001:db8::1:0:0:1", "0::0": "::", "::1": "::1",
            "fe80::": "fe80::", "::ffff:c000:0201": "::ffff:192.0.2.1", "0:0:0:0:0:0:0:0": "::",
        ]
        for (text, canonical) in forms {
            XCTAssertEqual(ProxyIPv6Address(text)?.description, canonical, text)
        }
        XCTAssertEqual(ProxyIPv6Address("2001:db8::1")?.bytes, hexBytes("20010db8000000000000000000000001"))
        XCTAssertNil(ProxyIPv6Address(bytes: [1, 2, 3]))
        XCTAssertEqual(ProxyEndpoint.ipv6(ipv6("::1"), port: 8883).description, "[::1]:8883")
        XCTAssertEqual(ProxyEndpoint.unix(path: Array("/run/lb.sock".utf8)).description, "unix:/run/lb.sock")
        XCTAssertEqual(ProxyEndpoint.unix(path: [0] + Array("lb".utf8)).description, "unix:@lb")
    }
}
