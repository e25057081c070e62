import NIOCore
import StapleGateProxyProtocol
import XCTest

/// The TLVs after a v2 address block, proxy-protocol.txt §2.2.1-§2.2.8, and the CRC32C check.
final class ProxyTLVTests: XCTestCase {
    private let loopback = ProxyIPv4Address(127, 0, 0, 1)

    private func loopbackHeader(_ tlvs: [ProxyTLV]) -> ProxyHeader {
        ProxyHeader(version: .v2, source: .ipv4(loopback, port: 42), destination: .ipv4(loopback, port: 1337), tlvs: tlvs)
    }

    /// A TCP4 loopback header carrying `tlvBytes`.
    private func withTLVs(_ tlvBytes: [UInt8]) -> [UInt8] { v2Header(0x21, 0x11, loopbackBlock + tlvBytes) }

    /// A header with an SSL TLV of client 0x05, verify 0 and these sub-TLV bytes.
    private func withSSL(_ subTLVs: [UInt8]) -> [UInt8] { withTLVs(tlv(0x20, [0x05, 0, 0, 0, 0] + subTLVs)) }

    // MARK: HAProxy's regression-test headers

    func testHAProxyAuthorityHeader() {
        assertParses(
            Fixture.haproxyAuthority + Array("GET /".utf8), loopbackHeader([.authority("12345")]), remaining: Array("GET /".utf8))
    }

    func testHAProxyTLVOverrunAndStrayByteAreRefused() {
        assertRefused(
            Fixture.haproxyTLVOverrun, "PROXY v2 TLV 0x02 (AUTHORITY) announces 10 bytes but only 5 remain in the header")
        assertRefused(
            Fixture.haproxyStrayByte, "PROXY v2 header ends with 1 stray byte after its last TLV (a TLV takes at least 3)")
    }

    func testHAProxyEmbeddedNULHeaders() {
        let publicBytes = Array("public".utf8)
        let expected = loopbackHeader([
            .authority("public"), .uniqueID(publicBytes), .unknown(type: 0xE1, value: publicBytes),
            .ssl(ProxySSLInfo(client: [], verify: 0, subTLVs: [])),
        ])
        assertParses(Fixture.haproxyEmbeddedNULc1, expected)
        XCTAssertEqual(expected.ssl?.clientCertificateVerified, false, "verify 0 without a certificate is no verification")
        // HAProxy's text fetches return nothing for "public\0x"; here the header is refused.
        assertRefused(Fixture.haproxyEmbeddedNULc2, "PROXY v2 TLV 0x02 (AUTHORITY) contains a NUL byte: \"public\\x00x\"")
    }

    // MARK: Every registered type

    func testSSLCNHeaderWithEveryAccessor() {
        assertParses(Fixture.sslCNWithCRC, Fixture.sslCNHeader)
        let header = Fixture.sslCNHeader
        XCTAssertEqual(header.crc32c, 0x99B6_5E24)
        XCTAssertEqual(header.alpn, Array("mqtt".utf8))
        XCTAssertEqual(header.authority, "broker.example.com")
        XCTAssertEqual(header.uniqueID, Array("conn-0001".utf8))
        XCTAssertNil(header.networkNamespace)
        guard let ssl = header.ssl else { return XCTFail("no SSL TLV") }
        XCTAssertEqual(ssl.client, [.ssl, .certificateOnConnection, .certificateInSession])
        XCTAssertEqual(ssl.verify, 0)
        XCTAssertTrue(ssl.clientCertificateVerified)
        XCTAssertEqual(ssl.version, "TLSv1.3")
        XCTAssertEqual(ssl.commonName, "device-42")
        XCTAssertEqual(ssl.cipher, "TLS_AES_256_GCM_SHA384")
        XCTAssertEqual(ssl.signatureAlgorithm, "RSA-SHA256")
        XCTAssertEqual(ssl.keyAlgorithm, "RSA2048")
        XCTAssertEqual(ssl.subTLVs.map(\.type), [0x21, 0x22, 0x25, 0x24, 0x23], "kept in the order sent")
    }

    func testNoopNetnsAndUnknownTypes() {
        let bytes = withTLVs(
            tlv(0x04, []) + tlv(0x30, Array("blue".utf8)) + tlv(0x04, [9, 9, 9]) + tlv(0xEA, [0x01, 0x41]) + tlv(0xEA, [])
                + tlv(0x00, [1]) + tlv(0xFF, []))
        let header = loopbackHeader([
            .noop(length: 0), .networkNamespace("blue"), .noop(length: 3), .unknown(type: 0xEA, value: [0x01, 0x41]),
            .unknown(type: 0xEA, value: []), .unknown(type: 0x00, value: [1]), .unknown(type: 0xFF, value: []),
        ])
        assertParses(bytes, header)
        XCTAssertEqual(header.networkNamespace, "blue")
        XCTAssertNil(header.ssl)
        XCTAssertNil(header.authority)
    }

    func testSSLSubTLVsUnknownKeptAndUTF8CommonName() {
        let bytes = withSSL(tlv(0x22, Array("capteur-été".utf8)) + tlv(0x26, Array("X25519".utf8)))
        let ssl = ProxySSLInfo(
            client: [.ssl, .certificateInSession], verify: 0,
            subTLVs: [.commonName("capteur-été"), .unknown(type: 0x26, value: Array("X25519".utf8))])
        assertParses(bytes, loopbackHeader([.ssl(ssl)]))
        XCTAssertNil(ssl.version)
    }

    func testVerifyIsAFourByteBigEndianNumber() {
        // X509_V_ERR_CERT_HAS_EXPIRED is 10.
        assertParses(
            withTLVs(tlv(0x20, [0x07, 0, 0, 0, 10])),
            loopbackHeader([
                .ssl(ProxySSLInfo(client: [.ssl, .certificateOnConnection, .certificateInSession], verify: 10, subTLVs: []))
            ]))
        XCTAssertFalse(ProxySSLInfo(client: [.certificateInSession], verify: 10, subTLVs: []).clientCertificateVerified)
    }

    // MARK: Malformed TLVs

    func testTLVsMustFillTheHeaderExactly() {
        assertRefused(
            withTLVs([0x02, 0x00]), "PROXY v2 header ends with 2 stray bytes after its last TLV (a TLV takes at least 3)")
        assertRefused(
            withTLVs(tlv(0x01, [1]) + [0x05, 0x00, 0x81]),
            "PROXY v2 TLV 0x05 (UNIQUE_ID) announces 129 bytes but only 0 remain in the header")
        assertRefused(
            withTLVs([0xE0, 0xFF, 0xFF, 1, 2]), "PROXY v2 TLV 0xE0 announces 65535 bytes but only 2 remain in the header")
    }

    func testSSLTLVStructure() {
        assertRefused(
            withTLVs(tlv(0x20, [0x01, 0, 0, 0])),
            "PROXY v2 TLV 0x20 (SSL) is 4 bytes long, too short for its client and verify fields (5)")
        assertRefused(withSSL([0x21]), "PROXY v2 TLV 0x20 (SSL) ends with 1 stray byte after its last sub-TLV")
        assertRefused(
            withSSL([0x22, 0x00, 0x09] + Array("dev".utf8)),
            "PROXY v2 SSL sub-TLV 0x22 (CN) announces 9 bytes but only 3 remain in the SSL TLV")
        // A sub-TLV that fits the header but not its SSL TLV: the SSL TLV's length decides.
        assertRefused(
            withTLVs(tlv(0x20, [0x01, 0, 0, 0, 0, 0x21, 0x00, 0x07] + Array("TLS".utf8)) + Array("v1.3".utf8)),
            "PROXY v2 SSL sub-TLV 0x21 (VERSION) announces 7 bytes but only 3 remain in the SSL TLV")
    }

    func testDuplicatesOfRegisteredTypesAreRefused() {
        assertRefused(
            withTLVs(tlv(0x02, Array("a".utf8)) + tlv(0x02, Array("b".utf8))), "PROXY v2 TLV 0x02 (AUTHORITY) appears twice")
        assertRefused(
            withTLVs(tlv(0x20, [1, 0, 0, 0, 0]) + tlv(0x20, [1, 0, 0, 0, 0])), "PROXY v2 TLV 0x20 (SSL) appears twice")
        assertRefused(
            withSSL(tlv(0x22, Array("device-1".utf8)) + tlv(0x22, Array("admin".utf8))),
            "PROXY v2 SSL sub-TLV 0x22 (CN) appears twice")
    }

    func testValueRules() {
        assertRefused(
            withTLVs(tlv(0x05, [UInt8](repeating: 1, count: 129))),
            "PROXY v2 TLV 0x05 (UNIQUE_ID) is 129 bytes long, more than the 128 allowed")
        assertParses(
            withTLVs(tlv(0x05, [UInt8](repeating: 1, count: 128))), loopbackHeader([.uniqueID([UInt8](repeating: 1, count: 128))])
        )
        assertRefused(withTLVs(tlv(0x03, [0, 0, 0])), "PROXY v2 TLV 0x03 (CRC32C) is 3 bytes long, not 4")
        assertRefused(withTLVs(tlv(0x02, [0x66, 0xC3])), "PROXY v2 TLV 0x02 (AUTHORITY) is not valid UTF-8: \"f\\xC3\"")
        assertRefused(
            withTLVs(tlv(0x30, Array("ns-é".utf8))), "PROXY v2 TLV 0x30 (NETNS) is not printable US-ASCII: \"ns-\\xC3\\xA9\"")
        assertRefused(
            withSSL(tlv(0x21, Array("TLSv1.3\n".utf8))),
            "PROXY v2 SSL sub-TLV 0x21 (VERSION) is not printable US-ASCII: \"TLSv1.3\\n\"")
        assertRefused(withSSL(tlv(0x22, [0x61, 0x00])), "PROXY v2 SSL sub-TLV 0x22 (CN) contains a NUL byte: \"a\\x00\"")
    }

    // MARK: CRC32C

    func testChecksumMismatchIsRefused() {
        var tampered = Fixture.sslCNWithCRC
        // "device-42" becomes "device-43": a CN changed on the way must not pass.
        let cn = tampered.firstRange(of: Array("device-42".utf8))!
        tampered[cn.upperBound - 1] = UInt8(ascii: "3")
        assertRefused(
            tampered,
            "PROXY v2 CRC32C TLV says 0x99B65E24 but the header's checksum is 0x\(hex(checksumOf(tampered, crcAt: 55)))",
            kind: .checksumMismatch)
        var wrongChecksum = Fixture.sslCNWithCRC
        wrongChecksum[58] ^= 0x01
        assertRefused(
            wrongChecksum, "PROXY v2 CRC32C TLV says 0x99B65E25 but the header's checksum is 0x99B65E24", kind: .checksumMismatch)
    }

    func testChecksumCoversThePrefixAndTheAddresses() {
        // The checksum TLV anywhere in the list; zeroing the field is what makes it verifiable.
        var header = withTLVs(tlv(0x02, Array("x".utf8)) + tlv(0x03, [0, 0, 0, 0]))
        let checksum = CRC32C.checksum(header)
        header.replaceSubrange(
            header.count - 4..<header.count, with: (0..<4).map { UInt8(truncatingIfNeeded: checksum >> (24 - 8 * $0)) })
        assertParses(header, loopbackHeader([.authority("x"), .crc32c(checksum)]))
        var otherPort = header
        otherPort[16 + 9] ^= 0x01
        XCTAssertEqual(outcome(otherPort).kind, .checksumMismatch)
    }

    func testDuplicateChecksumIsRefused() {
        assertRefused(withTLVs(tlv(0x03, [0, 0, 0, 0]) + tlv(0x03, [0, 0, 0, 0])), "PROXY v2 TLV 0x03 (CRC32C) appears twice")
    }

    private func checksumOf(_ bytes: [UInt8], crcAt offset: Int) -> UInt32 {
        var zeroed = bytes
        zeroed.replaceSubrange(offset..<offset + 4, with: [0, 0, 0, 0])
        return CRC32C.checksum(zeroed)
    }

    private func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}

extension Outcome {
    var kind: ProxyHeaderError.Kind? {
        guard case .refused(let error) = self else { return nil }
        return error.kind
    }
}
