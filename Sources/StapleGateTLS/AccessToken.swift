import COpenSSL
import Foundation

/// A secret that a request must present, such as the admin listener's bearer token
/// (`admin.token_file`). Only its SHA-256 is kept, and a presented token is compared with it in
/// constant time: both sides are hashed first, so neither the length nor any prefix of the
/// token shows in how long a refusal takes.
public struct AccessToken: Sendable, Equatable, CustomStringConvertible {
    private let digest: [UInt8]

    /// Fewer characters than this is a password someone typed, not a token.
    public static let minimumLength = 16
    static let maximumBytes = 4096

    public init(_ token: String) {
        digest = Self.sha256(Array(token.utf8))
    }

    /// Never the token, in case a configuration is ever printed.
    public var description: String { "(access token)" }

    /// Whether `presented` is the token. Constant time in the presented token's contents.
    public func matches(_ presented: String) -> Bool {
        let other = Self.sha256(Array(presented.utf8))
        return CRYPTO_memcmp(digest, other, digest.count) == 0
    }

    /// The token of an HTTP `Authorization: Bearer TOKEN` header (RFC 6750; the scheme's case is
    /// free, RFC 9110), or nil when the header is missing or of another scheme.
    public static func bearer(fromAuthorization header: String?) -> String? {
        guard let header else { return nil }
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return nil }
        return trimmed.dropFirst(7).trimmingCharacters(in: .whitespaces)
    }

    /// Reads the token from the first line of `path`: a file that only its owner (and group) may
    /// read, as SecretFile checks, holding at least `minimumLength` characters without spaces.
    public static func load(at path: String) throws(AccessTokenError) -> AccessToken {
        func failure(_ reason: String) -> AccessTokenError { AccessTokenError(path: path, reason: reason) }
        let data: Data
        switch SecretFile.read(at: path, maximumBytes: maximumBytes) {
        case let .success(bytes): data = bytes
        case let .failure(problem):
            throw failure(problem.reason(kind: "a token", exposure: "other users could read the token", maximumBytes: maximumBytes))
        }
        guard let text = String(data: data, encoding: .utf8) else { throw failure("is not UTF-8 text") }
        let token = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
        guard token.count >= minimumLength else {
            throw failure("its first line holds \(token.count) characters, fewer than \(minimumLength); make a token with `openssl rand -hex 32 > \(path)`")
        }
        guard !token.contains(where: { $0.isWhitespace || !$0.isASCII }) else {
            throw failure("its first line holds spaces or non-ASCII characters, which an HTTP header cannot carry as they are; make a token with `openssl rand -hex 32 > \(path)`")
        }
        return AccessToken(token)
    }

    private static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let done = EVP_Digest(bytes, bytes.count, &digest, &length, EVP_sha256(), nil)
        precondition(done == 1 && length == 32, "SHA-256 from libcrypto failed")
        return Array(digest.prefix(32))
    }
}

/// Why a token file cannot be used; the config layer adds the key that names it.
public struct AccessTokenError: Error, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}
