import Foundation
@testable import StapleGateFleet
import StapleGateOCSP
import XCTest

/// The notification payloads gateways exchange, and the CertID key they carry: pure logic.
final class FleetMessageTests: XCTestCase {
    private let id = CertID(issuerNameHash: [UInt8](repeating: 0xAB, count: 20), issuerKeyHash: [UInt8](repeating: 0x01, count: 20),
                            serialNumber: [0x4C, 0x06, 0xAE])

    func testACertIDKeyRoundTrips() {
        XCTAssertEqual(CertID(fleetKey: id.fleetKey), id)
        XCTAssertTrue(id.fleetKey.hasSuffix(".4c06ae"), id.fleetKey)
    }

    func testMalformedKeysAreRefused() {
        for key in ["", "ab.cd", "ab.cd.ef.01", "zz.cd.ef", "abc.cd.ef", "ab..ef", String(repeating: "a", count: 300) + ".cd.ef"] {
            XCTAssertNil(CertID(fleetKey: key), key)
        }
    }

    func testEveryKindOfMessageRoundTripsThroughItsPayload() throws {
        let request = UUID()
        let messages = [
            FleetMessage(kind: .answer, origin: "gw-a", key: id.fleetKey, refused: true),
            FleetMessage(kind: .close, origin: "gw-a", key: id.fleetKey, request: request),
            FleetMessage(kind: .closed, origin: "gw-b", request: request,
                         closed: FleetSessionsClosed(instance: "gw-b", serial: "4C06AE", closed: 1, addresses: ["10.0.0.1:1"])),
        ]
        for message in messages {
            XCTAssertEqual(FleetMessage(payload: message.payload), message)
            XCTAssertLessThan(message.payload.utf8.count, 8000, "PostgreSQL's payload limit")
        }
    }

    /// Another program's notification on the channel, or a newer version's kind, is ignored.
    func testPayloadsThatAreNotMessagesAreIgnored() {
        for payload in ["", "hello", "{}", #"{"kind":"rekey","origin":"gw-z"}"#] {
            XCTAssertNil(FleetMessage(payload: payload), payload)
        }
    }

    /// A signal that comes while nobody waits is kept for the next wait; a wait without one
    /// ends at its time limit.
    func testAnAnswerWaiterKeepsASignalThatCameEarly() async {
        let waiter = AnswerWaiter()
        waiter.signal()
        let early = ContinuousClock.now
        await waiter.wait(atMost: .seconds(30))
        XCTAssertLessThan(early.duration(to: .now), .seconds(10), "the early signal ends the wait")
        let late = ContinuousClock.now
        await waiter.wait(atMost: .milliseconds(50))
        XCTAssertGreaterThanOrEqual(late.duration(to: .now), .milliseconds(50), "no signal: the time limit")
    }
}
