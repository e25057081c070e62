import Logging

/// How the gateway logs (`logging`), and how many device sessions it holds at once
/// (`listen.max_sessions`): the settings that matter once it runs as a service.
extension ConfigSchema {
    static let loggingKeys = ["level", "format"]

    func logging(_ section: YAMLValue) throws(ConfigError) -> LoggingConfiguration {
        let keys = try section.mapping(knownKeys: Self.loggingKeys)
        var logging = LoggingConfiguration()
        if let value = keys["level"] {
            let text = try value.string()
            guard let level = Logger.Level(rawValue: text) else {
                let levels = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                throw value.error("must be one of \(levels), not \"\(text)\"")
            }
            logging.level = level
        }
        if let value = keys["format"] { logging.format = try choice(value) }
        return logging
    }

    /// `auto`, or a whole number of sessions.
    func sessionLimit(_ value: YAMLValue) throws(ConfigError) -> SessionLimit {
        let range = SessionLimit.explicitRange
        if value.node.tagName == .str, value.node.scalar?.string == "auto" { return .automatic }
        guard value.node.tagName == .int, let count = value.node.int else {
            let shown = value.node.scalar.map { "\"\($0.string)\"" } ?? value.kind
            throw value.error("must be auto or a whole number of sessions from \(range.lowerBound) to \(range.upperBound), not \(shown)")
        }
        guard range.contains(count) else {
            throw value.error("must be auto or a whole number of sessions from \(range.lowerBound) to \(range.upperBound), not \(count)")
        }
        return .fixed(count)
    }
}

/// The `logging` section.
public struct LoggingConfiguration: Sendable, Equatable {
    public var level: Logger.Level = .info
    public var format: LogFormat = .text

    public init() {}
}

/// How each log record is written to standard error.
public enum LogFormat: String, Sendable, CaseIterable {
    /// swift-log's own lines: timestamp, level, label, metadata, message. For people.
    case text
    /// One JSON object per line (timestamp, level, label, message, metadata). For log collectors.
    case json
}

/// `listen.max_sessions`: how many device sessions the gateway holds at once.
public enum SessionLimit: Sendable, Equatable {
    /// Derived from the open-files limit at start (see `SessionCapacity`).
    case automatic
    case fixed(Int)

    /// Above ~50 million sessions the descriptors alone would exceed any kernel's fs.nr_open.
    static let explicitRange = 1...50_000_000
}
