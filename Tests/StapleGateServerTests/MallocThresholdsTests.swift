@testable import StapleGateServer
import XCTest

final class MallocThresholdsTests: XCTestCase {
    func testTheThresholdsAreSetUnlessTheOperatorTunedMalloc() {
        XCTAssertTrue(MallocThresholds.apply(environment: [:]), "mallopt refused the thresholds")
        XCTAssertTrue(MallocThresholds.apply(environment: ["GLIBC_TUNABLES": "glibc.rtld.nns=2"]),
                      "tunables of other glibc parts leave malloc to us")
        XCTAssertFalse(MallocThresholds.apply(environment: ["GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"]),
                       "an operator's malloc tunables win")
    }
}
