import Foundation
@testable import StapleGateTrace
import TestSupport
import XCTest

/// Old events go after `retention`; the oldest go when the database outgrows `maximumBytes`.
final class TraceRetentionTests: TraceStoreTestCase {
    private let day = 24.0 * 3600

    func testPruningByAgeDeletesOldEventsAndKeepsNewOnes() throws {
        let store = try makeStore(retention: .seconds(24 * 3600))
        for second in [-3 * day, -2 * day, -day - 1] { store.record(event(at: second, summary: "old")) }
        for second in [-day + 60, -3600, 0] { store.record(event(at: second, summary: "new")) }
        store.flush()

        try store.prune(now: now)
        XCTAssertEqual(try reader().events(device: "device-1").map(\.summary), ["new", "new", "new"])

        // `now` is the caller's: half an hour short of a day later, only the last one is within a day.
        try store.prune(now: now.addingTimeInterval(day - 1800))
        XCTAssertEqual(try reader().events(device: "device-1").map(\.time), [now])
    }

    func testPruningBySizeDeletesTheOldestUntilUnderTheLimit() throws {
        let big = String(repeating: "x", count: 2000)
        var filler: SQLiteTraceStore? = try makeStore()
        for index in 0..<1000 { filler?.record(event(at: Double(index), connection: UInt64(index), summary: big)) }
        filler?.flush()
        filler = nil
        let sizeBefore = try fileSize(storePath)
        XCTAssertGreaterThan(sizeBefore, 2_000_000, "1000 events of 2 kB")

        let limit: Int64 = 512 * 1024
        let store = try makeStore(maximumBytes: limit)
        try store.prune(now: now)

        let left = try reader().events(device: "device-1", limit: 10_000)
        XCTAssertGreaterThan(left.count, 50)
        XCTAssertLessThan(left.count, 1000 * Int(limit) / Int(sizeBefore) + 50)
        // The newest are kept, without gaps.
        XCTAssertEqual(left.last?.connectionID, 999)
        XCTAssertEqual(left.map(\.connectionID), Array((1000 - UInt64(left.count))..<1000))
        // Freed pages went back to the file system (incremental vacuum, then a checkpoint).
        XCTAssertLessThanOrEqual(try fileSize(storePath), limit)
    }

    /// Without anyone calling `prune`, the writer applies retention after writes.
    func testRetentionRunsAfterWrites() throws {
        let big = String(repeating: "y", count: 2000)
        let limit: Int64 = 256 * 1024
        let store = try makeStore(retention: .seconds(3600), maximumBytes: limit,
                                  tuning: .init(pruneInterval: .zero))
        store.record(event(at: -2 * 3600, summary: "too old"))
        for index in 0..<1000 {
            store.record(event(at: Double(index), connection: UInt64(index), summary: big))
            if index % 100 == 99 { store.flush() }
        }
        store.flush()

        let left = try reader().events(device: "device-1", limit: 10_000)
        XCTAssertFalse(left.contains { $0.summary == "too old" })
        XCTAssertLessThan(left.count, 200)
        XCTAssertEqual(left.last?.connectionID, 999)
        XCTAssertEqual(writtenMetric(), 1001)
    }

    private func fileSize(_ path: String) throws -> Int64 {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return try XCTUnwrap(attributes[.size] as? NSNumber).int64Value
    }
}
