@testable import StapleGateTLS
import TestSupport
import XCTest

/// The certificate facts stapling relies on, checked against what the openssl CLI says.
final class X509CertificateTests: SharedPKITestCase {
    private func leaf(_ name: String) throws -> X509Certificate {
        try PEMFile.certificateChain(at: pki.path("\(name).pem"))[0]
    }

    private func openssl(_ arguments: [String]) throws -> String {
        let process = try ManagedProcess("openssl", arguments)
        let status = try process.waitForExitBlocking(timeout: .seconds(30))
        XCTAssertTrue(status.succeeded, process.output)
        return process.output
    }

    func testMustStapleIsDetectedOnlyWhereTheTLSFeatureSaysSo() throws {
        XCTAssertTrue(try leaf("server-muststaple").isMustStaple)
        XCTAssertFalse(try leaf("server").isMustStaple)
        XCTAssertFalse(try leaf("device-1").isMustStaple)
    }

    func testResponderURLsComeFromTheAIAExtension() throws {
        XCTAssertEqual(try leaf("server").ocspResponderURLs, [pki.ocspURL])
        XCTAssertEqual(try leaf("device-noaia").ocspResponderURLs, [])
    }

    func testFingerprintAndSerialMatchTheOpenSSLCLI() throws {
        let certificate = try leaf("server")
        let fingerprint = try openssl(["x509", "-in", pki.path("server.pem"), "-noout", "-fingerprint", "-sha256"])
        XCTAssertTrue(fingerprint.replacingOccurrences(of: ":", with: "").lowercased().contains(certificate.sha256Fingerprint), fingerprint)
        XCTAssertEqual(certificate.sha256Fingerprint.count, 64)
        let serial = try openssl(["x509", "-in", pki.path("server.pem"), "-noout", "-serial"])
        XCTAssertTrue(serial.contains("serial=\(certificate.serialHex)"), serial)
    }
}
