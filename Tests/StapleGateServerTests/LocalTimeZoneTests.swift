import Foundation
@testable import StapleGateServer
import XCTest

final class LocalTimeZoneTests: XCTestCase {
    private var saved: String?

    override func setUp() {
        saved = getenv("TZ").map { String(cString: $0) }
    }

    override func tearDown() {
        if let saved { setenv("TZ", saved, 1) } else { unsetenv("TZ") }
        tzset()
    }

    /// Unset, it names /etc/localtime, and the C library's local time is still Foundation's zone.
    func testAnUnsetZoneBecomesTheHostsFileReadOnce() throws {
        unsetenv("TZ")
        tzset()
        let before = Self.libcOffset()
        XCTAssertTrue(LocalTimeZone.readOnce())
        XCTAssertEqual(getenv("TZ").map { String(cString: $0) }, ":/etc/localtime")
        tzset()
        XCTAssertEqual(Self.libcOffset(), before, "the C library's zone changed")
        XCTAssertEqual(Self.libcOffset(), TimeZone.current.secondsFromGMT(), "log lines and Foundation disagree on the zone")
    }

    /// The operator's own zone is left alone.
    func testAnOperatorsZoneIsKept() {
        setenv("TZ", "Europe/Paris", 1)
        XCTAssertFalse(LocalTimeZone.readOnce())
        XCTAssertEqual(getenv("TZ").map { String(cString: $0) }, "Europe/Paris")
    }

    private static func libcOffset() -> Int {
        var now = time(nil)
        var local = tm()
        localtime_r(&now, &local)
        return local.tm_gmtoff
    }
}
