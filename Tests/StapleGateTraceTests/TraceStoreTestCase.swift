import Foundation
import Logging
import MetricsTestKit
@testable import StapleGateTrace
import TestSupport
import XCTest

/// A fresh state folder, metrics and log per test, and helpers to build events and stores.
class TraceStoreTestCase: XCTestCase {
    var state: TemporaryDirectory!
    var metrics: TestMetrics!
    var log: LogRecorder!
    var storePath: String { state.file("trace.sqlite") }

    /// Whole seconds, so times survive the store's millisecond precision exactly. Set per test
    /// in setUp: XCTest makes every test case instance when the run starts, minutes before the
    /// later ones run, and the writer's own retention pass measures age from the real clock.
    private(set) var now = Date()

    override func setUpWithError() throws {
        now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        state = try TemporaryDirectory(prefix: "trace")
        metrics = TestMetrics()
        log = LogRecorder()
    }

    override func tearDown() {
        state.remove()
    }

    func makeStore(retention: Duration = .seconds(3 * 24 * 3600), maximumBytes: Int64 = 256 * 1024 * 1024,
                   queueCapacity: Int = 10_000, tuning: SQLiteTraceStore.Tuning = .init()) throws -> SQLiteTraceStore {
        try SQLiteTraceStore(path: storePath, retention: retention, maximumBytes: maximumBytes, queueCapacity: queueCapacity,
                       logger: .recording(into: log), metricsFactory: metrics, tuning: tuning)
    }

    func reader() throws -> SQLiteTraceReader {
        try SQLiteTraceStore.openForReading(path: storePath)
    }

    func event(_ kind: TraceEvent.Kind = .connect, device: String? = "device-1", at seconds: Double = 0,
               connection: UInt64 = 1, failure: Bool = false, summary: String? = nil,
               details: [String: String] = [:]) -> TraceEvent {
        TraceEvent(time: now.addingTimeInterval(seconds), kind: kind, device: device, serial: device.map { _ in "0A1B" },
                   connectionID: connection, remoteAddress: "10.0.0.7:51234", isFailure: failure,
                   summary: summary ?? "\(kind.rawValue) at \(seconds)", details: details)
    }

    func droppedMetric() -> Int64 { metrics.counterTotal(label: "staplegate_trace_events_dropped_total") }
    func writtenMetric() -> Int64 { metrics.counterTotal(label: "staplegate_trace_events_written_total") }

    /// Stored events equal `expected`, ids aside (the store assigns them) and times to the
    /// millisecond (what the store keeps).
    func assertSame(_ stored: [TraceEvent], _ expected: [TraceEvent], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(stored.count, expected.count, "event count", file: file, line: line)
        for (got, want) in zip(stored, expected) {
            XCTAssertNotNil(got.id, file: file, line: line)
            XCTAssertEqual(got.time.timeIntervalSince1970, want.time.timeIntervalSince1970, accuracy: 0.001,
                           file: file, line: line)
            var normalized = got
            normalized.id = want.id
            normalized.time = want.time
            XCTAssertEqual(normalized, want, file: file, line: line)
        }
    }
}
