import Foundation
@testable import StapleGateServer
import XCTest

final class MallocThresholdsTests: XCTestCase {
    func testTheThresholdsAreSetUnlessTheOperatorTunedMalloc() throws {
        // Under `make test-asan` AddressSanitizer's allocator stands in for glibc's and refuses
        // mallopt; the operator's-tunables case below holds either way.
        if ProcessInfo.processInfo.environment["STAPLEGATE_SANITIZER"] != "address" {
            try checkGlibcTakesTheThresholds()
        }
        XCTAssertFalse(MallocThresholds.apply(environment: ["GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"]),
                       "an operator's malloc tunables win")
    }

    private func checkGlibcTakesTheThresholds() throws {
        XCTAssertTrue(MallocThresholds.apply(environment: [:]), "mallopt refused the thresholds")
        XCTAssertTrue(MallocThresholds.apply(environment: ["GLIBC_TUNABLES": "glibc.rtld.nns=2"]),
                      "tunables of other glibc parts leave malloc to us")
    }
}
