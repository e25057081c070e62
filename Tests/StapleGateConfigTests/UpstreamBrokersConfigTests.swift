import Foundation
import StapleGateProxy
import XCTest
@testable import StapleGateConfig

/// `upstream.brokers`, `upstream.balance` and `upstream.down_time`: the forms accepted, the
/// single-broker form as a list of one, and every refusal naming the file, line and key.
final class UpstreamBrokersConfigTests: ConfigTestCase {
    // MARK: - Valid forms

    func testTheSingleFormIsAListOfOneWithTheDefaults() throws {
        let upstream = try load(yaml()).configuration.upstream
        XCTAssertEqual(upstream.brokers, [.tcp(host: "127.0.0.1", port: 1883)])
        XCTAssertEqual(upstream.balance, .failover)
        XCTAssertEqual(upstream.downTime, .seconds(10))
        XCTAssertEqual(upstream, UpstreamConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 1883)))
    }

    func testBrokersInEveryFormInListOrder() throws {
        try FileManager.default.createDirectory(atPath: pki.path("run"), withIntermediateDirectories: true)
        let upstream = try load(yaml(upstream: """
            brokers:
              - 10.0.0.5:1883
              - "[::1]:1884"
              - broker-2.example:18830
              - "unix:/tmp/mosquitto.sock"
              - unix:run/mosquitto.sock
            balance: round_robin
            down_time: 30s
            connect_timeout: 2s
            """)).configuration.upstream
        XCTAssertEqual(upstream.brokers, [
            .tcp(host: "10.0.0.5", port: 1883), .tcp(host: "::1", port: 1884), .tcp(host: "broker-2.example", port: 18830),
            .unixSocket(path: "/tmp/mosquitto.sock"),
            .unixSocket(path: pki.path("run/mosquitto.sock")),  // relative to the config file's folder
        ])
        XCTAssertEqual(upstream.balance, .roundRobin)
        XCTAssertEqual(upstream.downTime, .seconds(30))
        XCTAssertEqual(upstream.connectTimeout, .seconds(2))
        XCTAssertEqual(upstream.brokers.map(\.description),
                       ["10.0.0.5:1883", "[::1]:1884", "broker-2.example:18830", "unix:/tmp/mosquitto.sock",
                        "unix:\(pki.path("run/mosquitto.sock"))"])
    }

    func testEveryBalanceAndAFlowList() throws {
        for balance in UpstreamConfiguration.Balance.allCases {
            let upstream = try load(yaml(upstream: "brokers: [\"127.0.0.1:1883\", \"127.0.0.1:1884\"]\nbalance: \(balance.rawValue)"))
                .configuration.upstream
            XCTAssertEqual(upstream.balance, balance)
            XCTAssertEqual(upstream.brokers, [.tcp(host: "127.0.0.1", port: 1883), .tcp(host: "127.0.0.1", port: 1884)])
        }
        let one = try load(yaml(upstream: "brokers: [\"127.0.0.1:1883\"]")).configuration.upstream
        XCTAssertEqual(one, UpstreamConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 1883)), "a list of one is the single form")
    }

    /// config/staplegate.yaml documents every upstream key; as shipped, it means the defaults.
    func testExampleConfigShowsTheDefaults() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../config/staplegate.yaml").standardizedFileURL.path
        let text = try String(contentsOfFile: example, encoding: .utf8)
        let start = try XCTUnwrap(text.range(of: "\nupstream:\n"), "config/staplegate.yaml documents upstream")
        let rest = text[start.upperBound...]
        let end = rest.range(of: "\n[a-z]", options: .regularExpression)?.lowerBound ?? rest.endIndex
        let section = String(rest[..<end])
        for key in ["brokers:", "balance: failover", "down_time: 10s", "failover", "round_robin", "client_id_hash"] {
            XCTAssertTrue(section.contains(key), "the upstream section mentions \(key)")
        }
        let upstream = try load(yaml().components(separatedBy: "upstream:")[0] + "upstream:\n" + section + "\n").configuration.upstream
        XCTAssertEqual(upstream, UpstreamConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 1883)))
    }

    // MARK: - Both forms, or neither

    func testBrokersBesideTheSingleFormNamesTheSingleFormsKey() {
        assertError(yaml(upstream: "address: 127.0.0.1\nbrokers: [\"127.0.0.1:1884\"]"), key: "upstream.address",
                    lineContaining: "address:", reasonContains: ["give either brokers or address (with port), not both"])
        assertError(yaml(upstream: "brokers: [\"127.0.0.1:1884\"]\nport: 1883"), key: "upstream.port",
                    lineContaining: "port: 1883", reasonContains: ["not both"])
        assertError(yaml(upstream: "brokers: [\"127.0.0.1:1884\"]\nunix_socket: /tmp/mosquitto.sock"), key: "upstream.unix_socket",
                    lineContaining: "unix_socket:", reasonContains: ["give either brokers or unix_socket, not both"])
    }

    func testNoBrokerAtAllNamesEveryForm() {
        assertError(yaml(upstream: "balance: failover"), key: "upstream", lineContaining: "upstream:",
                    reasonContains: ["needs either address", "unix_socket", "brokers"])
    }

    // MARK: - The list

    func testBrokersThatIsNotAListOrIsEmpty() {
        assertError(yaml(upstream: "brokers: 127.0.0.1:1883"), key: "upstream.brokers", lineContaining: "brokers:",
                    reasonContains: ["expected a list, got a string"])
        assertError(yaml(upstream: "brokers: []"), key: "upstream.brokers", lineContaining: "brokers:",
                    reasonContains: ["must list at least one broker"])
    }

    func testEachBadEntryIsNamedByItsIndexAndLine() {
        let cases: [(entry: String, reason: String)] = [
            ("10.0.0.5", "has no port; write host:port, e.g. \"10.0.0.5:1883\""),
            ("\"10.0.0.5:\"", "must be a number from 1 to 65535, not \"\""),
            ("10.0.0.5:0", "must be a number from 1 to 65535, not \"0\""),
            ("10.0.0.5:65536", "not \"65536\""),
            ("10.0.0.5:+80", "not \"+80\""),
            ("10.0.0.5:mqtt", "not \"mqtt\""),
            ("my broker:1883", "\"my broker\" is neither an IP address nor a host name"),
            ("\"::1:1883\"", "write IPv6 addresses in brackets, e.g. \"[::1]:1883\""),
            ("\"[::1]\"", "has no port; write [address]:port, e.g. \"[::1]:1883\""),
            ("\"[::1:1883\"", "opens a bracket it does not close"),
            ("\"[10.0.0.5]:1883\"", "\"10.0.0.5\" in brackets is not an IPv6 address"),
            ("1883", "expected a string, got a number (1883)"),
            ("\"unix:\"", "needs the socket's path"),
            ("unix:/no/such/folder/mosquitto.sock", "the folder /no/such/folder does not exist"),
            ("unix:/tmp/\(String(repeating: "s", count: 120)).sock", "bytes long"),
        ]
        for (entry, reason) in cases {
            let text = yaml(upstream: "brokers:\n  - 127.0.0.1:1883\n  - \(entry)")
            assertError(text, key: "upstream.brokers[1]", lineContaining: "- \(entry)", reasonContains: [reason])
        }
    }

    /// Unquoted, `[::1]:1883` starts a YAML flow list: the YAML itself is refused, at its line.
    func testAnUnquotedIPv6BrokerIsAYAMLErrorAtItsLine() {
        let text = yaml(upstream: "brokers:\n  - 127.0.0.1:1883\n  - [::1]:1883")
        guard let error = loadError(text) else { return }
        assertError(error, key: nil, line: line(of: "[::1]:1883", in: text), reasonContains: ["invalid YAML"])
    }

    func testABrokerListedTwiceIsRefusedAtItsSecondEntry() {
        let text = yaml(upstream: "brokers:\n  - 127.0.0.1:1883\n  - 127.0.0.1:1884\n  - \"127.0.0.1:1883\"")
        assertError(text, key: "upstream.brokers[2]", lineContaining: "- \"127.0.0.1:1883\"",
                    reasonContains: ["lists 127.0.0.1:1883 a second time (also upstream.brokers[0])"])
    }

    // MARK: - balance, down_time

    func testUnknownBalanceNamesTheChoices() {
        assertError(yaml(upstream: "brokers: [\"127.0.0.1:1883\"]\nbalance: roundrobin"), key: "upstream.balance",
                    lineContaining: "balance:", reasonContains: [#"must be failover, round_robin or client_id_hash, not "roundrobin""#])
        assertError(yaml(upstream: "brokers: [\"127.0.0.1:1883\"]\nbalance: 2"), key: "upstream.balance",
                    lineContaining: "balance:", reasonContains: ["expected a string, got a number (2)"])
    }

    func testDownTimeMustBeAPositiveDuration() {
        assertError(yaml(upstream: "address: 127.0.0.1\ndown_time: 0"), key: "upstream.down_time",
                    lineContaining: "down_time", reasonContains: ["must be longer than 0"])
        assertError(yaml(upstream: "address: 127.0.0.1\ndown_time: a while"), key: "upstream.down_time",
                    lineContaining: "down_time", reasonContains: [#""a while" is not a duration"#])
    }

    func testMisspeltUpstreamKeyIsRefusedWithASuggestion() {
        assertError(yaml(upstream: "broker: [\"127.0.0.1:1883\"]"), key: "upstream.broker", lineContaining: "broker:",
                    reasonContains: [#"did you mean "brokers"?"#])
        assertError(yaml(upstream: "address: 127.0.0.1\ndowntime: 5s"), key: "upstream.downtime", lineContaining: "downtime",
                    reasonContains: [#"did you mean "down_time"?"#])
    }
}
