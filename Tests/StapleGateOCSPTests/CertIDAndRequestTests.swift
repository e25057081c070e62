import Foundation
import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// CertIDs and requests built by us, checked against what the openssl CLI makes of them.
final class CertIDAndRequestTests: OCSPFixtureTestCase {
    func testTheSameCertificateGivesEqualCertIDsWithEqualHashes() throws {
        let first = try fixture.certID("device-1")
        let second = try CertID(certificate: fixture.certificate("device-1"), issuer: fixture.certificate("issuing-ca"))
        XCTAssertEqual(first, second)
        XCTAssertEqual(first.hashValue, second.hashValue)
        XCTAssertEqual(Set([first, second]).count, 1)
        XCTAssertNotEqual(first, try fixture.certID("device-2"))
        XCTAssertEqual(first.issuerNameHash.count, 20, "SHA-1")
        XCTAssertEqual(first.issuerKeyHash.count, 20, "SHA-1")
        // Same issuer, so only the serial differs.
        let other = try fixture.certID("device-2")
        XCTAssertEqual(first.issuerNameHash, other.issuerNameHash)
        XCTAssertEqual(first.issuerKeyHash, other.issuerKeyHash)
    }

    /// `names` recognises a certificate by serial and issuer name alone (what a session's bar
    /// has to go on): its own CertID names it; another serial, or another issuer, does not.
    func testACertIDNamesItsOwnCertificateAndNoOther() throws {
        let device = try fixture.certificate("device-1")
        XCTAssertTrue(try fixture.certID("device-1").names(device))
        XCTAssertFalse(try fixture.certID("device-2").names(device), "another serial of the same CA")
        let rogue = try fixture.certID("device-rogue", issuer: "rogue-ca")
        XCTAssertTrue(rogue.names(try fixture.certificate("device-rogue")))
        let sameSerialOtherIssuer = CertID(issuerNameHash: rogue.issuerNameHash, issuerKeyHash: rogue.issuerKeyHash,
                                           serialNumber: try fixture.certID("device-1").serialNumber)
        XCTAssertFalse(sameSerialOtherIssuer.names(device), "device-1's serial under the rogue CA's name")
    }

    func testSerialHexMatchesOpenSSLX509Serial() throws {
        for (name, issuer) in [("device-1", "issuing-ca"), ("server", "issuing-ca"), ("ocsp-signer", "issuing-ca"),
                               ("device-rogue", "rogue-ca"), ("issuing-ca", "root-ca")] {
            let printed = try fixture.openssl(["x509", "-in", fixture.pki.path("\(name).pem"), "-noout", "-serial"])
            let expected = printed.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
            let id = try fixture.certID(name, issuer: issuer)
            XCTAssertEqual(id.serialHex, expected, name)
            XCTAssertEqual(id.serialHex, try fixture.certificate(name).serialHex, name)
            XCTAssertTrue(id.description.hasPrefix("serial \(expected) (issuer key hash "), id.description)
        }
    }

    func testACertificateAndACAThatDidNotIssueItAreRefused() throws {
        XCTAssertThrowsError(try fixture.certID("device-rogue", issuer: "issuing-ca")) { error in
            XCTAssertEqual("\(error)", "CN=device-rogue was not issued by CN=StapleGate Demo Issuing CA (subject issuer mismatch)")
        }
        XCTAssertThrowsError(try fixture.request("device-1", issuer: "rogue-ca"))
        XCTAssertThrowsError(try fixture.certID("device-1", issuer: "device-2"))
    }

    func testLeadingZeroSerialBytesAreNormalised() {
        let id = CertID(issuerNameHash: [1], issuerKeyHash: [2], serialNumber: [0, 0, 0x0A])
        XCTAssertEqual(id.serialNumber, [0x0A])
        XCTAssertEqual(id.serialHex, "0A")
        XCTAssertEqual(CertID(issuerNameHash: [], issuerKeyHash: [], serialNumber: [0, 0]).serialNumber, [0])
    }

    func testRequestDERIsAcceptedByOpenSSLWithOurCertID() throws {
        let request = try fixture.request("device-1")
        XCTAssertNil(request.nonce)
        XCTAssertEqual(request.certID, try fixture.certID("device-1"))
        let file = try fixture.writeScratch("plain-req.der", request.der)
        let text = try fixture.openssl(["ocsp", "-reqin", file, "-req_text"])
        XCTAssertTrue(text.contains("Hash Algorithm: sha1"), text)
        XCTAssertTrue(text.contains("Serial Number: \(request.certID.serialHex)"), text)
        XCTAssertTrue(text.contains("Issuer Key Hash: \(hex(request.certID.issuerKeyHash))"), text)
        XCTAssertTrue(text.contains("Issuer Name Hash: \(hex(request.certID.issuerNameHash))"), text)
        XCTAssertFalse(text.contains("Nonce"), text)
    }

    func testRequestWithNonceCarriesSixteenRandomBytes() throws {
        let first = try fixture.request("device-1", nonce: true)
        let second = try fixture.request("device-1", nonce: true)
        let nonce = try XCTUnwrap(first.nonce)
        XCTAssertEqual(nonce.count, 16)
        XCTAssertNotEqual(first.nonce, second.nonce)
        let file = try fixture.writeScratch("nonce-req.der", first.der)
        let text = try fixture.openssl(["ocsp", "-reqin", file, "-req_text"])
        XCTAssertTrue(text.contains("OCSP Nonce"), text)
        // OpenSSL prints the extension value: an OCTET STRING (04 10) wrapping the 16 bytes.
        XCTAssertTrue(text.contains("0410" + hex(nonce)), text)
    }

    func testGetURLRoundTripsToTheSameDER() throws {
        for request in [try fixture.request("device-1"), try fixture.request("server", nonce: true)] {
            for base in ["http://127.0.0.1:8888", "http://127.0.0.1:8888/", "http://ocsp.example/path/"] {
                let url = request.getURL(responderURL: base)
                let trimmed = base.hasSuffix("/") ? String(base.dropLast()) : base
                XCTAssertTrue(url.hasPrefix(trimmed + "/"), url)
                let encoded = String(url.dropFirst(trimmed.count + 1))
                XCTAssertFalse(encoded.isEmpty)
                XCTAssertNil(encoded.rangeOfCharacter(from: CharacterSet(charactersIn: "/+=")), url)
                let base64 = try XCTUnwrap(encoded.removingPercentEncoding)
                XCTAssertEqual(Data(base64Encoded: base64).map { [UInt8]($0) }, request.der, url)
            }
        }
    }

    /// A device known only by its cache entry is asked about by CertID: the same request bytes
    /// as from its certificate, and only under the CA that issued it.
    func testARequestFromTheCertIDAloneIsTheRequestFromTheCertificate() throws {
        let issuer = try fixture.certificate("issuing-ca")
        let id = try fixture.certID("device-1")
        XCTAssertTrue(id.isIssued(by: issuer))
        XCTAssertFalse(id.isIssued(by: try fixture.certificate("rogue-ca")))
        XCTAssertFalse(id.isIssued(by: try fixture.certificate("root-ca")))
        let fromCertificate = try OCSPRequest(certificate: fixture.certificate("device-1"), issuer: issuer)
        let fromCertID = try OCSPRequest(certID: id, issuer: issuer)
        XCTAssertEqual(fromCertID.der, fromCertificate.der)
        XCTAssertThrowsError(try OCSPRequest(certID: id, issuer: fixture.certificate("rogue-ca"))) { error in
            XCTAssertTrue("\(error)".hasPrefix("serial \(id.serialHex) is not under CN="), "\(error)")
        }
    }

    private func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02X", $0) }.joined()
    }
}
