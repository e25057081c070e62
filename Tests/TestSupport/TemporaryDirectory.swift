import Foundation

/// A fresh directory under the system temp folder, removed by `remove()` (and at the latest when
/// the test runner exits). Mode 0755 so that a broker that dropped root privileges can read it.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(prefix: String, mode: Int = 0o755) throws {
        let base = FileManager.default.temporaryDirectory.path
        let template = "\(base)/staplegate-\(prefix).XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let created = mkdtemp(&bytes) else {
            throw POSIXFailure("mkdtemp \(template)", errno)
        }
        path = String(cString: created)
        chmod(path, mode_t(mode))
        Self.leftovers.insert(path)
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Creates a subdirectory with the given mode (chmod, so the umask does not interfere).
    public func subdirectory(_ name: String, mode: Int = 0o755) throws -> String {
        let directory = file(name)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, mode_t(mode))
        return directory
    }

    /// Writes a file readable by everyone (0644).
    @discardableResult
    public func write(_ name: String, _ contents: Data) throws -> String {
        let target = file(name)
        try contents.write(to: URL(fileURLWithPath: target))
        chmod(target, 0o644)
        return target
    }

    @discardableResult
    public func write(_ name: String, _ text: String) throws -> String {
        try write(name, Data(text.utf8))
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
        Self.leftovers.remove(path)
    }

    private static let lock = NSLock()
    private static var registeredExitHook = false
    private static var _leftovers: Set<String> = []
    private static var leftovers: Set<String> {
        get { lock.lock(); defer { lock.unlock() }; return _leftovers }
        set {
            lock.lock()
            defer { lock.unlock() }
            _leftovers = newValue
            if !registeredExitHook {
                registeredExitHook = true
                atexit {
                    for path in TemporaryDirectory.leftovers { try? FileManager.default.removeItem(atPath: path) }
                }
            }
        }
    }
}

/// The repository this test code lives in (the folder holding Package.swift).
public enum Repository {
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
                return url.path
            }
            url.deleteLastPathComponent()
        }
        fatalError("no Package.swift above \(#filePath)")
    }()

    public static func path(_ relative: String) -> String { "\(root)/\(relative)" }
}
