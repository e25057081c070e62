import NIOCore
import StapleGateAdmission
import XCTest

final class MQTTPacketCounterTests: XCTestCase {
    /// CONNECT (3.1.1, client id "a"), PUBLISH QoS 0 "t" "hello", PINGREQ, DISCONNECT.
    private let stream: [UInt8] = [0x10, 0x0D, 0x00, 0x04] + Array("MQTT".utf8) + [0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 0x61]
        + [0x30, 0x08, 0x00, 0x01, 0x74] + Array("hello".utf8) + [0xC0, 0x00, 0xE0, 0x00]

    func testCountsWholePacketsWhateverTheSplit() {
        var whole = MQTTPacketCounter()
        whole.count(ByteBuffer(bytes: stream))
        XCTAssertEqual(whole.packets, 4)

        var byteByByte = MQTTPacketCounter()
        for byte in stream { byteByByte.count(ByteBuffer(bytes: [byte])) }
        XCTAssertEqual(byteByByte.packets, 4)

        var partial = MQTTPacketCounter()
        partial.count(ByteBuffer(bytes: stream.dropLast(1)))
        XCTAssertEqual(partial.packets, 3, "the DISCONNECT is not complete yet")
    }

    /// A DISCONNECT is noticed by its fixed header; the same byte inside a body is not one.
    func testADisconnectIsNoticedByItsHeaderOnly() {
        var counter = MQTTPacketCounter()
        counter.count(ByteBuffer(bytes: stream.dropLast(2)))
        XCTAssertFalse(counter.sawDisconnect, "CONNECT, PUBLISH and PINGREQ only")
        counter.count(ByteBuffer(bytes: [0xE0]))
        XCTAssertTrue(counter.sawDisconnect)

        var payload = MQTTPacketCounter()
        payload.count(ByteBuffer(bytes: [0x30, 0x05, 0x00, 0x01, 0x74, 0xE0, 0x00]))
        XCTAssertEqual(payload.packets, 1)
        XCTAssertFalse(payload.sawDisconnect, "0xE0 in a PUBLISH payload")
    }

    func testALongRemainingLengthIsSkippedByCount() {
        // PUBLISH with a 200-byte body: remaining length 0xC8 0x01.
        let publish: [UInt8] = [0x30, 0xC8, 0x01] + [UInt8](repeating: 0x41, count: 200)
        var counter = MQTTPacketCounter()
        counter.count(ByteBuffer(bytes: publish + publish))
        XCTAssertEqual(counter.packets, 2)
        XCTAssertFalse(counter.stopped)
    }

    func testAStreamThatIsNotMQTTStopsTheCount() {
        var counter = MQTTPacketCounter()
        counter.count(ByteBuffer(bytes: [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x02]))
        XCTAssertTrue(counter.stopped)
        XCTAssertEqual(counter.packets, 0)
    }
}
