import Yams

/// A YAML node together with the key path and line that led to it, so that every complaint
/// about it can say which file, key and line to edit. Typed accessors refuse anything else
/// rather than coerce it: a config that says `port: "8883"` or `groups: yes` is a mistake worth
/// reporting, not guessing about.
struct YAMLValue {
    let node: Node
    /// Dotted path from the document root, e.g. `tls.certificates[0].key`; "" for the root.
    let path: String
    /// The line of the key that holds this value (or of the list item): values of block
    /// mappings and lists start on the next line, but operators look for the key.
    let line: Int?
    let file: String

    func error(_ reason: String) -> ConfigError {
        ConfigError(file: file, key: path.isEmpty ? nil : path, line: line, reason: reason)
    }

    /// The mapping's entries; any key not in `knownKeys` is an error, with a suggestion.
    func mapping(knownKeys: [String]) throws(ConfigError) -> YAMLMapping {
        guard case let .mapping(mapping) = node else { throw error("expected a mapping, got \(kind)") }
        var entries: [String: YAMLValue] = [:]
        for (keyNode, valueNode) in mapping {
            let keyLine = keyNode.mark?.line
            guard keyNode.tagName == .str, let key = keyNode.scalar?.string else {
                let keyValue = YAMLValue(node: keyNode, path: path, line: keyLine, file: file)
                throw keyValue.error("keys must be plain names, got \(keyValue.kind) as a key")
            }
            let entry = YAMLValue(node: valueNode, path: child(key), line: keyLine, file: file)
            guard knownKeys.contains(key) else {
                throw entry.error(Self.unknownKeyReason(entry.path, key: key, knownKeys: knownKeys))
            }
            // Duplicates never get here: Yams refuses them while composing.
            entries[key] = entry
        }
        return YAMLMapping(owner: self, entries: entries)
    }

    func list() throws(ConfigError) -> [YAMLValue] {
        guard case let .sequence(sequence) = node else { throw error("expected a list, got \(kind)") }
        return sequence.enumerated().map { index, item in
            YAMLValue(node: item, path: "\(path)[\(index)]", line: item.mark?.line ?? line, file: file)
        }
    }

    func string() throws(ConfigError) -> String {
        guard node.tagName == .str, let string = node.scalar?.string else {
            let hint = node.scalar != nil && node.tagName != .null ? " (put it in quotes if it is meant as text)" : ""
            throw error("expected a string, got \(kind)\(hint)")
        }
        return string
    }

    func integer(in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard node.tagName == .int || node.tagName == .float else {
            throw error("expected a number, got \(kind)")
        }
        guard node.tagName == .int, let value = node.int else {
            throw error("expected a whole number, got \(node.scalar?.string ?? kind)")
        }
        guard range.contains(value) else {
            throw error("must be between \(range.lowerBound) and \(range.upperBound), not \(value)")
        }
        return value
    }

    func boolean() throws(ConfigError) -> Bool {
        guard node.tagName == .bool, let value = node.bool else {
            throw error("expected true or false, got \(node.scalar.map { "\"\($0.string)\"" } ?? kind)")
        }
        return value
    }

    /// Describes the node for "expected X, got Y" messages.
    var kind: String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case let .scalar(scalar):
            switch node.tagName {
            case .str: return "a string (\"\(scalar.string)\")"
            case .int, .float: return "a number (\(scalar.string))"
            case .bool: return "a boolean (\(scalar.string))"
            case .null: return "an empty value"
            default: return "a \(node.tag.rawValue) value (\(scalar.string))"
            }
        }
    }

    /// Line of every key in the document by dotted path, so that problems found after the walk
    /// (in the files a key names) can still point at the key.
    func keyLines() -> [String: Int] {
        var lines: [String: Int] = [:]
        if let line, !path.isEmpty { lines[path] = line }
        switch node {
        case let .mapping(mapping):
            for (keyNode, valueNode) in mapping {
                guard let key = keyNode.scalar?.string else { continue }
                let entry = YAMLValue(node: valueNode, path: child(key), line: keyNode.mark?.line, file: file)
                lines.merge(entry.keyLines()) { first, _ in first }
            }
        case let .sequence(sequence):
            for (index, item) in sequence.enumerated() {
                let entry = YAMLValue(node: item, path: "\(path)[\(index)]", line: item.mark?.line, file: file)
                lines.merge(entry.keyLines()) { first, _ in first }
            }
        case .scalar, .alias:
            break
        }
        return lines
    }

    private func child(_ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    static func unknownKeyReason(_ path: String, key: String, knownKeys: [String]) -> String {
        if let suggestion = KeySuggestion.closest(to: key, among: knownKeys) {
            return "unknown key \"\(path)\" (did you mean \"\(suggestion)\"?)"
        }
        return "unknown key \"\(path)\"; known keys here: \(knownKeys.joined(separator: ", "))"
    }
}

/// The entries of a mapping whose keys have all been checked against the schema.
struct YAMLMapping {
    let owner: YAMLValue
    let entries: [String: YAMLValue]

    subscript(key: String) -> YAMLValue? { entries[key] }

    func required(_ key: String) throws(ConfigError) -> YAMLValue {
        if let entry = entries[key] { return entry }
        let path = owner.path.isEmpty ? key : "\(owner.path).\(key)"
        throw ConfigError(file: owner.file, key: path, line: owner.line, reason: "missing required key \"\(path)\"")
    }
}

extension Node {
    /// The resolved tag (what the scalar is: string, int, ...); Yams keeps `Tag.name` internal.
    var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }
}
