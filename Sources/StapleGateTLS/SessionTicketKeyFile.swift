import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A session ticket key file that cannot be used, and where: the line when one is at fault.
public struct SessionTicketKeyFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public let path: String
    /// 1-based, when a single line is at fault.
    public let line: Int?
    public let reason: String

    public var description: String { "\(path):" + (line.map { "\($0):" } ?? "") + " \(reason)" }
}

/// `tls.session_ticket_keys`: HAProxy's `tls-ticket-keys` file shape holding nginx's 80-byte
/// keys. One key per line, base64 of 80 bytes (16-byte name, 32-byte HMAC secret, 32-byte
/// AES key); blank lines and lines starting with `#` are skipped. The first key encrypts new
/// tickets, every key decrypts. The keys decrypt every resumed session of every device, so the
/// file must not be open to others: group read (0640) at most.
public enum SessionTicketKeyFile {
    /// A file of 32 keys with comments is a few KB; anything this big is the wrong file.
    static let maximumSize = 64 * 1024

    /// The keys in the file at `path`, after checking that only its owner (and group) can read it.
    public static func load(at path: String) throws(SessionTicketKeyFileError) -> SessionTicketKeyRing {
        let text = try read(path)
        return SessionTicketKeyRing(keys: try keys(in: text, path: path), source: .file(path))
    }

    /// The keys in `text`, in order; `path` is for the messages.
    static func keys(in text: String, path: String) throws(SessionTicketKeyFileError) -> [SessionTicketKey] {
        func failure(_ line: Int?, _ reason: String) -> SessionTicketKeyFileError {
            SessionTicketKeyFileError(path: path, line: line, reason: reason)
        }
        var keys: [SessionTicketKey] = []
        var lineOfName: [[UInt8]: Int] = [:]
        // isNewline: "\r\n" is one Character in Swift, so splitting on "\n" alone would miss it.
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let number = index + 1
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let decoded = Data(base64Encoded: line) else {
                throw failure(number, "not a base64 key (one key per line, as `staplegate ticket-keys generate` writes; comments start with #)")
            }
            guard let key = SessionTicketKey(bytes: Array(decoded)) else {
                throw failure(number, "the key is \(decoded.count) bytes, not \(SessionTicketKey.length) (16-byte name, 32-byte HMAC secret, 32-byte AES key); make one with `staplegate ticket-keys generate` or `openssl rand 80 | base64 -w0`")
            }
            if let earlier = lineOfName[Array(key.name)] {
                throw failure(number, "the key name (its first 16 bytes) is the same as line \(earlier)'s: each key needs its own name, or a ticket could be opened with the wrong key")
            }
            guard keys.count < SessionTicketKeyRing.maximumKeys else {
                throw failure(number, "more than \(SessionTicketKeyRing.maximumKeys) keys; keep the current key and the few that tickets still in use were made with")
            }
            lineOfName[Array(key.name)] = number
            keys.append(key)
        }
        guard !keys.isEmpty else {
            throw failure(nil, "holds no key (only blank lines and comments); add one with `staplegate ticket-keys generate --force`")
        }
        return keys
    }

    private static func read(_ path: String) throws(SessionTicketKeyFileError) -> String {
        func failure(_ reason: String) -> SessionTicketKeyFileError {
            SessionTicketKeyFileError(path: path, line: nil, reason: reason)
        }
        let data: Data
        switch SecretFile.read(at: path, maximumBytes: maximumSize) {
        case let .success(bytes): data = bytes
        case let .failure(.access(problem)): throw failure(problem)
        case let .failure(.unexaminable(why)): throw failure("cannot be examined (\(why))")
        case let .failure(.modeTooWide(mode)):
            throw failure("mode \(octal(mode)) is wider than 0640: these keys open every device's resumed sessions, so only the gateway's user (and at most its group, read-only) may have them; chmod 600 (or 640)")
        case let .failure(.tooBig(size)):
            throw failure("is \(size) bytes, too big for a key file (at most \(maximumSize)); is it the right file?")
        case let .failure(.unreadable(why)): throw failure("could not be read (\(why))")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw failure("is not text (one base64 key per line)") }
        return text
    }

    static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
