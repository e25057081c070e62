import Foundation
// Not a declared dependency of this target, but always built with StapleGateTrace: the tests
// need a second, independent SQLite connection to make the store's writer really wait.
import GRDB
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
