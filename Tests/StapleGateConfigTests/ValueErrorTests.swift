import Foundation
import XCTest
@testable import StapleGateConfig

/// Well-formed keys with values outside what the gateway accepts.
final class ValueErrorTests: ConfigTestCase {
    // MARK: - listen

    func testListenPortOutOfRange() {
        assertError(yaml(listen: "port: 70000"), key: "listen.port", lineContaining: "port: 70000",
                    reasonContains: ["must be between 0 and 65535, not 70000"])
        assertError(yaml(listen: "port: -1"), key: "listen.port", lineContaining: "port: -1",
                    reasonContains: ["must be between 0 and 65535, not -1"])
    }

    func testListenPortThatIsNotAWholeNumber() {
        assertError(yaml(listen: "port: 88.5"), key: "listen.port", lineContaining: "port:",
                    reasonContains: ["expected a whole number, got 88.5"])
    }

    func testBacklogOutOfRange() {
        assertError(yaml(listen: "backlog: 0"), key: "listen.backlog", lineContaining: "backlog:",
                    reasonContains: ["must be between 1 and 65535, not 0"])
    }

    func testListenAddressThatIsAHostName() {
        assertError(yaml(listen: "address: localhost"), key: "listen.address", lineContaining: "address: localhost",
                    reasonContains: [#""localhost" is not an IPv4 or IPv6 address"#])
    }

    func testListenAddressThatIsNotAnAddress() {
        assertError(yaml(listen: "address: 999.1.1.1"), key: "listen.address", lineContaining: "999.1.1.1",
                    reasonContains: ["is not an IPv4 or IPv6 address"])
    }

    func testListenAddressInBrackets() {
        assertError(yaml(listen: "address: \"[::]\""), key: "listen.address", lineContaining: "[::]",
                    reasonContains: ["without brackets"])
    }

    // MARK: - tls

    func testMinVersionTooOld() {
        assertError(yaml(tls: "min_version: \"1.1\""), key: "tls.min_version", lineContaining: "min_version",
                    reasonContains: [#"must be "1.2" or "1.3", not "1.1""#])
    }

    func testMinVersionAsAnOtherNumber() {
        assertError(yaml(tls: "min_version: 1.0"), key: "tls.min_version", lineContaining: "min_version",
                    reasonContains: [#"must be "1.2" or "1.3", not "1.0""#])
    }

    func testMinVersionSpelledLikeOpenSSL() {
        assertError(yaml(tls: "min_version: TLSv1.3"), key: "tls.min_version", lineContaining: "min_version",
                    reasonContains: [#"not "TLSv1.3""#])
    }

    func testVerifyDepthOutOfRange() {
        assertError(yaml(tls: "verify_depth: 101"), key: "tls.verify_depth", lineContaining: "verify_depth",
                    reasonContains: ["must be between 0 and 100, not 101"])
        assertError(yaml(tls: "verify_depth: -1"), key: "tls.verify_depth", lineContaining: "verify_depth",
                    reasonContains: ["not -1"])
    }

    func testSessionCacheSizeOutOfRange() {
        assertError(yaml(tls: "session_cache_size: 0"), key: "tls.session_cache_size", lineContaining: "session_cache_size",
                    reasonContains: ["must be between 1 and 10000000, not 0"])
        assertError(yaml(tls: "session_cache_size: lots"), key: "tls.session_cache_size", lineContaining: "session_cache_size",
                    reasonContains: ["lots"])
    }

    func testHandshakeTimeoutInWords() {
        assertError(yaml(tls: "handshake_timeout: 10 seconds"), key: "tls.handshake_timeout", lineContaining: "handshake_timeout",
                    reasonContains: [#""10 seconds" is not a duration"#, #""500ms", "10s", "5m", "1h", "1d""#])
    }

    func testHandshakeTimeoutWithFraction() {
        assertError(yaml(tls: "handshake_timeout: 1.5"), key: "tls.handshake_timeout", lineContaining: "handshake_timeout",
                    reasonContains: ["expected a duration, got a number (1.5)", "bare number of seconds"])
    }

    func testHandshakeTimeoutOfZero() {
        assertError(yaml(tls: "handshake_timeout: 0s"), key: "tls.handshake_timeout", lineContaining: "handshake_timeout",
                    reasonContains: ["must be longer than 0"])
    }

    func testNegativeDuration() {
        assertError(yaml(tls: "handshake_timeout: -5s"), key: "tls.handshake_timeout", lineContaining: "handshake_timeout",
                    reasonContains: [#""-5s" is not a duration"#])
    }

    func testEmptyCipherListIsRefusedRatherThanDisablingEverySuite() {
        assertError(yaml(tls: "tls12_ciphers: \"\""), key: "tls.tls12_ciphers", lineContaining: "tls12_ciphers",
                    reasonContains: ["must not be empty"])
    }

    func testEmptyFilePath() {
        assertError(yaml(certificates: "- certificate: \"\"\n  key: server.key"), key: "tls.certificates[0].certificate",
                    lineContaining: "- certificate", reasonContains: ["must name a file"])
    }

    // MARK: - upstream

    func testUpstreamWithBothAddressAndUnixSocket() {
        let text = yaml(upstream: "address: 127.0.0.1\nunix_socket: /tmp/mosquitto.sock")
        assertError(text, key: "upstream.unix_socket", lineContaining: "unix_socket",
                    reasonContains: ["either address (with port) or unix_socket, not both"])
    }

    func testUpstreamWithNeitherAddressNorUnixSocket() {
        let text = yaml(upstream: "connect_timeout: 5s")
        assertError(text, key: "upstream", lineContaining: "upstream:", reasonContains: ["needs either address", "unix_socket"])
    }

    func testUpstreamPortWithUnixSocket() {
        let text = yaml(upstream: "unix_socket: /tmp/mosquitto.sock\nport: 1883")
        assertError(text, key: "upstream.port", lineContaining: "port: 1883", reasonContains: ["only applies together with address"])
    }

    func testUpstreamPortOutOfRange() {
        let text = yaml(upstream: "address: 127.0.0.1\nport: 0")
        assertError(text, key: "upstream.port", lineContaining: "port: 0", reasonContains: ["must be between 1 and 65535, not 0"])
    }

    func testUpstreamAddressThatIsNotAHost() {
        let text = yaml(upstream: "address: my broker")
        assertError(text, key: "upstream.address", lineContaining: "my broker", reasonContains: ["is neither an IP address nor a host name"])
    }

    func testUpstreamAddressWithPort() {
        let text = yaml(upstream: "address: \"127.0.0.1:1883\"")
        assertError(text, key: "upstream.address", lineContaining: "address:", reasonContains: ["upstream.port"])
    }

    func testUnixSocketInAFolderThatDoesNotExist() {
        let text = yaml(upstream: "unix_socket: no-such-folder/mosquitto.sock")
        assertError(text, key: "upstream.unix_socket", lineContaining: "unix_socket",
                    reasonContains: ["the folder \(pki.path("no-such-folder")) does not exist"])
    }

    func testUnixSocketPathTooLong() {
        let text = yaml(upstream: "unix_socket: /tmp/\(String(repeating: "s", count: 120)).sock")
        assertError(text, key: "upstream.unix_socket", lineContaining: "unix_socket", reasonContains: ["bytes long"])
    }

    func testConnectTimeoutOfZero() {
        let text = yaml(upstream: "address: 127.0.0.1\nconnect_timeout: 0")
        assertError(text, key: "upstream.connect_timeout", lineContaining: "connect_timeout", reasonContains: ["must be longer than 0"])
    }

    func testIdleTimeoutInWords() {
        let text = yaml(upstream: "address: 127.0.0.1\nidle_timeout: forever")
        assertError(text, key: "upstream.idle_timeout", lineContaining: "idle_timeout", reasonContains: [#""forever" is not a duration"#])
    }

    // MARK: - logging

    func testUnknownLogLevel() {
        assertError(yaml(logging: "level: verbose"), key: "logging.level", lineContaining: "level:",
                    reasonContains: [#"must be one of trace, debug, info, notice, warning, error, critical, not "verbose""#])
    }
}
