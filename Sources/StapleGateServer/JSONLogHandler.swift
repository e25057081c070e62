import Foundation
import Logging
import NIOConcurrencyHelpers

/// One JSON object per log record, one record per line, for log collectors (journald's
/// forwarders, Loki, Elasticsearch …) that would otherwise have to parse swift-log's text lines:
///
///     {"label":"staplegate","level":"info","message":"admitted as device-1","metadata":{"conn":"7"},"timestamp":"2026-05-01T12:00:00.123Z"}
///
/// Metadata values are written as strings (as the text format shows them), under "metadata" so
/// that no metadata key can shadow one of the record's own fields. Keys are sorted, so lines
/// compare and diff well. Escaping is JSONSerialization's, never done by hand.
public struct JSONLogHandler: LogHandler {
    public let label: String
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    /// Receives each complete line, newline included.
    private let write: @Sendable (Data) -> Void

    /// ISO 8601 in UTC with milliseconds, e.g. 2026-05-01T12:00:00.123Z.
    private static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    public init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider,
                write: @escaping @Sendable (Data) -> Void) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.write = write
    }

    /// Writes to standard error, one whole line at a time, so that records logged at once on
    /// several threads never interleave.
    public static func standardError(label: String) -> JSONLogHandler {
        JSONLogHandler(label: label) { line in
            standardErrorLock.withLock { FileHandle.standardError.write(line) }
        }
    }

    private static let standardErrorLock = NIOLock()

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        write(Self.line(label: label, level: event.level, message: event.message.description,
                        metadata: mergedMetadata(event.metadata), time: Date()))
    }

    /// The handler's metadata, then the provider's (e.g. a task-local trace id), then the call's:
    /// the later wins on equal keys, as in swift-log's own StreamLogHandler.
    private func mergedMetadata(_ explicit: Logger.Metadata?) -> Logger.Metadata {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let explicit { merged.merge(explicit) { $1 } }
        return merged
    }

    /// One record as a JSON line, newline included.
    static func line(label: String, level: Logger.Level, message: String, metadata: Logger.Metadata, time: Date) -> Data {
        var object: [String: Any] = [
            "timestamp": time.formatted(timestampStyle),
            "level": level.rawValue,
            "label": label,
            "message": message,
        ]
        if !metadata.isEmpty { object["metadata"] = metadata.mapValues { "\($0)" } }
        // Only strings and string dictionaries go in, so serialisation cannot fail; should it
        // ever, the record is still written, as a JSON line that says so.
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return Data(#"{"level":"error","message":"unserialisable log record"}"#.utf8 + [UInt8(ascii: "\n")]) }
        data.append(UInt8(ascii: "\n"))
        return data
    }
}
