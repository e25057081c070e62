import Foundation

/// Bytes a child process wrote to one of its output streams, collected as they arrive.
/// Thread-safe: a reader thread appends while tests read.
public final class OutputBuffer: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes = Data()
    private var completeLines: [String] = []
    private var lineStart = 0
    private var closed = false

    public init() {}

    func append(_ chunk: Data) {
        lock.lock()
        defer { lock.unlock() }
        bytes.append(chunk)
        // Split complete lines incrementally, so waiting for line N of a long stream stays cheap.
        var index = bytes.index(bytes.startIndex, offsetBy: lineStart)
        while let newline = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) {
            completeLines.append(String(decoding: bytes[index..<newline], as: UTF8.self))
            index = bytes.index(after: newline)
            lineStart = bytes.distance(from: bytes.startIndex, to: index)
        }
    }

    func markClosed() {
        lock.lock()
        closed = true
        lock.unlock()
    }

    /// True once the stream reached end-of-file (the process and its children closed it).
    public var isClosed: Bool {
        lock.lock()
        defer { lock.unlock() }
        return closed
    }

    public var data: Data {
        lock.lock()
        defer { lock.unlock() }
        return bytes
    }

    public var text: String { String(decoding: data, as: UTF8.self) }

    /// Lines terminated by a newline so far (a trailing partial line is not included).
    public var lines: [String] {
        lock.lock()
        defer { lock.unlock() }
        return completeLines
    }

    public var lineCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return completeLines.count
    }

    /// Complete lines from index `start` on.
    public func lines(from start: Int) -> ArraySlice<String> {
        lock.lock()
        defer { lock.unlock() }
        return completeLines[min(start, completeLines.count)...]
    }

    public func contains(_ text: String) -> Bool {
        self.text.contains(text)
    }
}
