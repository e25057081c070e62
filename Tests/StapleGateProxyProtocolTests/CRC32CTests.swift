import StapleGateProxyProtocol
import XCTest

/// The checksum of PP2_TYPE_CRC32C against published test vectors.
final class CRC32CTests: XCTestCase {
    /// The check value of the CRC-32C parameters (the "CRC RevEng" catalogue, RFC 3720 §B.4's
    /// polynomial): crc32c("123456789").
    func testCheckValue() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
    }

    /// RFC 3720 (iSCSI) Appendix B.4: 32 bytes of zeroes, of 0xFF, ascending and descending.
    func testRFC3720Vectors() {
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }), 0x113F_DB5C)
    }

    func testEmptyInputAndIncrementalUpdate() {
        XCTAssertEqual(CRC32C.checksum([UInt8]()), 0)
        let bytes = Array("123456789".utf8)
        XCTAssertEqual(CRC32C.update(CRC32C.checksum(bytes[..<4]), with: bytes[4...]), 0xE306_9283)
    }
}
