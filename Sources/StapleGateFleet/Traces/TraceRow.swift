import Foundation
import PostgresNIO
import StapleGateTrace

/// A `TraceEvent` as a row of the fleet's `trace_event` table, both ways, and the tables
/// themselves (migration 5).
enum TraceRow {
    /// Migration 5. `xact_id` is the writing transaction's id: `--follow` reads by it, because
    /// ids from the sequence are taken at insert and committed in any order across gateways
    /// (see `PostgresTraceFollower`).
    static let tables: [PostgresQuery] = [
        """
        CREATE TABLE IF NOT EXISTS trace_event (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            instance text NOT NULL,
            time timestamptz NOT NULL,
            kind text NOT NULL,
            device text,
            serial text,
            connection_id bigint NOT NULL,
            remote_address text NOT NULL,
            is_failure boolean NOT NULL,
            summary text NOT NULL,
            details jsonb NOT NULL DEFAULT '{}',
            xact_id xid8 NOT NULL DEFAULT pg_current_xact_id()
        )
        """,
        // `trace DEVICE` newest first, `--follow`, `trace --failures`, and retention by age.
        "CREATE INDEX IF NOT EXISTS trace_event_on_device_time ON trace_event (device, time)",
        "CREATE INDEX IF NOT EXISTS trace_event_on_device_xact ON trace_event (device, xact_id)",
        "CREATE INDEX IF NOT EXISTS trace_event_failures_on_time ON trace_event (time) WHERE is_failure",
        "CREATE INDEX IF NOT EXISTS trace_event_on_time ON trace_event (time)",
        // Message trace switches, for every gateway of the fleet: each reads them every second.
        """
        CREATE TABLE IF NOT EXISTS trace_message_switch (
            device text PRIMARY KEY,
            until timestamptz NOT NULL,
            set_by text NOT NULL,
            set_at timestamptz NOT NULL DEFAULT now()
        )
        """,
    ]

    /// What the readers select, in the order `event(from:)` decodes.
    static let columns = """
        id, instance, time, kind, device, serial, connection_id, remote_address, is_failure, summary, details::text
        """

    /// The most rows in one INSERT: 10 parameters each stay far below PostgreSQL's 65535.
    static let rowsPerInsert = 1000

    /// One multi-row INSERT for `events`, each stamped with the gateway that recorded it.
    static func insert(_ events: ArraySlice<TraceEvent>, instance: String) throws -> PostgresQuery {
        var sql = """
            INSERT INTO trace_event (instance, time, kind, device, serial, connection_id, remote_address, is_failure, \
            summary, details) VALUES
            """
        var binds = PostgresBindings(capacity: events.count * 10)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        for (index, event) in events.enumerated() {
            let first = index * 10
            sql += index == 0 ? " " : ", "
            sql += "(" + (1...9).map { "$\(first + $0)" }.joined(separator: ", ") + ", $\(first + 10)::jsonb)"
            try binds.append(clean(instance))
            try binds.append(event.time)
            try binds.append(event.kind.rawValue)
            try binds.append(event.device.map(clean))
            try binds.append(event.serial.map(clean))
            try binds.append(Int64(bitPattern: event.connectionID))
            try binds.append(clean(event.remoteAddress))
            try binds.append(event.isFailure)
            try binds.append(clean(event.summary))
            let details = Dictionary(uniqueKeysWithValues: event.details.map { (clean($0.key), clean($0.value)) })
            try binds.append(String(decoding: try encoder.encode(details), as: UTF8.self))
        }
        return PostgresQuery(unsafeSQL: sql, binds: binds)
    }

    /// PostgreSQL text and jsonb refuse NUL, which a device can put in its CONNECT (a client
    /// id, a topic): one such event must not fail its whole batch.
    static func clean(_ text: String) -> String {
        text.contains("\u{0}") ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
    }

    /// Nil for a row this version cannot read (a kind added by a newer version).
    static func event(from row: PostgresRow) throws -> TraceEvent? {
        let cells = Array(row)
        func cell<T: PostgresDecodable>(_ index: Int, _ type: T.Type) throws -> T {
            try cells[index].decode(T.self, context: .default)
        }
        guard let kind = TraceEvent.Kind(rawValue: try cell(3, String.self)) else { return nil }
        let json = try cell(10, String.self)
        // Details a newer version wrote in another shape are shown as they are, not lost.
        let details = (try? JSONDecoder().decode([String: String].self, from: Data(json.utf8))) ?? ["details": json]
        return TraceEvent(id: try cell(0, Int64.self), time: try cell(2, Date.self), kind: kind,
                          device: try cell(4, String?.self), serial: try cell(5, String?.self),
                          connectionID: UInt64(bitPattern: try cell(6, Int64.self)),
                          remoteAddress: try cell(7, String.self), isFailure: try cell(8, Bool.self),
                          summary: try cell(9, String.self), details: details, instance: try cell(1, String.self))
    }
}
