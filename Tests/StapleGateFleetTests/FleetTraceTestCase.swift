import Foundation
import Logging
import MetricsTestKit
@testable import StapleGateFleet
@testable import StapleGateTrace
import TestSupport
import XCTest

/// Trace stores of both kinds on this test's files and database: the gateway's own SQLite file,
/// and the fleet's PostgreSQL (one `FleetDatabase` per store, as one per gateway process).
class FleetTraceTestCase: FleetStoreTestCase {
    var metrics: TestMetrics!
    var log: LogRecorder!
    private var databases: [FleetDatabase] = []
    private var postgresStores: [PostgresTraceStore] = []

    override func setUp() async throws {
        try await super.setUp()
        metrics = TestMetrics()
        log = LogRecorder()
    }

    override func tearDown() async throws {
        for store in postgresStores { store.close() }
        for database in databases { database.close() }
        postgresStores = []
        databases = []
        try await super.tearDown()
    }

    /// Short intervals, so that tests wait for switches and retries in a second or two.
    var fastTuning: PostgresTraceStore.Tuning {
        PostgresTraceStore.Tuning(retryDelay: .seconds(1), writeTimeout: .seconds(2), refreshInterval: .milliseconds(100),
                                  pruneInterval: .seconds(3600))
    }

    /// A fleet database of its own (a gateway process's), ready, closed at the end of the test.
    func openDatabase(_ settings: PostgresSettings) throws -> FleetDatabase {
        let database = try FleetDatabase(settings: settings, logger: .recording(into: log))
        databases.append(database)
        guard database.readyBlocking(within: .seconds(15)) else {
            throw PostgresServer.Failure(description: "fleet database not ready: \(database.health)")
        }
        return database
    }

    func openPostgresTraceStore(instance: String = "gw-a", retention: Duration = .seconds(3 * 24 * 3600),
                                maximumBytes: Int64 = 256 * 1024 * 1024, queueCapacity: Int = 10_000,
                                settings: PostgresSettings? = nil,
                                tuning: PostgresTraceStore.Tuning? = nil) throws -> PostgresTraceStore {
        var own = try settings ?? self.settings
        own.instance = instance
        let store = PostgresTraceStore(database: try openDatabase(own), retention: retention, maximumBytes: maximumBytes,
                                       queueCapacity: queueCapacity, logger: .recording(into: log), metricsFactory: metrics,
                                       tuning: tuning ?? fastTuning)
        postgresStores.append(store)
        return store
    }

    var sqlitePath: String { directory.file("state/trace.sqlite") }

    func openSQLiteTraceStore(retention: Duration = .seconds(3 * 24 * 3600),
                              maximumBytes: Int64 = 256 * 1024 * 1024) throws -> SQLiteTraceStore {
        try SQLiteTraceStore(path: sqlitePath, retention: retention, maximumBytes: maximumBytes, queueCapacity: 10_000,
                             logger: .recording(into: log), metricsFactory: metrics,
                             tuning: .init(pruneInterval: .seconds(3600)))
    }

    /// `body` with a new SQLite store, then with a new PostgreSQL store (each on fresh files and
    /// a fresh database); `reopen` makes another store on the same file or database, as a
    /// restarted gateway (or, for PostgreSQL, another gateway) would.
    func forEachTraceStore(retention: Duration = .seconds(3 * 24 * 3600), maximumBytes: Int64 = 256 * 1024 * 1024,
                           _ body: (_ store: any TraceStore, _ kind: String, _ reopen: () throws -> any TraceStore) async throws -> Void)
        async throws {
        try await body(try openSQLiteTraceStore(retention: retention, maximumBytes: maximumBytes), "sqlite") {
            try self.openSQLiteTraceStore(retention: retention, maximumBytes: maximumBytes)
        }
        try await body(try openPostgresTraceStore(retention: retention, maximumBytes: maximumBytes), "postgres") {
            try self.openPostgresTraceStore(instance: "gw-b", retention: retention, maximumBytes: maximumBytes)
        }
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

    /// Stored events equal `expected`, ids and instances aside (the store sets them).
    func assertSame(_ stored: [TraceEvent], _ expected: [TraceEvent], _ kind: String,
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(stored.count, expected.count, "\(kind): event count", file: file, line: line)
        for (got, want) in zip(stored, expected) {
            XCTAssertNotNil(got.id, kind, file: file, line: line)
            var normalized = got
            normalized.id = nil
            normalized.instance = nil
            XCTAssertEqual(normalized, want, kind, file: file, line: line)
        }
    }
}
