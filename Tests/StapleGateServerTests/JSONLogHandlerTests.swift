import Foundation
import Logging
import NIOConcurrencyHelpers
@testable import StapleGateServer
import XCTest

/// `logging.format: json`: one JSON object per record and per line, whatever the message holds,
/// with the logger's metadata merged into the call's.
final class JSONLogHandlerTests: XCTestCase {
    private let written = NIOLockedValueBox<[Data]>([])

    private func logger(label: String = "staplegate", level: Logger.Level = .info,
                        provider: Logger.MetadataProvider? = nil) -> Logger {
        let sink = written
        return Logger(label: label) { label in
            var handler = JSONLogHandler(label: label, metadataProvider: provider) { line in
                sink.withLockedValue { $0.append(line) }
            }
            handler.logLevel = level
            return handler
        }
    }

    /// Each write, checked to be one line, decoded.
    private func records(file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Any]] {
        try written.withLockedValue { $0 }.map { data in
            let text = String(decoding: data, as: UTF8.self)
            XCTAssertTrue(text.hasSuffix("\n"), "no newline: \(text)", file: file, line: line)
            XCTAssertEqual(text.filter { $0 == "\n" }.count, 1, "not one line: \(text)", file: file, line: line)
            return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any], file: file, line: line)
        }
    }

    func testARecordHasTimestampLevelLabelAndMessage() throws {
        let before = Date()
        logger(label: "staplegate.test").notice("listening for devices")
        let record = try XCTUnwrap(try records().first)
        XCTAssertEqual(record["level"] as? String, "notice")
        XCTAssertEqual(record["label"] as? String, "staplegate.test")
        XCTAssertEqual(record["message"] as? String, "listening for devices")
        XCTAssertNil(record["metadata"], "no metadata, no empty object")
        let stamp = try XCTUnwrap(record["timestamp"] as? String)
        // ISO 8601, UTC, with fractional seconds: 2026-05-01T12:00:00.123Z
        XCTAssertNotNil(stamp.range(of: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#, options: .regularExpression), stamp)
        let parsed = try XCTUnwrap(try? Date(stamp, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        XCTAssertEqual(parsed.timeIntervalSince1970, before.timeIntervalSince1970, accuracy: 5)
    }

    func testQuotesBackslashesNewlinesControlsAndUnicodeSurviveTheRoundTrip() throws {
        let nasty = "client id \"x\\y\"\nsecond line\tand a tab, \u{1} a control, ünïcødé, 🚀 and </script>"
        logger().warning("\(nasty)", metadata: ["client_id": "\(nasty)"])
        let raw = String(decoding: written.withLockedValue { $0[0] }, as: UTF8.self)
        XCTAssertFalse(raw.dropLast().contains("\n"), "a raw newline split the record: \(raw)")
        let record = try XCTUnwrap(try records().first)
        XCTAssertEqual(record["message"] as? String, nasty)
        XCTAssertEqual((record["metadata"] as? [String: String])?["client_id"], nasty)
    }

    func testMetadataOfTheLoggerTheProviderAndTheCallAreMergedTheCallWinning() throws {
        let provider = Logger.MetadataProvider { ["trace_id": "abc", "conn": "from-provider"] }
        var logger = logger(provider: provider)
        logger[metadataKey: "conn"] = "7"
        logger[metadataKey: "remote"] = "127.0.0.1:5555"
        logger.info("admitted as device-1", metadata: ["remote": "overridden", "mqtt.protocol": "5.0"])
        let metadata = try XCTUnwrap(try records().first?["metadata"] as? [String: String])
        XCTAssertEqual(metadata, ["conn": "from-provider", "remote": "overridden", "mqtt.protocol": "5.0", "trace_id": "abc"])
    }

    /// Lists and dictionaries are written as their text, as the text format shows them: every
    /// metadata field is a string.
    func testNestedMetadataIsWrittenAsText() throws {
        logger().info("statuses", metadata: ["serials": ["01", "02"], "counts": ["good": "3"], "n": .stringConvertible(42)])
        let metadata = try XCTUnwrap(try records().first?["metadata"] as? [String: String])
        XCTAssertEqual(metadata["serials"], #"["01", "02"]"#)
        XCTAssertEqual(metadata["counts"], #"["good": "3"]"#)
        XCTAssertEqual(metadata["n"], "42")
    }

    func testOneLinePerRecordAndNothingBelowTheLevel() throws {
        let logger = logger(level: .notice)
        logger.info("dropped")
        for index in 0..<3 { logger.error("record \(index)") }
        XCTAssertEqual(try records().map { $0["message"] as? String }, ["record 0", "record 1", "record 2"])
    }

    /// Records logged at once on many threads arrive whole, one per write.
    func testConcurrentRecordsStayWhole() throws {
        let logger = logger()
        let long = String(repeating: "x", count: 10_000)
        DispatchQueue.concurrentPerform(iterations: 200) { index in logger.info("\(index) \(long)") }
        let messages = try records().compactMap { $0["message"] as? String }
        XCTAssertEqual(Set(messages), Set((0..<200).map { "\($0) \(long)" }))
    }
}
