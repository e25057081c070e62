import Foundation
import StapleGateTLS
import TestSupport
import XCTest

/// `Date.iso8601String` must be Foundation's `formatted(.iso8601)` text to the byte: traces,
/// logs and `ocsp status` mixed both before, and tools parse them alike.
final class DateISO8601Tests: XCTestCase {
    func testEdgesAreFoundationsText() {
        let edges: [Double] = [
            0, -0.25, -1, 0.999, 59.999_999,
            951_782_400,  // 2000-02-29, a leap day of a century divisible by 400
            4_107_542_399,  // 2100-02-28T23:59:59, a century without a leap day
            4_107_542_400,  // 2100-03-01
            1_796_540_508.125, 253_402_300_799,  // the last second of 9999
            -11_676_096_000,  // 1600-01-01: the first year made here
        ]
        for seconds in edges {
            let date = Date(timeIntervalSince1970: seconds)
            XCTAssertEqual(date.iso8601String, date.formatted(.iso8601), "\(seconds)")
        }
        XCTAssertEqual(Date(timeIntervalSince1970: 951_782_400.5).iso8601String, "2000-02-29T00:00:00Z")
    }

    func testSpreadOfDatesIsFoundationsText() {
        var generator = SplitMix64(seed: 0x5741_5045)
        for _ in 0..<20_000 {
            let seconds = Double(generator.next() % 12_000_000_000) - 2_000_000_000 + Double(generator.next() % 1000) / 1000
            let date = Date(timeIntervalSince1970: seconds)
            XCTAssertEqual(date.iso8601String, date.formatted(.iso8601), "\(seconds)")
        }
    }

    /// Outside 1600–9999 (Julian dates before the Gregorian reform, five-digit years) Foundation writes it.
    func testDatesOutsideTheFastRangeAreFoundations() {
        for seconds in [-62_135_596_800.0, -30_957_449_201, 253_402_300_800, 300_000_000_000] {
            let date = Date(timeIntervalSince1970: seconds)
            XCTAssertEqual(date.iso8601String, date.formatted(.iso8601), "\(seconds)")
        }
    }
}
