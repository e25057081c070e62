import StapleGateAdmission
import XCTest

final class MQTTConnackTests: XCTestCase {
    /// 3.1 and 3.1.1: fixed header, remaining length 2, flags 0, Connect Return Code
    /// (3.1.1 §3.2.2.3); no code for an oversized or malformed CONNECT, so no CONNACK.
    func testReturnCodesBefore5() {
        let expected: [MQTTConnackRefusal: [UInt8]] = [
            .unacceptableProtocolVersion: [0x20, 0x02, 0x00, 0x01],
            .identifierRejected: [0x20, 0x02, 0x00, 0x02],
            .serverUnavailable: [0x20, 0x02, 0x00, 0x03],
            .serverBusy: [0x20, 0x02, 0x00, 0x03],
            .notAuthorized: [0x20, 0x02, 0x00, 0x05],
            .packetTooLarge: [],
            .malformedPacket: [],
        ]
        for version in [MQTTProtocolVersion.v3_1, .v3_1_1] {
            for refusal in MQTTConnackRefusal.allCases {
                XCTAssertEqual(MQTTConnack.bytes(for: refusal, version: version), expected[refusal], "\(refusal) in \(version)")
            }
        }
    }

    /// 5.0: fixed header, remaining length 3, flags 0, Reason Code, property length 0 (§3.2).
    func testReasonCodesIn5() {
        let expected: [MQTTConnackRefusal: UInt8] = [
            .unacceptableProtocolVersion: 0x84, .identifierRejected: 0x85, .serverUnavailable: 0x88,
            .serverBusy: 0x89,            .notAuthorized: 0x87, .packetTooLarge: 0x95, .malformedPacket: 0x81,
        ]
        for refusal in MQTTConnackRefusal.allCases {
            XCTAssertEqual(MQTTConnack.bytes(for: refusal, version: .v5), [0x20, 0x03, 0x00, expected[refusal]!, 0x00], "\(refusal)")
        }
    }

    func testEveryV5ConnackIsAWellFramedPacket() {
        for refusal in MQTTConnackRefusal.allCases {
            var framer = MQTTPacketFramer(protocolVersion: .v5, direction: .brokerToDevice)
            let bytes = MQTTConnack.bytes(for: refusal, version: .v5)
            XCTAssertEqual(framer.feed(.init(bytes: bytes)), [.packet(.connack, size: 5)])
        }
    }

    func testRefusalPicksTheCodeOfItsVersion() {
        let malformed5 = MQTTConnectRefusal(reason: "x", protocolVersion: .v5, connackRefusal: .malformedPacket)
        XCTAssertEqual(malformed5.connackBytes, [0x20, 0x03, 0x00, 0x81, 0x00])
        let notAuthorized31 = MQTTConnectRefusal(reason: "x", protocolVersion: .v3_1, connackRefusal: .notAuthorized)
        XCTAssertEqual(notAuthorized31.connackBytes, [0x20, 0x02, 0x00, 0x05])
        let unknownLevel = MQTTConnectRefusal(reason: "x", protocolVersion: nil, connackRefusal: .unacceptableProtocolVersion)
        XCTAssertEqual(unknownLevel.connackBytes, [0x20, 0x02, 0x00, 0x01])
        let notMQTT = MQTTConnectRefusal(reason: "x", protocolVersion: nil, connackRefusal: nil)
        XCTAssertEqual(notMQTT.connackBytes, [])
        XCTAssertEqual(MQTTConnectRefusal(reason: "x", protocolVersion: nil, connackRefusal: .malformedPacket).connackBytes, [])
    }
}
