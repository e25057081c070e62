@testable import StapleGateSimulator
import XCTest

/// The stamp at the start of each load payload: publisher, sequence, send time.
final class LoadGeneratorPayloadTests: XCTestCase {
    func testAStampReadsBackAsWritten() {
        let stamp = PayloadStamp(publisher: 7, sequence: 123_456_789_012, sentNanoseconds: 98_765_432_109_876)
        let payload = stamp.payload(size: 64)
        XCTAssertEqual(payload.count, 64)
        XCTAssertEqual(PayloadStamp(reading: payload), stamp)
        XCTAssertEqual(Array(payload[PayloadStamp.size...]), Array(repeating: UInt8(ascii: "x"), count: 64 - PayloadStamp.size))
    }

    func testTheLayoutIsBigEndianAfterTheMagic() {
        let stamp = PayloadStamp(publisher: 0x0102_0304, sequence: 0x1112_1314_1516_1718, sentNanoseconds: 0x2122_2324_2526_2728)
        XCTAssertEqual(stamp.payload(size: PayloadStamp.size), [
            0x53, 0x47, 0x4C, 0x31,  // "SGL1"
            0x01, 0x02, 0x03, 0x04,
            0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
            0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
        ])
    }

    func testShortOrForeignPayloadsCarryNoStamp() {
        let stamp = PayloadStamp(publisher: 1, sequence: 2, sentNanoseconds: 3)
        XCTAssertNil(PayloadStamp(reading: Array(stamp.payload(size: 24).prefix(23))))
        XCTAssertNil(PayloadStamp(reading: [UInt8](repeating: 0, count: 64)))
        XCTAssertNil(PayloadStamp(reading: Array("hello from a device, not from the load generator".utf8)))
    }

    func testWritingAtAnUnalignedOffsetWorks() {
        var buffer = [UInt8](repeating: 0, count: 40)
        let stamp = PayloadStamp(publisher: 9, sequence: 10, sentNanoseconds: 11)
        buffer.withUnsafeMutableBytes { stamp.write(into: UnsafeMutableRawBufferPointer(rebasing: $0[3...])) }
        XCTAssertEqual(buffer.withUnsafeBytes { PayloadStamp(reading: UnsafeRawBufferPointer(rebasing: $0[3...])) }, stamp)
    }

    func testTheMonotonicClockMovesForward() {
        let first = monotonicNanoseconds()
        usleep(1_000)
        XCTAssertGreaterThan(monotonicNanoseconds(), first)
    }
}
