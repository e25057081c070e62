import Foundation
@testable import StapleGateConfig
import XCTest

/// Private key files open to other users are refused, as ssh refuses them, unless the operator
/// sets `tls.open_key_files: warn`; the refusal names the key, the file, its mode and the fix.
final class KeyPermissionsConfigTests: ConfigTestCase {
    /// A copy of the server key with `mode`, so the shared PKI's own key stays 0600.
    private func keyCopy(_ name: String, of source: String = "server.key", mode: mode_t) throws -> String {
        try pki.write(name, try String(contentsOfFile: pki.path(source), encoding: .utf8))
        XCTAssertEqual(chmod(pki.path(name), mode), 0)
        return name
    }

    private func certificates(key: String) -> String { "- certificate: server.pem\n  key: \(key)" }

    func testKeysOpenToOtherUsersAreRefusedNamingTheFileModeAndFix() throws {
        for mode: mode_t in [0o644, 0o604, 0o660, 0o666, 0o601] {
            let name = try keyCopy("open-\(String(mode, radix: 8)).key", mode: mode)
            assertError(yaml(certificates: certificates(key: name)), key: "tls.certificates[0].key",
                        lineContaining: "key: \(name)",
                        reasonContains: [pki.path(name), "mode \(String(mode, radix: 8))", "chmod 600", "tls.open_key_files: warn"])
        }
    }

    func testOwnerAndGroupReadersAreEnough() throws {
        for mode: mode_t in [0o600, 0o400, 0o640, 0o440] {
            let name = try keyCopy("closed-\(String(mode, radix: 8)).key", mode: mode)
            let loaded = try load(yaml(certificates: certificates(key: name)))
            XCTAssertEqual(loaded.warnings.filter { $0.contains(name) }, [], "mode \(String(mode, radix: 8))")
        }
    }

    func testWarnUsesTheKeyAndSaysSo() throws {
        let name = try keyCopy("warned.key", mode: 0o644)
        let loaded = try load(yaml(certificates: certificates(key: name), tls: "open_key_files: warn"))
        XCTAssertEqual(loaded.configuration.tls.openKeyFiles, .warn)
        XCTAssertEqual(loaded.tlsMaterial.identities.count, 1, "the key was loaded")
        let warning = try XCTUnwrap(loaded.warnings.first { $0.contains(pki.path(name)) }, "\(loaded.warnings)")
        XCTAssertTrue(warning.hasPrefix("tls.certificates[0].key: "), warning)
        XCTAssertTrue(warning.contains("mode 644"), warning)
        assertError(yaml(tls: "open_key_files: sometimes"), key: "tls.open_key_files", lineContaining: "open_key_files",
                    reasonContains: ["must be refuse or warn, not \"sometimes\""])
    }

    func testTheSecondCertificatesKeyIsCheckedToo() throws {
        let name = try keyCopy("rsa-open.key", of: "rsa.key", mode: 0o644)
        assertError(yaml(certificates: "- certificate: server.pem\n  key: server.key\n- certificate: rsa.pem\n  key: \(name)"),
                    key: "tls.certificates[1].key", lineContaining: "key: \(name)", reasonContains: ["mode 644"])
    }
}
