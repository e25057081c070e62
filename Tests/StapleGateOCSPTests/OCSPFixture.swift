import Foundation
import StapleGateOCSP
import StapleGateTLS
import TestSupport
import XCTest

/// A demo PKI plus the `openssl` CLI acting as an offline OCSP responder over its index.txt:
/// every response the tests verify was produced and signed by real OpenSSL, no server needed.
final class OCSPFixture {
    let pki: TestPKI
    let scratch: TemporaryDirectory
    let issuingCA: X509Certificate
    private var counter = 0

    init() throws {
        pki = try TestPKI.make()
        do {
            scratch = try TemporaryDirectory(prefix: "ocsp")
            issuingCA = try PEMFile.certificateChain(at: pki.path("issuing-ca.pem"))[0]
        } catch {
            pki.remove()
            throw error
        }
    }

    func remove() {
        scratch.remove()
        pki.remove()
    }

    /// The leaf of `NAME.pem` (device files also hold the issuing CA after the leaf).
    func certificate(_ name: String) throws -> X509Certificate {
        try PEMFile.certificateChain(at: pki.path("\(name).pem"))[0]
    }

    func certID(_ name: String, issuer: String = "issuing-ca") throws -> CertID {
        try CertID(certificate: certificate(name), issuer: certificate(issuer))
    }

    func request(_ name: String, issuer: String = "issuing-ca", nonce: Bool = false) throws -> OCSPRequest {
        try OCSPRequest(certificate: certificate(name), issuer: certificate(issuer), includeNonce: nonce)
    }

    func policy(issuer: String = "issuing-ca") throws -> OCSPVerificationPolicy {
        OCSPVerificationPolicy(issuer: try certificate(issuer))
    }

    /// `openssl ocsp -index index.txt -CA <ca> -rsigner <signer> -rkey <signer key> -reqin … -respout …`
    /// with `options` (by default `-nmin 10`, so the response has a nextUpdate 10 minutes on).
    /// `index` replaces the PKI's index.txt for this one response.
    func respond(to request: OCSPRequest, signer: String = "ocsp-signer", ca: String = "issuing-ca",
                 index: String? = nil, options: [String] = ["-nmin", "10"]) throws -> [UInt8] {
        counter += 1
        let requestFile = try scratch.write("req-\(counter).der", Data(request.der))
        let responseFile = scratch.file("resp-\(counter).der")
        var indexFile = pki.path("index.txt")
        if let index {
            indexFile = try scratch.write("index-\(counter).txt", index)
            // openssl reads "<index>.attr" beside it (unique_subject = no: devices share subjects).
            try scratch.write("index-\(counter).txt.attr", String(contentsOfFile: pki.path("index.txt.attr"), encoding: .utf8))
        }
        try openssl(["ocsp", "-index", indexFile, "-CA", pki.path("\(ca).pem"),
                     "-rsigner", pki.path("\(signer).pem"), "-rkey", pki.path("\(signer).key"),
                     "-reqin", requestFile, "-respout", responseFile] + options)
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: responseFile)))
    }

    /// What `openssl ocsp -respin … -resp_text -noverify` prints about a response.
    func responseText(_ der: [UInt8]) throws -> String {
        counter += 1
        let file = try scratch.write("text-\(counter).der", Data(der))
        return try openssl(["ocsp", "-respin", file, "-resp_text", "-noverify"])
    }

    func writeScratch(_ name: String, _ bytes: [UInt8]) throws -> String {
        try scratch.write(name, Data(bytes))
    }

    /// Runs the openssl CLI, failing with its output unless it exits 0; returns its stdout.
    @discardableResult
    func openssl(_ arguments: [String]) throws -> String {
        let process = try ManagedProcess("openssl", arguments)
        let status = try process.waitForExitBlocking(timeout: .seconds(30))
        guard status.succeeded else {
            throw OpenSSLCommandFailed(description: "\(process.commandLine): \(status)\n\(process.output)")
        }
        return process.stdout.text
    }
}

struct OpenSSLCommandFailed: Error, CustomStringConvertible {
    let description: String
}

extension Result {
    /// The success value, or an XCTest failure naming the rejection.
    func accepted(file: StaticString = #filePath, line: UInt = #line) throws -> Success {
        switch self {
        case let .success(value): return value
        case let .failure(error):
            XCTFail("rejected: \(error)", file: file, line: line)
            throw error
        }
    }

    /// The rejection, or an XCTest failure if it was accepted.
    func rejection(file: StaticString = #filePath, line: UInt = #line) -> Failure? {
        switch self {
        case .success: XCTFail("accepted, expected a rejection", file: file, line: line); return nil
        case let .failure(error): return error
        }
    }
}

/// Test cases sharing one `OCSPFixture` (PKI and scratch folder) per class.
class OCSPFixtureTestCase: XCTestCase {
    nonisolated(unsafe) private static var shared: OCSPFixture?
    var fixture: OCSPFixture { Self.shared! }

    override class func setUp() {
        super.setUp()
        shared = try! OCSPFixture()
    }

    override class func tearDown() {
        shared?.remove()
        shared = nil
        super.tearDown()
    }
}
