import Foundation
import XCTest
@testable import StapleGateConfig

/// `logging.format` and `listen.max_sessions`: defaults, accepted values, and refusals naming
/// the file, line and key with the values allowed.
final class ServiceConfigTests: ConfigTestCase {
    func testDefaultsAreTextLogsAndAnAutomaticSessionCap() throws {
        let configuration = try load(yaml()).configuration
        XCTAssertEqual(configuration.logFormat, .text)
        XCTAssertEqual(configuration.listen.maxSessions, .automatic)
    }

    func testJSONLogFormatNextToTheLevel() throws {
        let configuration = try load(yaml(logging: "level: debug\nformat: json")).configuration
        XCTAssertEqual(configuration.logFormat, .json)
        XCTAssertEqual(configuration.logLevel, .debug)
        XCTAssertEqual(try load(yaml(logging: "format: text")).configuration.logFormat, .text)
        XCTAssertEqual(try load(yaml(logging: "format: json")).configuration.logLevel, .info, "the level keeps its default")
    }

    func testUnknownLogFormatNamesTheAllowedOnes() {
        assertError(yaml(logging: "format: logfmt"), key: "logging.format", lineContaining: "format: logfmt",
                    reasonContains: [#"must be text or json, not "logfmt""#])
        assertError(yaml(logging: "format: JSON"), key: "logging.format", lineContaining: "format: JSON",
                    reasonContains: [#"must be text or json, not "JSON""#])
    }

    func testMisspeltLoggingKeyIsRefusedWithASuggestion() {
        assertError(yaml(logging: "fromat: json"), key: "logging.fromat", lineContaining: "fromat",
                    reasonContains: [#"did you mean "format"?"#])
    }

    func testMaxSessionsAutoOrAWholeNumber() throws {
        XCTAssertEqual(try load(yaml(listen: "max_sessions: auto")).configuration.listen.maxSessions, .automatic)
        XCTAssertEqual(try load(yaml(listen: "max_sessions: 3")).configuration.listen.maxSessions, .fixed(3))
        XCTAssertEqual(try load(yaml(listen: "max_sessions: 200000")).configuration.listen.maxSessions, .fixed(200_000))
    }

    func testMaxSessionsRefusesAnythingElse() {
        let expected = "must be auto or a whole number of sessions from 1 to 50000000, not "
        assertError(yaml(listen: "max_sessions: 0"), key: "listen.max_sessions", lineContaining: "max_sessions",
                    reasonContains: [expected + "0"])
        assertError(yaml(listen: "max_sessions: unlimited"), key: "listen.max_sessions", lineContaining: "max_sessions",
                    reasonContains: [expected + #""unlimited""#])
        assertError(yaml(listen: "max_sessions: 2.5"), key: "listen.max_sessions", lineContaining: "max_sessions",
                    reasonContains: [expected + #""2.5""#])
        assertError(yaml(listen: "max_sessions: \"3\""), key: "listen.max_sessions", lineContaining: "max_sessions",
                    reasonContains: [expected + #""3""#])
    }

    func testMaxHandshakesIsOffByDefaultAndTakesAWholeNumber() throws {
        XCTAssertEqual(try load(yaml()).configuration.listen.maxHandshakes, 0, "no limit unless asked")
        XCTAssertEqual(try load(yaml(listen: "max_handshakes: 256")).configuration.listen.maxHandshakes, 256)
        for bad in ["-1", "2000000"] {
            assertError(yaml(listen: "max_handshakes: \(bad)"), key: "listen.max_handshakes", lineContaining: "max_handshakes",
                        reasonContains: ["between 0 and 1000000"])
        }
        assertError(yaml(listen: "max_handshakes: many"), key: "listen.max_handshakes", lineContaining: "max_handshakes",
                    reasonContains: ["expected a number"])
        XCTAssertEqual(try load(yaml()).configuration.listen.perSourceConnectionRate, 0, "no limit unless asked")
        XCTAssertEqual(try load(yaml(listen: "per_source_connection_rate: 20")).configuration.listen.perSourceConnectionRate, 20)
        assertError(yaml(listen: "per_source_connection_rate: -5"), key: "listen.per_source_connection_rate",
                    lineContaining: "per_source_connection_rate", reasonContains: ["between 0 and 1000000"])
    }

    // MARK: Drain and reload

    func testDrainGracePeriodAndReloadStapleWaitHaveDefaultsAndTakeDurations() throws {
        let defaults = try load(yaml()).configuration
        XCTAssertEqual(defaults.listen.drainGracePeriod, .seconds(30))
        XCTAssertEqual(defaults.stapling.reloadStapleWait, .seconds(60))
        let set = try load(yaml(listen: "drain_grace_period: 2m") + "stapling:\n  reload_staple_wait: 10s\n").configuration
        XCTAssertEqual(set.listen.drainGracePeriod, .seconds(120))
        XCTAssertEqual(set.stapling.reloadStapleWait, .seconds(10))
        XCTAssertEqual(try load(yaml(listen: "drain_grace_period: 0")).configuration.listen.drainGracePeriod, .zero,
                       "0: close every session at once")
    }

    func testDrainGracePeriodAndReloadStapleWaitRefuseWhatIsNotADuration() {
        assertError(yaml(listen: "drain_grace_period: soon"), key: "listen.drain_grace_period",
                    lineContaining: "drain_grace_period", reasonContains: [#""soon" is not a duration"#])
        assertError(yaml() + "stapling:\n  reload_staple_wait: 1 minute\n", key: "stapling.reload_staple_wait",
                    lineContaining: "reload_staple_wait", reasonContains: [#""1 minute" is not a duration"#])
    }
}
