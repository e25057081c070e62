import Foundation

/// What `staplegate trace DEVICE` prints: one line per event, in the order given.
///
///     2025-11-22T05:09:01.123Z  #42    accepted            TCP connection from 10.0.0.7:51234
///     2025-11-22T05:09:01.131Z  #42  ✗ tls_failed          TLS handshake failed: certificate revoked
///
/// Failures carry a "✗" in a column of their own, so that they stand out when scanning. Events
/// of a fleet name the gateway that recorded them, after the time (connection ids are per
/// gateway): `2025-11-22T05:09:01.123Z  gw-a  #42    accepted …`.
public enum TraceTimeline {
    /// The mark in front of failures; other events have a blank there.
    public static let failureMark = "✗"

    /// A readable timeline: time (ISO 8601 with milliseconds, in `timeZone`), connection id,
    /// failure mark, kind (padded so that summaries line up) and summary.
    /// `showDevice`: add the device after the connection id (for listings across devices).
    public static func lines(_ events: [TraceEvent], timeZone: TimeZone = .current, showDevice: Bool = false) -> [String] {
        let style = timeStyle(timeZone)
        // Connection ids grow for the gateway's lifetime: pad to the widest in view.
        let idWidth = events.map { String($0.connectionID).count }.max() ?? 1
        let deviceWidth = showDevice ? events.map { ($0.device ?? "-").count }.max() ?? 1 : 0
        // Only when some event has one: a gateway's own file keeps today's lines.
        let instanceWidth = events.compactMap { $0.instance?.count }.max()
        return events.map { event in
            let instance = instanceWidth.map { (event.instance ?? "-").padding(toLength: $0, withPad: " ", startingAt: 0) + "  " } ?? ""
            let id = "#\(event.connectionID)".padding(toLength: idWidth + 1, withPad: " ", startingAt: 0)
            let device = showDevice ? (event.device ?? "-").padding(toLength: deviceWidth, withPad: " ", startingAt: 0) + "  " : ""
            let mark = event.isFailure ? failureMark : " "
            let kind = event.kind.rawValue.padding(toLength: kindWidth, withPad: " ", startingAt: 0)
            return "\(event.time.formatted(style))  \(instance)\(id)  \(device)\(mark) \(kind)  \(event.summary)"
        }
    }

    /// The JSON form (`--json`): one compact object per line (JSON Lines, so `--follow` can
    /// stream it and `jq` can read it), keys sorted, dates ISO 8601 with milliseconds in UTC.
    public static func jsonLines(_ events: [TraceEvent]) -> [String] {
        let encoder = jsonEncoder()
        // Every field of TraceEvent is a string, number, bool or string map: encoding cannot fail.
        return events.map { String(decoding: (try? encoder.encode($0)) ?? Data("{}".utf8), as: UTF8.self) }
    }

    /// The encoder behind `jsonLines`, for callers that write a whole document.
    public static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let style = timeStyle(TimeZone(identifier: "UTC")!)
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(style))
        }
        return encoder
    }

    /// Reads what `jsonLines` wrote (for tools and tests).
    public static func jsonDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        let style = timeStyle(TimeZone(identifier: "UTC")!)
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            do {
                return try style.parse(text)
            } catch {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an ISO 8601 time: \(text)")
            }
        }
        return decoder
    }

    private static let kindWidth = TraceEvent.Kind.allCases.map(\.rawValue.count).max() ?? 0

    private static func timeStyle(_ timeZone: TimeZone) -> Date.ISO8601FormatStyle {
        // The extended form ("+01:00", not "+0100"), as ISO 8601 and RFC 3339 readers expect.
        Date.ISO8601FormatStyle(timeZoneSeparator: .colon, includingFractionalSeconds: true, timeZone: timeZone)
    }
}
