import Foundation
import XCTest
@testable import StapleGateConfig

/// Problems with the shape of the document: keys, types, YAML syntax, missing sections.
final class StructureErrorTests: ConfigTestCase {
    // MARK: - Unknown and duplicate keys

    func testUnknownTopLevelKeySuggestsTheClosestKnownOne() {
        let text = "lisen:\n  port: 8883\n" + yaml()
        assertError(text, key: "lisen", lineContaining: "lisen:",
                    reasonContains: [#"unknown key "lisen" (did you mean "listen"?)"#])
    }

    func testUnknownNestedKeySuggestsTheClosestKnownOne() {
        let text = yaml(tls: "min_verison: \"1.3\"")
        assertError(text, key: "tls.min_verison", lineContaining: "min_verison",
                    reasonContains: [#"unknown key "tls.min_verison" (did you mean "min_version"?)"#])
    }

    func testUnknownKeyWithoutCloseMatchListsTheKnownKeys() {
        let text = yaml(upstream: "address: 127.0.0.1\nretries: 3")
        assertError(text, key: "upstream.retries", lineContaining: "retries",
                    reasonContains: [#"unknown key "upstream.retries""#, "address, port, unix_socket, connect_timeout, idle_timeout"])
    }

    func testUnknownKeyInACertificateEntryNamesTheEntry() {
        let text = yaml(certificates: "- certificate: server.pem\n  key: server.key\n  chain: ca.pem")
        assertError(text, key: "tls.certificates[0].chain", lineContaining: "chain:",
                    reasonContains: ["unknown key"])
    }

    func testDuplicateKeyNamesTheFullPathAndBothLines() {
        let text = yaml(listen: "port: 8883\nbacklog: 10\nport: 8884")
        let first = line(of: "port: 8883", in: text)!
        assertError(text, key: "listen.port", lineContaining: "port: 8884",
                    reasonContains: ["duplicate key", "first given on line \(first)"])
    }

    func testDuplicateSectionIsRefused() {
        let text = yaml() + "upstream:\n  address: 10.0.0.1\n"
        guard let error = loadError(text), let first = line(of: "upstream:", in: text),
              let second = line(of: "10.0.0.1", in: text).map({ $0 - 1 }) else { return }
        assertError(error, key: "upstream", line: second, reasonContains: ["duplicate key", "first given on line \(first)"])
    }

    func testDuplicateKeyWrittenOnceQuotedAndOncePlainIsRefused() {
        let text = yaml(listen: "\"port\": 8883\nport: 8884")
        assertError(text, key: "listen.port", lineContaining: "port: 8884", reasonContains: ["duplicate key"])
    }

    func testDuplicateKeyInsideAListEntry() {
        let text = yaml(certificates: "- certificate: server.pem\n  key: server.key\n  key: other.key")
        assertError(text, key: "tls.certificates[0].key", lineContaining: "other.key", reasonContains: ["duplicate key"])
    }

    // MARK: - Types

    func testSectionThatIsNotAMapping() {
        let text = "listen: 8883\n" + yaml()
        assertError(text, key: "listen", lineContaining: "listen:", reasonContains: ["expected a mapping, got a number (8883)"])
    }

    func testCertificatesThatAreNotAList() {
        let text = "tls:\n  certificates: server.pem\n  device_ca: ca.pem\nupstream:\n  address: 127.0.0.1\n"
        assertError(text, key: "tls.certificates", lineContaining: "certificates:",
                    reasonContains: [#"expected a list, got a string ("server.pem")"#])
    }

    func testListEntryThatIsNotAMapping() {
        let text = yaml(certificates: "- server.pem")
        assertError(text, key: "tls.certificates[0]", lineContaining: "- server.pem", reasonContains: ["expected a mapping, got a string"])
    }

    func testNumberGivenAsString() {
        let text = yaml(listen: "port: \"8883\"")
        assertError(text, key: "listen.port", lineContaining: "port:", reasonContains: ["expected a number, got a string (\"8883\")"])
    }

    func testStringGivenAsList() {
        let text = yaml(deviceCA: "[ca.pem, other.pem]")
        assertError(text, key: "tls.device_ca", lineContaining: "device_ca:", reasonContains: ["expected a string, got a list"])
    }

    func testStringGivenAsBooleanSuggestsQuoting() {
        let text = yaml(tls: "groups: yes")
        assertError(text, key: "tls.groups", lineContaining: "groups:",
                    reasonContains: ["expected a string, got a boolean (yes)", "quotes"])
    }

    func testEmptyValue() {
        let text = yaml(deviceCA: "")
        assertError(text, key: "tls.device_ca", lineContaining: "device_ca:", reasonContains: ["expected a string, got an empty value"])
    }

    func testDocumentThatIsNotAMapping() {
        let text = "- tls\n- upstream\n"
        assertError(text, key: nil, lineContaining: "- tls", reasonContains: ["expected a mapping", "got a list"])
    }

    func testNonStringKey() {
        let text = yaml(listen: "8883: port")
        assertError(text, key: "listen", lineContaining: "8883: port", reasonContains: ["keys must be plain names, got a number (8883)"])
    }

    // MARK: - YAML syntax

    func testYAMLSyntaxErrorHasNoKeyButALine() {
        let text = "listen:\n  port: 8883\n  address: [0.0.0.0\ntls:\n"
        guard let error = loadError(text) else { return }
        assertError(error, key: nil, line: error.line, reasonContains: ["invalid YAML at column"])
        XCTAssertNotNil(error.line)
        XCTAssertTrue((3...5).contains(error.line ?? 0), "\(error)")
    }

    func testBadIndentationIsASyntaxError() {
        let text = "tls:\n  certificates:\n  - certificate: a\n   key: b\n"
        guard let error = loadError(text) else { return }
        assertError(error, key: nil, line: 4, reasonContains: ["invalid YAML"])
    }

    func testTabIndentationIsASyntaxError() {
        let text = "listen:\n\tport: 8883\n"
        guard let error = loadError(text) else { return }
        assertError(error, key: nil, line: 2, reasonContains: ["invalid YAML", "tab"])
    }

    // MARK: - Missing sections and keys

    func testMissingTLSSection() {
        let text = "upstream:\n  address: 127.0.0.1\n"
        assertError(text, key: "tls", lineContaining: nil, reasonContains: [#"missing required key "tls""#])
    }

    func testMissingUpstreamSection() {
        let text = yaml().components(separatedBy: "upstream:")[0]
        assertError(text, key: "upstream", lineContaining: nil, reasonContains: [#"missing required key "upstream""#])
    }

    func testMissingDeviceCA() {
        let text = "tls:\n  certificates:\n    - certificate: server.pem\n      key: server.key\nupstream:\n  address: 127.0.0.1\n"
        assertError(text, key: "tls.device_ca", lineContaining: "tls:", reasonContains: [#"missing required key "tls.device_ca""#])
    }

    func testMissingCertificates() {
        let text = "tls:\n  device_ca: ca.pem\nupstream:\n  address: 127.0.0.1\n"
        assertError(text, key: "tls.certificates", lineContaining: "tls:", reasonContains: ["missing required key"])
    }

    func testMissingKeyOfACertificateEntry() {
        let text = yaml(certificates: "- certificate: server.pem")
        assertError(text, key: "tls.certificates[0].key", lineContaining: "- certificate", reasonContains: ["missing required key"])
    }

    func testNoCertificates() {
        let text = yaml(certificates: "[]")
        assertError(text, key: "tls.certificates", lineContaining: "certificates:", reasonContains: ["must list 1 or 2 certificates", "not 0"])
    }

    func testThreeCertificates() {
        let entry = "- certificate: server.pem\n  key: server.key\n"
        let text = yaml(certificates: entry + entry + "- certificate: rsa.pem\n  key: rsa.key")
        assertError(text, key: "tls.certificates", lineContaining: "certificates:", reasonContains: ["not 3"])
    }

    // MARK: - The config file itself

    func testMissingConfigFile() {
        let path = pki.path("nowhere/staplegate.yaml")
        guard let error = configError(path: path) else { return }
        assertError(error, path: path, key: nil, line: nil, reasonContains: ["no such file"])
    }

    func testConfigPathIsADirectory() {
        let path = pki.path("a-directory")
        guard let error = configError(path: path) else { return }
        assertError(error, path: path, key: nil, line: nil, reasonContains: ["is a directory"])
    }

    func testUnreadableConfigFile() throws {
        try XCTSkipIf(getuid() == 0, "running as root: access() grants root every file, so an unreadable config cannot be made")
        try pki.write("locked.yaml", yaml())
        XCTAssertEqual(chmod(pki.path("locked.yaml"), 0), 0)
        defer { chmod(pki.path("locked.yaml"), 0o600) }
        guard let error = configError(path: pki.path("locked.yaml")) else { return }
        assertError(error, path: pki.path("locked.yaml"), key: nil, line: nil, reasonContains: ["not readable"])
    }

    func testEmptyConfigFile() {
        assertError("", key: nil, lineContaining: nil, reasonContains: ["is empty"])
        assertError("  \n\n", key: nil, lineContaining: nil, reasonContains: ["is empty"])
    }

    func testConfigFileWithOnlyComments() {
        assertError("# listen:\n#   port: 8883\n", key: nil, lineContaining: nil, reasonContains: ["only comments"])
    }

    func testConfigFileThatIsNotUTF8() throws {
        try Data([0x74, 0x6C, 0x73, 0x3A, 0xFF, 0xFE, 0x0A]).write(to: URL(fileURLWithPath: configPath))
        guard let error = configError(path: configPath) else { return }
        assertError(error, key: nil, line: nil, reasonContains: ["UTF-8"])
    }
}
