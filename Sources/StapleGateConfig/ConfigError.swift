/// A configuration problem, pinned to the file, key and line an operator has to edit.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The config file path as given (not resolved), so the message matches what the operator typed.
    public let file: String
    /// Dotted key path such as `tls.certificates[1].key`; nil for problems with the whole file.
    public let key: String?
    /// 1-based line of the offending key or value, when known.
    public let line: Int?
    public let reason: String

    public init(file: String, key: String? = nil, line: Int? = nil, reason: String) {
        self.file = file
        self.key = key
        self.line = line
        self.reason = reason
    }

    /// `<file>:<line>: <key>: <reason>`, the compiler-style prefix editors and terminals can jump to.
    public var description: String {
        var text = file + ":"
        if let line { text += "\(line):" }
        if let key { text += " \(key):" }
        return text + " " + reason
    }
}
