import Foundation
import XCTest
@testable import StapleGateConfig

/// The pure pieces: duration syntax, key suggestions, address syntax, message format.
final class HelperTests: XCTestCase {
    func testDurationForms() {
        XCTAssertEqual(ConfigDuration.parse("500ms"), .milliseconds(500))
        XCTAssertEqual(ConfigDuration.parse("10s"), .seconds(10))
        XCTAssertEqual(ConfigDuration.parse("5m"), .seconds(300))
        XCTAssertEqual(ConfigDuration.parse("1h"), .seconds(3600))
        XCTAssertEqual(ConfigDuration.parse("1d"), .seconds(86_400))
        XCTAssertEqual(ConfigDuration.parse("42"), .seconds(42))
        XCTAssertEqual(ConfigDuration.parse("0"), .zero)
        XCTAssertEqual(ConfigDuration.parse("0ms"), .zero)
    }

    func testDurationsThatAreRefused() {
        for text in ["", "s", "ms", "1.5s", "-5s", "+5s", "10 s", " 10s", "5x", "5sec", "1h30m", "0x10", "１s",
                     "99999999999999999999", "999999999999999999d"] {
            XCTAssertNil(ConfigDuration.parse(text), "\"\(text)\" should not parse")
        }
    }

    func testEditDistance() {
        XCTAssertEqual(KeySuggestion.distance("", ""), 0)
        XCTAssertEqual(KeySuggestion.distance("", "abc"), 3)
        XCTAssertEqual(KeySuggestion.distance("abc", ""), 3)
        XCTAssertEqual(KeySuggestion.distance("port", "port"), 0)
        XCTAssertEqual(KeySuggestion.distance("kitten", "sitting"), 3)
        XCTAssertEqual(KeySuggestion.distance("verison", "version"), 1, "a swap of neighbours is one typo")
        XCTAssertEqual(KeySuggestion.distance("lisen", "listen"), 1)
        XCTAssertEqual(KeySuggestion.distance("adress", "address"), 1)
    }

    func testClosestKey() {
        let tlsKeys = ["certificates", "device_ca", "verify_depth", "min_version", "tls13_ciphersuites", "tls12_ciphers", "groups", "handshake_timeout"]
        XCTAssertEqual(KeySuggestion.closest(to: "min_verison", among: tlsKeys), "min_version")
        XCTAssertEqual(KeySuggestion.closest(to: "device-ca", among: tlsKeys), "device_ca")
        XCTAssertEqual(KeySuggestion.closest(to: "group", among: tlsKeys), "groups")
        XCTAssertNil(KeySuggestion.closest(to: "colour", among: tlsKeys))
        XCTAssertNil(KeySuggestion.closest(to: "ciphers", among: tlsKeys), "three edits away is a different word")
    }

    func testAddressSyntax() {
        for address in ["0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1", "2001:db8::8883"] {
            XCTAssertTrue(ConfigSchema.isIPLiteral(address), address)
        }
        for address in ["localhost", "999.0.0.1", "1.2.3", "[::1]", "::g", "", " 127.0.0.1"] {
            XCTAssertFalse(ConfigSchema.isIPLiteral(address), address)
        }
        for host in ["localhost", "broker.example.com", "mosquitto", "a-b.c1", "broker.example."] {
            XCTAssertTrue(ConfigSchema.isHostName(host), host)
        }
        for host in ["", "-broker", "broker-", "my broker", "a..b", "bröker", "broker:1883", String(repeating: "a", count: 64)] {
            XCTAssertFalse(ConfigSchema.isHostName(host), host)
        }
    }

    func testErrorDescriptionLeavesOutWhatIsUnknown() {
        XCTAssertEqual(ConfigError(file: "/etc/staplegate/staplegate.yaml", key: "tls.min_version", line: 14,
                                   reason: #"must be "1.2" or "1.3", not "1.1""#).description,
                       #"/etc/staplegate/staplegate.yaml:14: tls.min_version: must be "1.2" or "1.3", not "1.1""#)
        XCTAssertEqual(ConfigError(file: "a.yaml", key: "tls", line: nil, reason: "r").description, "a.yaml: tls: r")
        XCTAssertEqual(ConfigError(file: "a.yaml", key: nil, line: 3, reason: "r").description, "a.yaml:3: r")
        XCTAssertEqual(ConfigError(file: "a.yaml", key: nil, line: nil, reason: "r").description, "a.yaml: r")
    }

    func testKeyLinesIndexEveryKeyPath() throws {
        let text = "tls:\n  certificates:\n    - certificate: a.pem\n      key: a.key\n  device_ca: ca.pem\n"
        let root = try XCTUnwrap(YAMLDocument.compose(text, file: "x.yaml"))
        let lines = YAMLValue(node: root, path: "", line: nil, file: "x.yaml").keyLines()
        XCTAssertEqual(lines, ["tls": 1, "tls.certificates": 2, "tls.certificates[0]": 3,
                               "tls.certificates[0].certificate": 3, "tls.certificates[0].key": 4, "tls.device_ca": 5])
    }
}
