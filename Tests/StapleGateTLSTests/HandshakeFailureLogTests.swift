import Logging
import NIOCore
import NIOEmbedded
@testable import StapleGateTLS
import TestSupport
import XCTest

/// The failure lines of a connection flood: the first `burst` of an interval one by one, the
/// rest counted into one summary line when the interval ends; then a fresh burst.
final class HandshakeFailureLogTests: XCTestCase {
    private let loop = EmbeddedEventLoop()

    func testABurstIsLoggedThenTheRestIsSummarisedAtTheIntervalsEnd() throws {
        let recorder = LogRecorder()
        let logger = Logger.recording(into: recorder, level: .info)
        let log = HandshakeFailureLog(burst: 3, interval: .seconds(10), summaryLogger: logger)
        for index in 1...10 {
            log.log(logger, level: index == 7 ? .warning : .info, "failure \(index)", on: loop)
        }
        XCTAssertEqual(recorder.entries.map(\.message), ["failure 1", "failure 2", "failure 3"])

        // The summary task runs at the interval's end (the loop's clock, moved past it).
        loop.advanceTime(to: .now() + .seconds(11))
        let summary = try XCTUnwrap(recorder.entries.last)
        XCTAssertEqual(recorder.entries.count, 4)
        XCTAssertTrue(summary.message.hasPrefix("7 more TLS handshake failures in the last 10 s were not logged one by one (at most 3 are)"),
                      summary.message)
        XCTAssertEqual(summary.level, .warning, "as severe as the worst line it stands for")

        // A new interval, a new burst.
        log.log(logger, level: .info, "failure 11", on: loop)
        XCTAssertEqual(recorder.entries.last?.message, "failure 11")
    }

    func testLinesTheLevelDropsAreNeitherWrittenNorCounted() {
        let recorder = LogRecorder()
        let logger = Logger.recording(into: recorder, level: .info)
        let log = HandshakeFailureLog(burst: 1, interval: .seconds(10), summaryLogger: logger)
        for index in 1...5 { log.log(logger, level: .debug, "probe \(index)", on: loop) }
        log.log(logger, level: .warning, "real failure", on: loop)
        loop.advanceTime(to: .now() + .seconds(11))
        XCTAssertEqual(recorder.entries.map(\.message), ["real failure"], "no summary: nothing countable was dropped")
    }

    func testAQuietIntervalLeavesNoSummary() {
        let recorder = LogRecorder()
        let logger = Logger.recording(into: recorder, level: .info)
        let log = HandshakeFailureLog(burst: 2, interval: .seconds(10), summaryLogger: logger)
        log.log(logger, level: .warning, "one", on: loop)
        log.log(logger, level: .warning, "two", on: loop)
        loop.advanceTime(to: .now() + .seconds(30))
        XCTAssertEqual(recorder.entries.map(\.message), ["one", "two"])
    }
}
