import Foundation
// Not a declared dependency of this target, but always built with StapleGateTrace: the tests
// need a second, independent SQLite connection to make the store's writer really wait.
import GRDB
import Logging
@testable import StapleGateTrace
import TestSupport
import XCTest

/// `record` is called on event loops: whatever the disk does, it returns at once, and what cannot
/// be stored is dropped and counted (`droppedEvents`, the metric, a warning now and then).
final class TraceBackpressureTests: TraceStoreTestCase {
    /// A second connection holds the write lock, as an operator's `sqlite3` shell in a write
    /// transaction would: the store's writer then really waits inside SQLite's busy handler
    /// (no test hook in the write path). Meanwhile `record` keeps returning at once; the queue
    /// fills to capacity and the rest is dropped and counted.
    func testRecordDoesNotWaitForAStuckWriterAndDropsBeyondCapacity() throws {
        let store = try makeStore(queueCapacity: 100, tuning: .init(busyTimeout: 60))
        store.record(event(summary: "before"))
        store.flush()

        let locker = try DatabaseQueue(path: storePath)
        let locked = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let unlocked = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            do {
                try locker.inTransaction(.immediate) { _ in
                    locked.signal()
                    release.wait()
                    return .commit
                }
            } catch {
                XCTFail("cannot hold the write lock: \(error)")
                locked.signal()
            }
            unlocked.signal()
        }
        locked.wait()

        // The writer takes this one and waits for the lock.
        store.record(event(summary: "stuck"))
        try waitUntilBlocking(timeout: .seconds(10), "the writer to take the event") { store.queuedEvents == 0 }

        var slowest = Duration.zero
        for index in 0..<250 {
            let start = ContinuousClock.now
            store.record(event(at: Double(index), summary: "queued \(index)"))
            slowest = max(slowest, ContinuousClock.now - start)
        }
        // Waiting for the writer would mean waiting until the lock is released below (or the
        // 60 s busy timeout): the bound is generous for a loaded machine and still far from that.
        XCTAssertLessThan(slowest, .seconds(1), "record waited")
        XCTAssertEqual(store.queuedEvents, 100)
        XCTAssertEqual(store.droppedEvents, 150)
        XCTAssertEqual(droppedMetric(), 150)
        try waitUntilBlocking(timeout: .seconds(10), "the drop warning", details: { self.log.text }) {
            self.log.contains("trace store failing: 1 events dropped so far: the writer is behind (100 events queued)")
        }
        XCTAssertEqual(log.entries(containing: "trace store failing").count, 1, "at most one warning a minute")

        release.signal()
        unlocked.wait()
        store.flush()
        let stored = try reader().events(device: "device-1", limit: 1000)
        XCTAssertEqual(stored.count, 1 + 1 + 100)
        XCTAssertEqual(stored.last?.summary, "queued 99")
        XCTAssertEqual(writtenMetric(), 102)
        XCTAssertEqual(store.droppedEvents, 150)
    }

    /// SQLite alone would not notice: its open descriptors keep writing into the deleted file,
    /// and as root no permission change would stop it. The store notices that the path is no
    /// longer its file and reopens it, which really fails while a folder is in the way; it
    /// recovers once the path is usable again.
    func testAStoreWhoseFileIsReplacedByAFolderDropsWithoutBlockingAndRecovers() throws {
        let store = try makeStore(tuning: .init(retryDelay: .seconds(2)))
        store.record(event(summary: "before"))
        store.flush()
        XCTAssertEqual(writtenMetric(), 1)

        try FileManager.default.removeItem(atPath: storePath)
        try FileManager.default.createDirectory(atPath: storePath, withIntermediateDirectories: false)
        store.record(event(summary: "lost in the failing write"))
        store.flush()
        XCTAssertEqual(store.droppedEvents, 1)

        // Failing: dropped at once, not even queued.
        var slowest = Duration.zero
        for index in 0..<500 {
            let start = ContinuousClock.now
            store.record(event(at: Double(index), summary: "while failing"))
            slowest = max(slowest, ContinuousClock.now - start)
        }
        XCTAssertLessThan(slowest, .seconds(1), "record waited")
        XCTAssertEqual(store.queuedEvents, 0)
        XCTAssertEqual(store.droppedEvents, 501)
        XCTAssertEqual(droppedMetric(), 501)
        try waitUntilBlocking(timeout: .seconds(10), "the drop warning", details: { self.log.text }) {
            self.log.contains("trace store failing: 1 events dropped so far: cannot open the trace store \(self.storePath): ")
        }
        XCTAssertTrue(log.contains("the trace store \(storePath) was removed or replaced while in use"), log.text)

        // The folder goes; after the retry delay the next event is let through and a new file made.
        try FileManager.default.removeItem(atPath: storePath)
        Thread.sleep(forTimeInterval: 2.1)
        store.record(event(summary: "after"))
        store.flush()
        XCTAssertEqual(try reader().events(device: "device-1").map(\.summary), ["after"])
        XCTAssertEqual(writtenMetric(), 2)
        XCTAssertEqual(store.droppedEvents, 501)
        XCTAssertTrue(log.contains("trace store \(storePath) writes again after 501 events dropped"), log.text)
    }

    /// What a loaded machine did once: an event loop records while the writer reopens the
    /// replaced file (between taking its batch and failing it), so that event waits for the next
    /// batch; the folder goes before that batch, which is written, and "writes again" is logged
    /// long before the retry delay ends. From then on events must be stored: they were dropped,
    /// silently, until the retry delay ran out, and `trace DEVICE` showed nothing of the sessions
    /// that followed.
    func testEventsAfterAnEarlyRecoveryAreStoredNotDroppedUntilTheRetryDelayEnds() throws {
        let stores = StoreBox()
        let late = event(summary: "recorded while the writer reopens")
        // The writer logs that it reopens the file between taking its batch and failing it:
        // the moment, with no hook in the store, for an event loop's `record`.
        let logger = Logger(label: "staplegate") { [log] label in
            HookedLogHandler(recording: RecordingLogHandler(label: label, recorder: log!)) { message in
                guard message.contains("was removed or replaced while in use") else { return }
                stores.store?.record(late)
            }
        }
        let store = try SQLiteTraceStore(path: storePath, retention: .seconds(3600), maximumBytes: 1 << 30,
                                         queueCapacity: 100, logger: logger, metricsFactory: metrics,
                                         tuning: .init(retryDelay: .seconds(3600)))
        stores.store = store
        store.record(event(summary: "before"))
        store.flush()

        try FileManager.default.removeItem(atPath: storePath)
        try FileManager.default.createDirectory(atPath: storePath, withIntermediateDirectories: false)
        store.record(event(summary: "lost in the failing write"))
        store.flush()
        XCTAssertEqual(store.droppedEvents, 1)
        XCTAssertEqual(store.queuedEvents, 1, "recorded before the write failed: queued")

        try FileManager.default.removeItem(atPath: storePath)
        store.flush()
        XCTAssertTrue(log.contains("trace store \(storePath) writes again after 1 events dropped"), log.text)
        store.record(event(summary: "after writes again"))
        store.flush()
        XCTAssertEqual(try reader().events(device: "device-1").map(\.summary),
                       ["recorded while the writer reopens", "after writes again"])
        XCTAssertEqual(store.droppedEvents, 1)
        XCTAssertEqual(droppedMetric(), 1)
    }

    /// The other way to lose the file: its folder removed and a plain file put in its place.
    func testAStoreWhoseFolderBecomesAFileKeepsAcceptingRecords() throws {
        let folder = try state.subdirectory("state")
        let path = "\(folder)/trace.sqlite"
        let store = try SQLiteTraceStore(path: path, logger: .recording(into: log), metricsFactory: metrics)
        store.record(event())
        store.flush()

        try FileManager.default.removeItem(atPath: folder)
        try state.write("state", "not a folder")
        for index in 0..<50 { store.record(event(at: Double(index))) }
        store.flush()
        for index in 0..<50 { store.record(event(at: Double(index))) }
        XCTAssertEqual(store.droppedEvents, 100)
        XCTAssertEqual(droppedMetric(), 100)
        XCTAssertEqual(store.queuedEvents, 0)
    }
}

/// Records like `Logger.recording(into:)`, then runs `hook` with the message, on the thread
/// that logged it.
private struct HookedLogHandler: LogHandler {
    var recording: RecordingLogHandler
    let hook: @Sendable (String) -> Void

    var metadata: Logger.Metadata {
        get { recording.metadata }
        set { recording.metadata = newValue }
    }

    var logLevel: Logger.Level {
        get { recording.logLevel }
        set { recording.logLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { recording[metadataKey: key] }
        set { recording[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        recording.log(event: event)
        hook(event.message.description)
    }
}

private final class StoreBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: SQLiteTraceStore?

    var store: SQLiteTraceStore? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
