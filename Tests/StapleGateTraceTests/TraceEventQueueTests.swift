import Foundation
import Logging
import MetricsTestKit
@testable import StapleGateTrace
import TestSupport
import XCTest

/// The queue's failure bookkeeping, driven by hand as a writer would: `take`, then `written`
/// or `failed`. A writer's write takes time, and events keep coming meanwhile.
final class TraceEventQueueTests: XCTestCase {
    private var log: LogRecorder!
    private var metrics: TestMetrics!

    override func setUp() {
        log = LogRecorder()
        metrics = TestMetrics()
    }

    /// An event recorded while a write is failing is queued (the failure is not known yet), and
    /// the next batch that carries it can succeed well before the retry delay ends (the file
    /// was put back meanwhile). From "writes again" on, events are stored again: a fresh-clone
    /// run saw the queue go on dropping, silently, until the retry delay ran out.
    func testAWriteThatSucceedsBeforeTheRetryDelayEndsStopsTheDropping() {
        let queue = makeQueue(retryDelay: .seconds(3600))
        XCTAssertTrue(queue.append(event("lost in the failing write")))
        let failing = queue.take()
        XCTAssertTrue(queue.append(event("recorded while the write fails")), "a new batch is due")
        queue.failed(failing, problem: "cannot open the trace store: unable to open database file")
        XCTAssertFalse(queue.append(event("dropped while failing")))
        XCTAssertEqual(queue.dropped, 2)

        let recovering = queue.take()
        XCTAssertEqual(recovering.events.map(\.summary), ["recorded while the write fails"])
        queue.written(recovering)
        XCTAssertTrue(log.contains("writes again after 2 events dropped"), log.text)

        XCTAssertTrue(queue.append(event("after writes again")), "queued, and the writer woken")
        XCTAssertEqual(queue.take().events.map(\.summary), ["after writes again"])
        XCTAssertEqual(queue.dropped, 2)
        XCTAssertEqual(metrics.counterTotal(label: "staplegate_trace_events_dropped_total"), 2)
    }

    /// A failure after "writes again" is a new one: said at once, not hidden behind the minute
    /// between two warnings of the failure before. (While one failure lasts, the warning stays
    /// once a minute: `TraceBackpressureTests`.)
    func testAFailureAfterWritesAgainIsWarnedAtOnce() throws {
        let queue = makeQueue(retryDelay: .zero)
        _ = queue.append(event("first"))
        queue.failed(queue.take(), problem: "first failure")
        try waitUntilBlocking(timeout: .seconds(10), "the first warning", details: { self.log.text }) {
            self.log.contains("trace store failing: 1 events dropped so far: first failure")
        }
        _ = queue.append(event("written"))
        queue.written(queue.take())

        _ = queue.append(event("second"))
        queue.failed(queue.take(), problem: "second failure")
        try waitUntilBlocking(timeout: .seconds(10), "the second failure's warning", details: { self.log.text }) {
            self.log.contains("trace store failing: 2 events dropped so far: second failure")
        }
        XCTAssertEqual(log.entries(containing: "trace store failing").count, 2, log.text)
        XCTAssertEqual(queue.dropped, 2)
    }

    private func makeQueue(retryDelay: Duration) -> TraceEventQueue {
        TraceEventQueue(location: "/state/trace.sqlite", capacity: 100, retryDelay: retryDelay,
                        logger: .recording(into: log), metricsFactory: metrics)
    }

    private func event(_ summary: String) -> TraceEvent {
        TraceEvent(time: Date(), kind: .connect, device: "device-1", serial: "0A1B", connectionID: 1,
                   remoteAddress: "10.0.0.7:51234", summary: summary)
    }
}
