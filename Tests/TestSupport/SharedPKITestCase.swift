import XCTest

/// A test case whose tests share one demo PKI, made once per class (openssl would otherwise
/// dominate the run time) and removed after the class.
open class SharedPKITestCase: XCTestCase {
    nonisolated(unsafe) private static var shared: TestPKI?

    public var pki: TestPKI { Self.shared! }

    override open class func setUp() {
        super.setUp()
        shared = try! TestPKI.make()
    }

    override open class func tearDown() {
        shared?.remove()
        shared = nil
        super.tearDown()
    }
}
