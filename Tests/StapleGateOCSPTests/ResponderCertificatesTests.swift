import COpenSSL
import Foundation
@testable import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// Responses are parsed apart from the certificates they carry, each decoded once per process.
/// Every verdict must be the one the whole response, parsed as OpenSSL parses it, gives.
final class ResponderCertificatesTests: OCSPFixtureTestCase {
    private func outcome(_ der: [UInt8], _ certificates: ResponderCertificates?, certID: CertID, issuer: String = "issuing-ca",
                         nonce: [UInt8]? = nil) throws -> String {
        let policy = OCSPVerificationPolicy(issuer: try fixture.certificate(issuer), responderCertificates: certificates)
        switch policy.verify(der: der, for: certID, nonce: nonce) {
        case let .success(response): return "accepted: \(response.status), by \(response.responderID)"
        case let .failure(rejection): return "rejected: \(rejection)"
        }
    }

    /// Real responses from `openssl ocsp`, good and bad, both ways.
    func testEveryVerdictIsTheOneTheWholeResponseGives() throws {
        let device1 = try fixture.request("device-1")
        let rogueDevice = try fixture.request("device-rogue", issuer: "rogue-ca")
        let extra = try fixture.writeScratch("extra.pem", Array(String(contentsOfFile: fixture.pki.path("root-ca.pem"), encoding: .utf8).utf8))
        let cases: [(name: String, der: [UInt8], certID: CertID, issuer: String)] = try [
            ("delegated signer", fixture.respond(to: device1), device1.certID, "issuing-ca"),
            ("signer and another certificate", fixture.respond(to: device1, options: ["-nmin", "10", "-rother", extra]), device1.certID, "issuing-ca"),
            ("signer left out", fixture.respond(to: device1, options: ["-nmin", "10", "-resp_no_certs"]), device1.certID, "issuing-ca"),
            ("bad signature", fixture.respond(to: device1, options: ["-nmin", "10", "-badsig"]), device1.certID, "issuing-ca"),
            ("signer without OCSPSigning", fixture.respond(to: device1, signer: "device-2"), device1.certID, "issuing-ca"),
            ("signer from another CA", fixture.respond(to: device1, signer: "rogue-ca"), device1.certID, "issuing-ca"),
            ("signed by the issuer", fixture.respond(to: device1, signer: "issuing-ca"), device1.certID, "issuing-ca"),
            ("trusted signer for another CA", fixture.respond(to: rogueDevice), rogueDevice.certID, "issuing-ca"),
            ("checked against the wrong issuer", fixture.respond(to: device1), device1.certID, "rogue-ca"),
        ]
        let certificates = ResponderCertificates()
        var accepted = 0
        for (name, der, certID, issuer) in cases {
            XCTAssertNotNil(BasicResponseParts.split(der), "\(name): taken apart")
            let whole = try outcome(der, nil, certID: certID, issuer: issuer)
            XCTAssertEqual(try outcome(der, certificates, certID: certID, issuer: issuer), whole, name)
            XCTAssertEqual(try outcome(der, certificates, certID: certID, issuer: issuer), whole, "\(name), decoded before")
            if whole.hasPrefix("accepted") { accepted += 1 }
        }
        XCTAssertEqual(accepted, 3, "negative control: the good ones are accepted")
        XCTAssertGreaterThanOrEqual(certificates.count, 4, "the signers' certificates were decoded here")
        // Tampered bytes (the last byte of the signature) are refused both ways.
        var tampered = try fixture.respond(to: device1, signer: "issuing-ca", options: ["-nmin", "10", "-resp_no_certs"])
        tampered[tampered.count - 1] ^= 0x01
        XCTAssertEqual(try outcome(tampered, certificates, certID: device1.certID), try outcome(tampered, nil, certID: device1.certID))
        XCTAssertTrue(try outcome(tampered, certificates, certID: device1.certID).hasPrefix("rejected: response signature invalid"))
    }

    func testASplitKeepsTheSignedPartAndFindsEachCarriedCertificate() throws {
        let device1 = try fixture.request("device-1")
        let signerDER = try derOfCertificate("ocsp-signer")
        let parts = try XCTUnwrap(BasicResponseParts.split(fixture.respond(to: device1)))
        XCTAssertEqual(parts.certificates.map(Array.init), [signerDER])
        let extra = try fixture.writeScratch("extra2.pem", Array(String(contentsOfFile: fixture.pki.path("root-ca.pem"), encoding: .utf8).utf8))
        let two = try XCTUnwrap(BasicResponseParts.split(fixture.respond(to: device1, options: ["-nmin", "10", "-rother", extra])))
        XCTAssertEqual(two.certificates.map(Array.init), [signerDER, try derOfCertificate("root-ca")])
        for kept in [parts.withoutCertificates, two.withoutCertificates] {
            // What is left is a whole BasicOCSPResponse, and OpenSSL reads all of it.
            kept.withUnsafeBufferPointer { buffer in
                var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
                let basic = d2i_OCSP_BASICRESP(nil, &cursor, buffer.count)
                XCTAssertNotNil(basic)
                XCTAssertEqual(cursor, buffer.baseAddress.map { $0 + buffer.count })
                OCSP_BASICRESP_free(basic)
            }
        }
        let none = try XCTUnwrap(BasicResponseParts.split(fixture.respond(to: device1, options: ["-nmin", "10", "-resp_no_certs"])))
        XCTAssertEqual(none.certificates.count, 0)
    }

    /// What is not plain DER in the expected shape is not taken apart (the whole response is
    /// then parsed as OpenSSL parses it).
    func testAnythingButPlainDERIsLeftWhole() throws {
        let good = try fixture.respond(to: fixture.request("device-1"))
        XCTAssertNotNil(BasicResponseParts.split(good), "negative control")
        XCTAssertNil(BasicResponseParts.split(Array(good.dropLast())), "truncated")
        XCTAssertNil(BasicResponseParts.split(good + [0]), "a byte after it")
        XCTAssertNil(BasicResponseParts.split([0x30, 0x80, 0x0A, 0x01, 0x00, 0x00, 0x00]), "BER's indefinite length")
        XCTAssertNil(BasicResponseParts.split([0x30, 0x81, 0x03, 0x0A, 0x01, 0x00]), "a long length where the short one fits")
        XCTAssertNil(BasicResponseParts.split([0x30, 0x03, 0x0A, 0x01, 0x03]), "no response bytes (tryLater)")
        XCTAssertNil(BasicResponseParts.split([]))
        // The length forms DER uses, both ways.
        XCTAssertEqual(DERElement.header(tag: 0x30, length: 0x7F), [0x30, 0x7F])
        XCTAssertEqual(DERElement.header(tag: 0x30, length: 0x80), [0x30, 0x81, 0x80])
        XCTAssertEqual(DERElement.header(tag: 0x30, length: 0x1234), [0x30, 0x82, 0x12, 0x34])
        let long = DERElement.header(tag: 0x04, length: 300) + [UInt8](repeating: 7, count: 300)
        XCTAssertEqual(DERElement.read(long[...], tag: 0x04)?.content.count, 300)
        XCTAssertNil(DERElement.read(long[...], tag: 0x30), "another tag")
    }

    func testACertificateIsDecodedOnceAndTheCacheIsBounded() throws {
        let certificates = ResponderCertificates(capacity: 2)
        let signer = try derOfCertificate("ocsp-signer")
        let first = try XCTUnwrap(certificates.certificate(signer[...]))
        XCTAssertTrue(certificates.certificate(signer[...]) === first, "decoded once")
        XCTAssertNil(certificates.certificate((signer + [0])[...]), "not exactly one certificate")
        XCTAssertNil(certificates.certificate([0x30, 0x03, 0x02, 0x01, 0x00][...]))
        XCTAssertEqual(certificates.count, 1, "nothing undecodable is kept")
        _ = try XCTUnwrap(certificates.certificate(derOfCertificate("root-ca")[...]))
        _ = try XCTUnwrap(certificates.certificate(derOfCertificate("issuing-ca")[...]))
        XCTAssertEqual(certificates.count, 2)
        XCTAssertFalse(certificates.certificate(signer[...]) === first, "the oldest made room")
    }

    private func derOfCertificate(_ name: String) throws -> [UInt8] {
        let file = fixture.scratch.file("\(name).der")
        try fixture.openssl(["x509", "-in", fixture.pki.path("\(name).pem"), "-outform", "DER", "-out", file])
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
    }
}
