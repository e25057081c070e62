import Foundation
@testable import StapleGateTrace
import XCTest

/// The JSON both trace stores write for an event's details, by hand (no database needed): what
/// JSONDecoder reads back, keys sorted, and what PostgreSQL's jsonb would refuse replaced.
final class TraceEventJSONTests: XCTestCase {
    func testDetailsRoundTripThroughAJSONDecoderWithKeysSorted() throws {
        let details = ["topic": "devices/7/\"up\"", "path": "C:\\temp", "lines": "a\nb\r\tc", "bell": "\u{7}\u{1F}",
                       "ü": "☃ 🚀", "empty": ""]
        let json = TraceEvent.json(details)
        XCTAssertEqual(try JSONDecoder().decode([String: String].self, from: Data(json.utf8)), details)
        XCTAssertTrue(json.hasPrefix("{\"bell\":\"\\u0007\\u001f\",\"empty\":\"\","), json)
        XCTAssertEqual(TraceEvent.json([:]), "{}")
    }

    /// jsonb refuses NUL: it becomes U+FFFD rather than failing the batch.
    func testNULIsReplacedInDetails() throws {
        let json = TraceEvent.json(["client\u{0}id": "a\u{0}b"])
        XCTAssertFalse(json.contains("\\u0000"), json)
        XCTAssertEqual(try JSONDecoder().decode([String: String].self, from: Data(json.utf8)), ["client\u{FFFD}id": "a\u{FFFD}b"])
    }
}

