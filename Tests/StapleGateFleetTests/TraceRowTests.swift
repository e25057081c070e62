import Foundation
@testable import StapleGateFleet
import XCTest

/// The JSON `TraceRow` writes for an event's details by hand (no database needed): what
/// JSONDecoder reads back, keys sorted, and what jsonb would refuse replaced.
final class TraceRowTests: XCTestCase {
    func testDetailsRoundTripThroughAJSONDecoderWithKeysSorted() throws {
        let details = ["topic": "devices/7/\"up\"", "path": "C:\\temp", "lines": "a\nb\r\tc", "bell": "\u{7}\u{1F}",
                       "ü": "☃ 🚀", "empty": ""]
        let json = TraceRow.json(details)
        XCTAssertEqual(try JSONDecoder().decode([String: String].self, from: Data(json.utf8)), details)
        XCTAssertTrue(json.hasPrefix("{\"bell\":\"\\u0007\\u001f\",\"empty\":\"\","), json)
        XCTAssertEqual(TraceRow.json([:]), "{}")
    }

    /// jsonb and text refuse NUL: it becomes U+FFFD rather than failing the batch.
    func testNULIsReplacedInDetailsAndText() throws {
        let json = TraceRow.json(["client\u{0}id": "a\u{0}b"])
        XCTAssertFalse(json.contains("\\u0000"), json)
        XCTAssertEqual(try JSONDecoder().decode([String: String].self, from: Data(json.utf8)), ["client\u{FFFD}id": "a\u{FFFD}b"])
        XCTAssertEqual(TraceRow.clean("x\u{0}y"), "x\u{FFFD}y")
        XCTAssertEqual(TraceRow.clean("plain"), "plain", "negative control: untouched")
    }
}
