import Foundation
import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// thisUpdate / nextUpdate against an injected `now`, with the policy's clock skew.
final class ValidityWindowTests: XCTestCase {
    static var fixture: OCSPFixture!
    static var request: OCSPRequest!
    static var withNextUpdate: VerifiedOCSPResponse!
    static var withoutNextUpdate: VerifiedOCSPResponse!
    var fixture: OCSPFixture { Self.fixture }

    override class func setUp() {
        super.setUp()
        fixture = try! OCSPFixture()
        request = try! fixture.request("device-1")
        let policy = try! fixture.policy()
        withNextUpdate = try! policy.verify(der: fixture.respond(to: request), for: request.certID).get()
        withoutNextUpdate = try! policy.verify(der: fixture.respond(to: request, options: []), for: request.certID).get()
    }

    override class func tearDown() {
        fixture?.remove()
        fixture = nil
        super.tearDown()
    }

    private func verify(_ response: VerifiedOCSPResponse, at now: Date,
                        adjust: (inout OCSPVerificationPolicy) -> Void = { _ in }) throws -> Result<VerifiedOCSPResponse, OCSPRejection> {
        var policy = try fixture.policy()
        adjust(&policy)
        return policy.verify(der: response.der, for: Self.request.certID, now: now)
    }

    func testExpiredAfterNextUpdatePlusSkew() throws {
        let response = Self.withNextUpdate!
        let nextUpdate = try XCTUnwrap(response.nextUpdate)
        XCTAssertEqual(try verify(response, at: nextUpdate.addingTimeInterval(3600)).rejection(), .expired(nextUpdate: nextUpdate))
        XCTAssertEqual(try verify(response, at: nextUpdate.addingTimeInterval(301)).rejection(), .expired(nextUpdate: nextUpdate))
        _ = try verify(response, at: nextUpdate.addingTimeInterval(240)).accepted()
        _ = try verify(response, at: nextUpdate).accepted()
        // No skew at all: one second past nextUpdate is too late.
        XCTAssertEqual(try verify(response, at: nextUpdate.addingTimeInterval(1)) { $0.clockSkew = .zero }.rejection(),
                       .expired(nextUpdate: nextUpdate))
    }

    func testExpiredDescriptionNamesTheInstant() {
        let date = Date(timeIntervalSince1970: 1_795_341_600) // 2026-11-22T10:00:00Z
        XCTAssertEqual(OCSPRejection.expired(nextUpdate: date).description, "response expired at 2026-11-22T10:00:00Z (nextUpdate)")
        XCTAssertEqual(OCSPRejection.notYetValid(thisUpdate: date).description,
                       "response is from the future (thisUpdate 2026-11-22T10:00:00Z)")
    }

    func testFromTheFutureBeforeThisUpdateMinusSkew() throws {
        let response = Self.withNextUpdate!
        let thisUpdate = response.thisUpdate
        XCTAssertEqual(try verify(response, at: thisUpdate.addingTimeInterval(-3600)).rejection(), .notYetValid(thisUpdate: thisUpdate))
        XCTAssertEqual(try verify(response, at: thisUpdate.addingTimeInterval(-301)).rejection(), .notYetValid(thisUpdate: thisUpdate))
        _ = try verify(response, at: thisUpdate.addingTimeInterval(-240)).accepted()
        XCTAssertEqual(try verify(response, at: thisUpdate.addingTimeInterval(-240)) { $0.clockSkew = .seconds(60) }.rejection(),
                       .notYetValid(thisUpdate: thisUpdate))
    }

    func testWithoutNextUpdateOnlyUntilTheMaximumAge() throws {
        let response = Self.withoutNextUpdate!
        XCTAssertNil(response.nextUpdate)
        let thisUpdate = response.thisUpdate
        _ = try verify(response, at: thisUpdate.addingTimeInterval(6 * 24 * 3600)).accepted()
        XCTAssertEqual(try verify(response, at: thisUpdate.addingTimeInterval(8 * 24 * 3600)).rejection(), .tooOld(thisUpdate: thisUpdate))
        XCTAssertEqual(try verify(response, at: thisUpdate.addingTimeInterval(3600)) { $0.maximumAgeWithoutNextUpdate = .seconds(600) }
            .rejection(), .tooOld(thisUpdate: thisUpdate))
        // Still "from the future" when thisUpdate is ahead, nextUpdate or not.
        XCTAssertEqual(try verify(response, at: thisUpdate.addingTimeInterval(-3600)).rejection(), .notYetValid(thisUpdate: thisUpdate))
    }
}
