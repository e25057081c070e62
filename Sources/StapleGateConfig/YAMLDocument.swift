import Yams

/// Turns YAML text into a node tree, with Yams' syntax errors recast as `ConfigError`s.
enum YAMLDocument {
    /// nil when the text holds no document at all (empty, or only comments).
    static func compose(_ yaml: String, file: String) throws(ConfigError) -> Node? {
        do {
            return try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw configError(error, yaml: yaml, file: file)
        } catch {
            throw ConfigError(file: file, reason: "is not valid YAML: \(error)")
        }
    }

    static func configError(_ error: YamlError, yaml: String, file: String) -> ConfigError {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            // libyaml's context ("while scanning a simple key") often points at the real culprit
            // a line or two above the problem, so keep it.
            let during = context.map { " (\($0.text) at line \($0.mark.line), column \($0.mark.column))" } ?? ""
            return ConfigError(file: file, line: mark.line,
                               reason: "invalid YAML at column \(mark.column): \(problem)\(during)\(tabHint(yaml, at: mark))")
        case let .reader(problem, offset, _, yaml):
            let line = offset.map { yaml.prefix($0).reduce(1) { $1 == "\n" ? $0 + 1 : $0 } }
            return ConfigError(file: file, line: line, reason: "cannot be read as YAML: \(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            return duplicateKeyError(name: duplicates.first ?? "", firstAt: context.mark, yaml: yaml, file: file)
        default:
            return ConfigError(file: file, reason: "is not valid YAML: \(error)")
        }
    }

    /// libyaml calls a tab "a character that cannot start any token", and tabs are invisible in
    /// most editors, so say what it is.
    private static func tabHint(_ yaml: String, at mark: Mark) -> String {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.indices.contains(mark.line - 1) else { return "" }
        let scalars = Array(lines[mark.line - 1].unicodeScalars)
        guard mark.column >= 1, mark.column <= scalars.count, scalars[mark.column - 1] == "\t" else { return "" }
        return "; this is a tab, and YAML indentation must use spaces"
    }

    /// Set in front of the first occurrence of a duplicated key so the document composes.
    private static let renamePrefix = "staplegate-first-occurrence-"

    /// Yams reports a duplicated key by its bare name and the position of its first occurrence.
    /// An operator needs the full key path and the line of the repeat, so compose the text again
    /// with the first occurrence renamed and look both up in the tree. If that fails (the key is
    /// repeated more than twice, or there are further duplicates), the bare name still helps.
    static func duplicateKeyError(name: String, firstAt mark: Mark, yaml: String, file: String) -> ConfigError {
        if let renamed = inserting(renamePrefix, into: yaml, at: mark),
           let root = try? Yams.compose(yaml: renamed),
           let found = locateRenamedKey(at: mark, in: root, path: "") {
            return ConfigError(file: file, key: found.path, line: found.repeatLine ?? mark.line,
                               reason: "duplicate key \"\(found.path)\" (first given on line \(mark.line)); each key may appear only once")
        }
        return ConfigError(file: file, key: name, line: mark.line,
                           reason: "duplicate key \"\(name)\"; each key may appear only once in a mapping")
    }

    private static func inserting(_ text: String, into yaml: String, at mark: Mark) -> String? {
        var lines = yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let index = mark.line - 1
        guard lines.indices.contains(index) else { return nil }
        // Yams counts columns in Unicode scalars.
        var scalars = Array(lines[index].unicodeScalars)
        guard mark.column >= 1, mark.column - 1 <= scalars.count else { return nil }
        var position = mark.column - 1
        // Inside the quotes of a quoted key, so the renamed key is still one scalar.
        if position < scalars.count, scalars[position] == "\"" || scalars[position] == "'" { position += 1 }
        scalars.insert(contentsOf: text.unicodeScalars, at: position)
        var line = String.UnicodeScalarView()
        line.append(contentsOf: scalars)
        lines[index] = String(line)
        return lines.joined(separator: "\n")
    }

    private static func locateRenamedKey(at mark: Mark, in node: Node, path: String) -> (path: String, repeatLine: Int?)? {
        func child(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }
        switch node {
        case let .mapping(mapping):
            for (key, value) in mapping {
                let name = key.scalar?.string ?? ""
                if key.mark?.line == mark.line, key.mark?.column == mark.column, name.hasPrefix(renamePrefix) {
                    let original = String(name.dropFirst(renamePrefix.count))
                    let repeated = mapping.first { $0.key.scalar?.string == original }
                    return (child(original), repeated?.key.mark?.line)
                }
                if let found = locateRenamedKey(at: mark, in: value, path: child(name)) { return found }
            }
        case let .sequence(sequence):
            for (index, item) in sequence.enumerated() {
                if let found = locateRenamedKey(at: mark, in: item, path: "\(path)[\(index)]") { return found }
            }
        case .scalar, .alias:
            break
        }
        return nil
    }
}
