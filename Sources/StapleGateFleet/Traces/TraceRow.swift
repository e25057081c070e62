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

    /// One INSERT for all of `events`, each stamped with the gateway that recorded it: an array
    /// per column, unnested by the server. Twelve parameters whatever the batch's size, so the
    /// statement stays small to send and parse, and no batch meets the 65535-parameter limit (a
    /// VALUES row per event, ten parameters each, took twice as long for 1000 events).
    static func insert(_ events: [TraceEvent], instance: String) -> PostgresQuery {
        // Arrays of optionals are not encodable: a device or serial not known yet is an empty
        // string plus a false in its mask.
        var times: [Date] = [], kinds: [String] = [], devices: [String] = [], hasDevice: [Bool] = []
        var serials: [String] = [], hasSerial: [Bool] = [], connections: [Int64] = [], remotes: [String] = []
        var failures: [Bool] = [], summaries: [String] = [], details: [String] = []
        for event in events {
            times.append(event.time)
            kinds.append(event.kind.rawValue)
            devices.append(event.device.map(clean) ?? "")
            hasDevice.append(event.device != nil)
            serials.append(event.serial.map(clean) ?? "")
            hasSerial.append(event.serial != nil)
            connections.append(Int64(bitPattern: event.connectionID))
            remotes.append(clean(event.remoteAddress))
            failures.append(event.isFailure)
            summaries.append(clean(event.summary))
            details.append(TraceEvent.json(event.details))
        }
        return """
            INSERT INTO trace_event (instance, time, kind, device, serial, connection_id, remote_address, is_failure,
                summary, details)
            SELECT \(clean(instance)), time, kind, CASE WHEN has_device THEN device END, CASE WHEN has_serial THEN serial END,
                connection_id, remote_address, is_failure, summary, details::jsonb
            FROM unnest(\(times)::timestamptz[], \(kinds)::text[], \(devices)::text[], \(hasDevice)::bool[],
                \(serials)::text[], \(hasSerial)::bool[], \(connections)::bigint[], \(remotes)::text[],
                \(failures)::bool[], \(summaries)::text[], \(details)::text[])
                AS t(time, kind, device, has_device, serial, has_serial, connection_id, remote_address, is_failure,
                     summary, details)
            """
    }

    /// PostgreSQL text and jsonb refuse NUL, which a device can put in its CONNECT (a client
    /// id, a topic): one such event must not fail its whole batch.
    static func clean(_ text: String) -> String {
        text.utf8.contains(0) ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
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
