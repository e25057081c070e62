import Foundation
import XCTest
@testable import StapleGateConfig

/// Files the config names that are missing or hold the wrong thing, and TLS settings OpenSSL
/// refuses: each error must name the key that named the file, on its line.
final class FileErrorTests: ConfigTestCase {
    private func certificate(_ certificate: String, key: String = "server.key") -> String {
        yaml(certificates: "- certificate: \(certificate)\n  key: \(key)")
    }

    // MARK: - Certificate chain

    func testMissingCertificateFile() {
        assertError(certificate("missing.pem"), key: "tls.certificates[0].certificate", lineContaining: "- certificate",
                    reasonContains: [pki.path("missing.pem"), "no such file"])
    }

    func testCertificatePathIsADirectory() {
        assertError(certificate("a-directory"), key: "tls.certificates[0].certificate", lineContaining: "- certificate",
                    reasonContains: [pki.path("a-directory"), "is a directory"])
    }

    func testUnreadableCertificateFile() throws {
        try XCTSkipIf(getuid() == 0, "running as root: access() grants root every file, so an unreadable certificate cannot be made")
        try FileManager.default.copyItem(atPath: pki.path("server.pem"), toPath: pki.path("locked.pem"))
        XCTAssertEqual(chmod(pki.path("locked.pem"), 0), 0)
        assertError(certificate("locked.pem"), key: "tls.certificates[0].certificate", lineContaining: "- certificate",
                    reasonContains: [pki.path("locked.pem"), "is not readable"])
    }

    func testGarbageCertificateFile() {
        assertError(certificate("garbage.pem"), key: "tls.certificates[0].certificate", lineContaining: "- certificate",
                    reasonContains: [pki.path("garbage.pem"), "is not a valid PEM certificate file"])
    }

    func testEmptyCertificateFile() {
        assertError(certificate("empty.pem"), key: "tls.certificates[0].certificate", lineContaining: "- certificate",
                    reasonContains: [pki.path("empty.pem"), "contains no PEM certificate"])
    }

    func testCertificateFileWithoutACertificate() {
        assertError(certificate("server.key"), key: "tls.certificates[0].certificate", lineContaining: "- certificate",
                    reasonContains: [pki.path("server.key"), "contains no PEM certificate"])
        assertError(certificate("notes.txt"), key: "tls.certificates[0].certificate", lineContaining: "- certificate",
                    reasonContains: ["contains no PEM certificate"])
    }

    func testUnsupportedEd25519Certificate() {
        assertError(certificate("ed25519.pem", key: "ed25519.key"), key: "tls.certificates[0].certificate",
                    lineContaining: "- certificate", reasonContains: [pki.path("ed25519.pem"), "Ed25519 keys are not supported"])
    }

    func testTwoECDSACertificatesAreRefused() {
        let text = yaml(certificates: """
            - certificate: server.pem
              key: server.key
            - certificate: server2.pem
              key: server2.key
            """)
        assertError(text, key: "tls.certificates[1].certificate", lineContaining: "server2.pem",
                    reasonContains: [pki.path("server2.pem"), "a second ECDSA certificate"])
    }

    // MARK: - Private key

    func testMissingKeyFile() {
        assertError(certificate("server.pem", key: "missing.key"), key: "tls.certificates[0].key", lineContaining: "key: missing.key",
                    reasonContains: [pki.path("missing.key"), "no such file"])
    }

    func testKeyPathIsADirectory() {
        assertError(certificate("server.pem", key: "a-directory"), key: "tls.certificates[0].key", lineContaining: "key: a-directory",
                    reasonContains: ["is a directory"])
    }

    func testGarbageKeyFile() {
        assertError(certificate("server.pem", key: "garbage.pem"), key: "tls.certificates[0].key", lineContaining: "key: garbage.pem",
                    reasonContains: [pki.path("garbage.pem"), "contains no readable PEM private key"])
    }

    func testEmptyKeyFile() {
        assertError(certificate("server.pem", key: "empty.pem"), key: "tls.certificates[0].key", lineContaining: "key: empty.pem",
                    reasonContains: [pki.path("empty.pem"), "private key"])
    }

    func testKeyThatDoesNotMatchTheCertificate() {
        assertError(certificate("server.pem", key: "other.key"), key: "tls.certificates[0].key", lineContaining: "key: other.key",
                    reasonContains: [pki.path("other.key"), "does not match the certificate in \(pki.path("server.pem"))"])
    }

    func testEncryptedKey() {
        assertError(certificate("server.pem", key: "encrypted.key"), key: "tls.certificates[0].key", lineContaining: "key: encrypted.key",
                    reasonContains: [pki.path("encrypted.key"), "encrypted private key"])
    }

    func testCertificateOpenSSLRefusesForItsWeakKey() {
        assertError(certificate("weak-rsa.pem", key: "weak-rsa.key"), key: "tls.certificates[0].certificate",
                    lineContaining: "certificate: weak-rsa.pem",
                    reasonContains: [pki.path("weak-rsa.pem"), "OpenSSL refuses this certificate and key", "too small"])
    }

    func testProblemInTheSecondCertificateNamesItsIndexAndLine() {
        let text = yaml(certificates: """
            - certificate: server.pem
              key: server.key
            - certificate: rsa.pem
              key: server.key
            """)
        guard let error = loadError(text), let rsaLine = line(of: "rsa.pem", in: text) else { return }
        assertError(error, key: "tls.certificates[1].key", line: rsaLine + 1,
                    reasonContains: [pki.path("server.key"), "does not match the certificate in \(pki.path("rsa.pem"))"])
    }

    // MARK: - Device CA bundle

    func testMissingDeviceCABundle() {
        assertError(yaml(deviceCA: "missing-ca.pem"), key: "tls.device_ca", lineContaining: "device_ca",
                    reasonContains: [pki.path("missing-ca.pem"), "no such file"])
    }

    func testEmptyDeviceCABundle() {
        assertError(yaml(deviceCA: "empty.pem"), key: "tls.device_ca", lineContaining: "device_ca",
                    reasonContains: ["contains no PEM certificate"])
    }

    func testDeviceCABundleWithANonCACertificate() {
        assertError(yaml(deviceCA: "ca-with-leaf.pem"), key: "tls.device_ca", lineContaining: "device_ca",
                    reasonContains: [pki.path("ca-with-leaf.pem"), "localhost server", "is not a CA certificate"])
    }

    // MARK: - Settings OpenSSL refuses

    func testUnknownTLS13Ciphersuites() {
        assertError(yaml(tls: "tls13_ciphersuites: TLS_NO_SUCH_SUITE"), key: "tls.tls13_ciphersuites", lineContaining: "tls13_ciphersuites",
                    reasonContains: ["'TLS_NO_SUCH_SUITE'", "TLS 1.3 ciphersuites"])
    }

    func testUnknownTLS12Ciphers() {
        assertError(yaml(tls: "tls12_ciphers: NO-SUCH-CIPHER"), key: "tls.tls12_ciphers", lineContaining: "tls12_ciphers",
                    reasonContains: ["'NO-SUCH-CIPHER'", "TLS 1.2 ciphers"])
    }

    func testUnknownGroups() {
        assertError(yaml(tls: "groups: \"X25519:P-999\""), key: "tls.groups", lineContaining: "groups",
                    reasonContains: ["'X25519:P-999'", "key exchange groups"])
    }

    func testTLSSettingErrorsMapToTheirKeys() {
        XCTAssertEqual(TLSFileChecks.key(for: .tls13Ciphersuites), "tls.tls13_ciphersuites")
        XCTAssertEqual(TLSFileChecks.key(for: .tls12Ciphers), "tls.tls12_ciphers")
        XCTAssertEqual(TLSFileChecks.key(for: .groups), "tls.groups")
        XCTAssertEqual(TLSFileChecks.key(for: .verifyDepth), "tls.verify_depth")
        XCTAssertEqual(TLSFileChecks.key(for: .certificate(index: 1)), "tls.certificates[1].certificate")
    }
}
