import Foundation
import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// Every way a response is refused, each with its own rejection and operator sentence.
final class RejectedResponseTests: XCTestCase {
    static var fixture: OCSPFixture!
    static var device1: OCSPRequest!
    static var good: [UInt8]!
    var fixture: OCSPFixture { Self.fixture }

    override class func setUp() {
        super.setUp()
        fixture = try! OCSPFixture()
        device1 = try! fixture.request("device-1")
        good = try! fixture.respond(to: device1)
    }

    override class func tearDown() {
        fixture?.remove()
        fixture = nil
        super.tearDown()
    }

    private func verify(_ der: [UInt8], issuer: String = "issuing-ca", certID: CertID? = nil,
                        nonce: [UInt8]? = nil) throws -> OCSPRejection? {
        try fixture.policy(issuer: issuer).verify(der: der, for: certID ?? Self.device1.certID, nonce: nonce).rejection()
    }

    func testTheGoodResponseItselfIsAccepted() throws {
        XCTAssertEqual(try fixture.policy().verify(der: Self.good, for: Self.device1.certID).accepted().status, .good)
    }

    func testGarbageEmptyTruncatedAndTrailingBytes() throws {
        XCTAssertEqual(try verify(Array("HTTP/1.1 200 OK\r\n".utf8)), .malformed("DER parse failed"))
        XCTAssertEqual(try verify(Array("HTTP/1.1 200 OK\r\n".utf8))?.description, "not an OCSP response (DER parse failed)")
        XCTAssertEqual(try verify([]), .malformed("empty"))
        XCTAssertEqual(try verify(Array(Self.good.dropLast(10))), .malformed("DER parse failed"))
        XCTAssertEqual(try verify(Array(Self.good.prefix(1))), .malformed("DER parse failed"))
        XCTAssertEqual(try verify(Self.good + [0]), .malformed("1 byte after the DER"))
        XCTAssertEqual(try verify(Self.good + Self.good), .malformed("\(Self.good.count) bytes after the DER"))
    }

    func testResponderStatusesOtherThanSuccessful() throws {
        // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT OPTIONAL }
        let tryLater: [UInt8] = [0x30, 0x03, 0x0A, 0x01, 0x03]
        XCTAssertEqual(try verify(tryLater), .responderStatus("tryLater"))
        XCTAssertEqual(try verify(tryLater)?.description, "responder status tryLater")
        XCTAssertEqual(try verify([0x30, 0x03, 0x0A, 0x01, 0x01]), .responderStatus("malformedRequest"))
        XCTAssertEqual(try verify([0x30, 0x03, 0x0A, 0x01, 0x02]), .responderStatus("internalError"))
        XCTAssertEqual(try verify([0x30, 0x03, 0x0A, 0x01, 0x05]), .responderStatus("sigRequired"))
        XCTAssertEqual(try verify([0x30, 0x03, 0x0A, 0x01, 0x06]), .responderStatus("unauthorized"))
    }

    func testSuccessfulWithoutABasicResponse() throws {
        XCTAssertEqual(try verify([0x30, 0x03, 0x0A, 0x01, 0x00]), .notBasicResponse, "no responseBytes")
        // responseBytes of type 1.2.3.4 (not id-pkix-ocsp-basic) holding one zero byte.
        let otherType: [UInt8] = [0x30, 0x0F, 0x0A, 0x01, 0x00, 0xA0, 0x0A,
                                  0x30, 0x08, 0x06, 0x03, 0x2A, 0x03, 0x04, 0x04, 0x01, 0x00]
        XCTAssertEqual(try verify(otherType), .notBasicResponse)
    }

    func testBadSignature() throws {
        let der = try fixture.respond(to: Self.device1, options: ["-nmin", "10", "-badsig"])
        let rejection = try verify(der)
        guard case let .signatureInvalid(reason) = rejection else { return XCTFail("\(String(describing: rejection))") }
        XCTAssertTrue(reason.hasPrefix("does not match the key of CN=StapleGate Demo OCSP Signer"), reason)
        XCTAssertTrue(rejection?.description.hasPrefix("response signature invalid (") == true, "\(String(describing: rejection))")
    }

    func testDelegatedSignerCertificateLeftOut() throws {
        let der = try fixture.respond(to: Self.device1, options: ["-nmin", "10", "-resp_no_certs"])
        XCTAssertEqual(try verify(der), .signerNotFound)
        XCTAssertEqual(try verify(der)?.description, "signer certificate not found in response")
    }

    func testSignerWithoutOCSPSigning() throws {
        // device-2 is issued by the issuing CA, but for clientAuth only.
        let der = try fixture.respond(to: Self.device1, signer: "device-2")
        let rejection = try verify(der)
        guard case let .signerNotAuthorized(reason) = rejection else { return XCTFail("\(String(describing: rejection))") }
        XCTAssertTrue(reason.contains("lacks id-kp-OCSPSigning"), reason)
        XCTAssertTrue(reason.contains("CN=device-2"), reason)
        XCTAssertTrue(rejection?.description.hasPrefix("signer is not authorized: certificate lacks id-kp-OCSPSigning") == true,
                      "\(String(describing: rejection))")
    }

    func testSignerFromAnotherCA() throws {
        let der = try fixture.respond(to: Self.device1, signer: "rogue-ca")
        let rejection = try verify(der)
        guard case let .signerNotAuthorized(reason) = rejection else { return XCTFail("\(String(describing: rejection))") }
        XCTAssertEqual(reason, "certificate does not chain to the issuer: self-signed certificate (CN=Rogue CA)")
    }

    func testGoodResponseCheckedAgainstTheWrongIssuer() throws {
        // The right signer, but the policy trusts only the rogue CA.
        let rejection = try verify(Self.good, issuer: "rogue-ca")
        guard case let .signerNotAuthorized(reason) = rejection else { return XCTFail("\(String(describing: rejection))") }
        XCTAssertTrue(reason.contains("unable to get local issuer certificate"), reason)
    }

    /// The issuing CA chains to the root perfectly well, but it is a CA, not a responder the root
    /// delegated to (no id-kp-OCSPSigning), so it may not answer for the root's certificates.
    func testSubordinateCAWithoutOCSPSigningCannotAnswerForItsSelfSignedIssuer() throws {
        let request = try fixture.request("issuing-ca", issuer: "root-ca")
        let der = try fixture.respond(to: request, signer: "issuing-ca", ca: "root-ca")
        let rejection = try fixture.policy(issuer: "root-ca").verify(der: der, for: request.certID).rejection()
        guard case let .signerNotAuthorized(reason) = rejection else { return XCTFail("\(String(describing: rejection))") }
        XCTAssertTrue(reason.contains("id-kp-OCSPSigning"), reason)
        // The same responder signing as the root itself is fine.
        let byRoot = try fixture.respond(to: request, signer: "root-ca", ca: "root-ca")
        XCTAssertEqual(try fixture.policy(issuer: "root-ca").verify(der: byRoot, for: request.certID).accepted().status, .unknown)
    }

    func testTrustedSignerAnsweringForAnotherCA() throws {
        // Our delegated signer signs an answer about the rogue CA's device: its own chain is fine,
        // but it speaks only for the issuing CA. OpenSSL says no without queueing a reason.
        let request = try fixture.request("device-rogue", issuer: "rogue-ca")
        let der = try fixture.respond(to: request)
        XCTAssertTrue(try fixture.responseText(der).contains("Cert Status: unknown"))
        let rejection = try verify(der, certID: request.certID)
        guard case let .signerNotAuthorized(reason) = rejection else { return XCTFail("\(String(describing: rejection))") }
        XCTAssertEqual(reason, "neither the issuer nor a responder it delegated to (CN=StapleGate Demo OCSP Signer)")
    }

    func testResponseForAnotherCertificate() throws {
        let device2 = try fixture.respond(to: fixture.request("device-2"))
        XCTAssertEqual(try verify(device2), .certIDNotInResponse(expected: Self.device1.certID))
        XCTAssertEqual(try verify(device2)?.description, "response is not for \(Self.device1.certID)")
    }

    func testNonceMismatch() throws {
        let request = try fixture.request("device-1", nonce: true)
        let withNonce = try fixture.respond(to: request)
        var other = try XCTUnwrap(request.nonce)
        other[0] ^= 0xFF
        XCTAssertEqual(try verify(withNonce, nonce: other), .nonceMismatch)
        // A response without any nonce, when one was sent, is no proof of freshness either.
        XCTAssertEqual(try verify(Self.good, nonce: request.nonce), .nonceMismatch)
        // Not asking for a nonce accepts a response that carries one.
        XCTAssertEqual(try fixture.policy().verify(der: withNonce, for: request.certID).accepted().status, .good)
    }
}
