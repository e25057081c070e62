import Foundation
import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// Responses a correct responder gives, each accepted with the status and fields it carries.
final class AcceptedResponseTests: OCSPFixtureTestCase {
    func testGoodFromTheDelegatedSigner() throws {
        let request = try fixture.request("device-1")
        let before = Date().addingTimeInterval(-2)
        let der = try fixture.respond(to: request)
        let verified = try fixture.policy().verify(der: der, for: request.certID).accepted()
        XCTAssertEqual(verified.status, .good)
        XCTAssertEqual(verified.der, der, "the bytes to staple are the bytes received")
        XCTAssertEqual(verified.certID, request.certID)
        XCTAssertEqual(verified.responderID, "CN=StapleGate Demo OCSP Signer")
        XCTAssertEqual(try XCTUnwrap(verified.nextUpdate).timeIntervalSince(verified.thisUpdate), 600, "-nmin 10")
        XCTAssertGreaterThanOrEqual(verified.thisUpdate, before.addingTimeInterval(-1))
        XCTAssertLessThanOrEqual(verified.producedAt, Date().addingTimeInterval(1))
        XCTAssertGreaterThanOrEqual(verified.producedAt, before.addingTimeInterval(-1))
    }

    func testRevokedWithReasonAndTimeFromIndex() throws {
        let request = try fixture.request("device-revoked")
        let verified = try fixture.policy().verify(der: fixture.respond(to: request), for: request.certID).accepted()
        // index.txt: R <expiry> <revocation time>,<reason> <serial> …
        let index = try String(contentsOfFile: fixture.pki.path("index.txt"), encoding: .utf8)
        let row = try XCTUnwrap(index.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
            .first { $0.count > 3 && $0[3].uppercased() == request.certID.serialHex })
        XCTAssertEqual(row[0], "R")
        let parts = row[2].split(separator: ",")
        XCTAssertEqual(parts.last, "keyCompromise")
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyMMddHHmmss'Z'"
        let revokedAt = try XCTUnwrap(formatter.date(from: String(parts[0])))
        XCTAssertEqual(verified.status, .revoked(at: revokedAt, reason: .keyCompromise))
    }

    func testRevokedLaterWithAnotherReason() async throws {
        try await fixture.pki.revoke("device-to-revoke", reason: "superseded")
        let request = try fixture.request("device-to-revoke")
        let verified = try fixture.policy().verify(der: fixture.respond(to: request), for: request.certID).accepted()
        guard case let .revoked(at, reason) = verified.status else { return XCTFail("\(verified.status)") }
        XCTAssertEqual(reason, .superseded)
        XCTAssertLessThan(abs(at.timeIntervalSinceNow), 120)
    }

    func testUnknownForACertificateNotInTheIndex() throws {
        // The issuing CA's database without device-1's row: its responder does not know it.
        let request = try fixture.request("device-1")
        let index = try String(contentsOfFile: fixture.pki.path("index.txt"), encoding: .utf8)
        let rows = index.split(separator: "\n").filter { !$0.uppercased().contains("\t\(request.certID.serialHex)\t") }
        XCTAssertEqual(rows.count, index.split(separator: "\n").count - 1)
        let der = try fixture.respond(to: request, index: rows.joined(separator: "\n") + "\n")
        let verified = try fixture.policy().verify(der: der, for: request.certID).accepted()
        XCTAssertEqual(verified.status, .unknown)
    }

    func testUnknownForACertificateOfAnotherCA() throws {
        // The root CA's responder (signed by the root) does not list the issuing CA it issued.
        let request = try fixture.request("issuing-ca", issuer: "root-ca")
        let der = try fixture.respond(to: request, signer: "root-ca", ca: "root-ca")
        XCTAssertEqual(try fixture.policy(issuer: "root-ca").verify(der: der, for: request.certID).accepted().status, .unknown)
    }

    func testSignedByTheIssuerItselfWithAndWithoutCertificates() throws {
        let request = try fixture.request("device-2")
        for options in [["-nmin", "10"], ["-nmin", "10", "-resp_no_certs"]] {
            let der = try fixture.respond(to: request, signer: "issuing-ca", options: options)
            let verified = try fixture.policy().verify(der: der, for: request.certID).accepted()
            XCTAssertEqual(verified.status, .good, "\(options)")
            XCTAssertEqual(verified.responderID, "CN=StapleGate Demo Issuing CA", "\(options)")
        }
    }

    func testResponderIDByKeyHash() throws {
        let request = try fixture.request("device-1")
        let der = try fixture.respond(to: request, options: ["-nmin", "10", "-resp_key_id"])
        let verified = try fixture.policy().verify(der: der, for: request.certID).accepted()
        let text = try fixture.responseText(der)
        let printed = try XCTUnwrap(text.split(separator: "\n").first { $0.contains("Responder Id:") })
        let keyHash = printed.components(separatedBy: "Responder Id:")[1].trimmingCharacters(in: .whitespaces)
        XCTAssertEqual(keyHash.count, 40, text)
        XCTAssertEqual(verified.responderID, "key hash \(keyHash)")
    }

    func testNonceEchoedByTheResponder() throws {
        let request = try fixture.request("device-3", nonce: true)
        let der = try fixture.respond(to: request)
        let verified = try fixture.policy().verify(der: der, for: request.certID, nonce: request.nonce).accepted()
        XCTAssertEqual(verified.status, .good)
    }

    func testResponseWithoutNextUpdateWithinMaximumAge() throws {
        let request = try fixture.request("device-1")
        let verified = try fixture.policy().verify(der: fixture.respond(to: request, options: []),
                                                   for: request.certID).accepted()
        XCTAssertNil(verified.nextUpdate)
        XCTAssertEqual(verified.status, .good)
    }
}
