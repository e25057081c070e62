import Foundation
import StapleGateTrace
import XCTest

/// What `staplegate trace DEVICE` prints, as text and as JSON Lines.
final class TraceTimelineTests: XCTestCase {
    private let start = Date(timeIntervalSince1970: 1_763_788_141.125)  // 2025-11-22T05:09:01.125Z

    private var events: [TraceEvent] {
        [
            TraceEvent(id: 1, time: start, kind: .accepted, device: nil, serial: nil, connectionID: 7,
                       remoteAddress: "10.0.0.7:51234", summary: "TCP connection from 10.0.0.7:51234"),
            TraceEvent(id: 2, time: start.addingTimeInterval(0.5), kind: .clientCertificate, device: "device-1",
                       serial: "0A1B", connectionID: 7, remoteAddress: "10.0.0.7:51234",
                       summary: "CN=device-1, serial 0A1B", details: ["certificate.serial": "0A1B"]),
            TraceEvent(id: 3, time: start.addingTimeInterval(1.25), kind: .ocspCheck, device: "device-1",
                       serial: "0A1B", connectionID: 1042, remoteAddress: "10.0.0.7:51240", isFailure: true,
                       summary: "OCSP: certificate revoked (keyCompromise)",
                       details: ["ocsp.status": "revoked", "ocsp.responder": "http://ocsp.example/"]),
        ]
    }

    func testLinesShowTimeConnectionKindAndSummaryWithFailuresMarked() {
        XCTAssertEqual(TraceTimeline.lines(events, timeZone: TimeZone(identifier: "UTC")!), [
            "2025-11-22T05:09:01.125Z  #7       accepted            TCP connection from 10.0.0.7:51234",
            "2025-11-22T05:09:01.625Z  #7       client_certificate  CN=device-1, serial 0A1B",
            "2025-11-22T05:09:02.375Z  #1042  ✗ ocsp_check          OCSP: certificate revoked (keyCompromise)",
        ])
    }

    func testLinesUseTheGivenTimeZone() {
        let line = TraceTimeline.lines([events[0]], timeZone: TimeZone(secondsFromGMT: 3600)!)
        XCTAssertEqual(line.first?.hasPrefix("2025-11-22T06:09:01.125+01:00  #7  "), true, "\(line)")
        XCTAssertEqual(TraceTimeline.lines([]), [])
    }

    func testJSONLinesCarryEveryFieldWithISOTimes() throws {
        let lines = TraceTimeline.jsonLines(events)
        XCTAssertEqual(lines.count, 3)
        XCTAssertFalse(lines.contains { $0.contains("\n") }, "one object per line")

        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[2].utf8)) as? [String: Any])
        XCTAssertEqual(object["time"] as? String, "2025-11-22T05:09:02.375Z")
        XCTAssertEqual(object["kind"] as? String, "ocsp_check")
        XCTAssertEqual(object["isFailure"] as? Bool, true)
        XCTAssertEqual(object["connectionID"] as? Int, 1042)
        XCTAssertEqual(object["details"] as? [String: String],
                       ["ocsp.status": "revoked", "ocsp.responder": "http://ocsp.example/"])
        XCTAssertTrue(lines[2].contains("\"http://ocsp.example/\""), "slashes unescaped: \(lines[2])")

        let decoder = TraceTimeline.jsonDecoder()
        let decoded = try lines.map { try decoder.decode(TraceEvent.self, from: Data($0.utf8)) }
        XCTAssertEqual(decoded, events)
    }
}

/// Events of a fleet name the gateway that recorded them; a gateway's own file has none.
final class TraceTimelineInstanceTests: XCTestCase {
    private let start = Date(timeIntervalSince1970: 1_763_788_141.125)  // 2025-11-22T05:09:01.125Z

    private func event(_ id: Int64, instance: String?, connection: UInt64) -> TraceEvent {
        TraceEvent(id: id, time: start.addingTimeInterval(Double(id)), kind: .accepted, device: "device-1", serial: "0A1B",
                   connectionID: connection, remoteAddress: "10.0.0.7:51234", summary: "connection accepted",
                   instance: instance)
    }

    func testLinesNameTheInstanceAfterTheTimePaddedToTheWidest() {
        let lines = TraceTimeline.lines([event(1, instance: "gw-a", connection: 7), event(2, instance: "gw-bb", connection: 7)],
                                        timeZone: TimeZone(identifier: "UTC")!)
        XCTAssertEqual(lines, [
            "2025-11-22T05:09:02.125Z  gw-a   #7    accepted            connection accepted",
            "2025-11-22T05:09:03.125Z  gw-bb  #7    accepted            connection accepted",
        ])
    }

    /// Negative control: without instances the lines are today's, column for column.
    func testLinesWithoutInstancesHaveNoInstanceColumn() {
        let lines = TraceTimeline.lines([event(1, instance: nil, connection: 7)], timeZone: TimeZone(identifier: "UTC")!)
        XCTAssertEqual(lines, ["2025-11-22T05:09:02.125Z  #7    accepted            connection accepted"])
    }

    func testJSONCarriesTheInstanceOnlyWhenKnown() throws {
        let lines = TraceTimeline.jsonLines([event(1, instance: "gw-a", connection: 7), event(2, instance: nil, connection: 8)])
        let first = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        XCTAssertEqual(first["instance"] as? String, "gw-a")
        let second = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
        XCTAssertNil(second["instance"], lines[1])
        let decoded = try lines.map { try TraceTimeline.jsonDecoder().decode(TraceEvent.self, from: Data($0.utf8)) }
        XCTAssertEqual(decoded.map(\.instance), ["gw-a", nil])
    }
}
