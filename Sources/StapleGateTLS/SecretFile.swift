import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file that holds secrets (session ticket keys, the fleet's secret): readable, no more open
/// than its owner and group readers, and small, checked in that order. The callers word what
/// is wrong for their own setting; the checks are one.
public enum SecretFile {
    public enum Problem: Error, Sendable, Equatable {
        /// Missing, a folder, or not readable by this user (`FileAccess`'s words).
        case access(String)
        /// `stat` failed (its error).
        case unexaminable(String)
        /// The file's permission bits, which open it to more than owner and group readers.
        case modeTooWide(mode_t)
        case tooBig(Int64)
        /// Reading failed (the error's words).
        case unreadable(String)
    }

    /// Permission bits that open a secret to more than its owner and group readers.
    public static let forbiddenModeBits: mode_t = 0o037

    /// The file's bytes, or the first thing wrong with it.
    public static func read(at path: String, maximumBytes: Int) -> Result<Data, Problem> {
        if let problem = FileAccess.problem(at: path) { return .failure(.access(problem)) }
        var status = stat()
        guard stat(path, &status) == 0 else { return .failure(.unexaminable(String(cString: strerror(errno)))) }
        let mode = status.st_mode & 0o7777
        guard mode & forbiddenModeBits == 0 else { return .failure(.modeTooWide(mode)) }
        guard status.st_size <= maximumBytes else { return .failure(.tooBig(Int64(status.st_size))) }
        do {
            return .success(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            return .failure(.unreadable(error.localizedDescription))
        }
    }
}

extension SecretFile.Problem {
    /// In words, for a secret that `kind` names ("a token") and whose exposure `exposure` says
    /// ("other users could read the token"), read with `maximumBytes`.
    public func reason(kind: String, exposure: String, maximumBytes: Int) -> String {
        switch self {
        case let .access(problem): problem
        case let .unexaminable(why): "cannot be examined (\(why))"
        case let .modeTooWide(mode): "mode \(String(mode, radix: 8)) is wider than 640: \(exposure); chmod 600 (or 640)"
        case let .tooBig(size): "is \(size) bytes, too big for \(kind) (at most \(maximumBytes)); is it the right file?"
        case .unreadable: "could not be read"
        }
    }
}
