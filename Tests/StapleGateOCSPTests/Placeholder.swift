import XCTest
final class OCSPPlaceholderTests: XCTestCase { func testBuilds() {} }
