import Foundation
import Logging

/// Everything loggers made with `Logger.recording(into:)` logged, in order.
public final class LogRecorder: @unchecked Sendable {
    public struct Entry: CustomStringConvertible, Sendable {
        public let level: Logger.Level
        public let label: String
        public let message: String
        public let metadata: [String: String]

        /// "warning staplegate: TLS handshake failed: ... conn=3 remote=..."
        public var description: String {
            let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            return (["\(level) \(label): \(message)"] + fields).joined(separator: " ")
        }
    }

    private let lock = NSLock()
    private var recorded: [Entry] = []
    /// Set STAPLEGATE_TEST_LOG=1 to see the gateway's log on stderr while tests run.
    private let echo = ProcessInfo.processInfo.environment["STAPLEGATE_TEST_LOG"] == "1"

    public init() {}

    func record(_ entry: Entry) {
        lock.lock()
        recorded.append(entry)
        lock.unlock()
        if echo { FileHandle.standardError.write(Data("[gateway] \(entry)\n".utf8)) }
    }

    public var entries: [Entry] {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }

    /// Every entry formatted on one line.
    public var lines: [String] { entries.map(\.description) }
    public var text: String { lines.joined(separator: "\n") }

    public func contains(_ text: String) -> Bool { entries.contains { $0.description.contains(text) } }

    public func entries(containing text: String) -> [Entry] { entries.filter { $0.description.contains(text) } }

    /// Waits until an entry containing `text` (and satisfying `where`, if given) was logged.
    @discardableResult
    public func waitFor(_ text: String, timeout: Duration = .seconds(10),
                        where predicate: @escaping (Entry) -> Bool = { _ in true }) async throws -> Entry {
        var found: Entry?
        try await waitUntil(timeout: timeout, "\"\(text)\" in the gateway log", details: { self.text }) {
            found = self.entries.first { $0.description.contains(text) && predicate($0) }
            return found != nil
        }
        return found!
    }
}

/// A swift-log handler that keeps formatted entries (level, message, metadata) in a `LogRecorder`.
public struct RecordingLogHandler: LogHandler {
    public let label: String
    public let recorder: LogRecorder
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level

    public init(label: String, recorder: LogRecorder, level: Logger.Level = .debug) {
        self.label = label
        self.recorder = recorder
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        recorder.record(LogRecorder.Entry(
            level: event.level, label: label, message: event.message.description,
            metadata: merged.mapValues { "\($0)" }))
    }
}

extension Logger {
    /// A logger whose output lands in `recorder` (all levels from `level` up).
    public static func recording(into recorder: LogRecorder, label: String = "staplegate", level: Logger.Level = .debug) -> Logger {
        Logger(label: label) { label in RecordingLogHandler(label: label, recorder: recorder, level: level) }
    }
}
