import Foundation
@testable import StapleGateFleet
import XCTest

/// PostgreSQL text refuses NUL, which a device can put in its CONNECT: TraceRow replaces it
/// rather than failing the whole batch (the details' JSON is TraceEventJSONTests').
final class TraceRowTests: XCTestCase {
    func testNULIsReplacedInText() {
        XCTAssertEqual(TraceRow.clean("x\u{0}y"), "x\u{FFFD}y")
        XCTAssertEqual(TraceRow.clean("plain"), "plain", "negative control: untouched")
    }
}
