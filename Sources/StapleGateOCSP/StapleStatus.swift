import Foundation

/// What `staplegate ocsp status` shows for one certificate: written by the running gateway to
/// its state directory after every change, read by the command (no control socket needed).
public struct StapleStatus: Codable, Sendable, Equatable {
    public var subject: String
    public var serial: String
    public var fingerprint: String
    public var responderURL: String
    public var policy: String
    /// "good", "revoked", "unknown" or "none" (nothing verified yet).
    public var certStatus: String
    public var revokedAt: Date?
    public var revocationReason: String?
    public var thisUpdate: Date?
    public var nextUpdate: Date?
    public var producedAt: Date?
    public var responderID: String?
    /// Whether handshakes are stapled right now.
    public var serving: Bool
    public var lastFetch: Date?
    public var lastResult: String?
    public var nextRefresh: Date?
    public var consecutiveFailures: Int
}

/// The state directory's files for stapling: one DER per certificate (named by its SHA-256, so a
/// replaced certificate never picks up its predecessor's staple) and the status file.
public struct StaplePersistence: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public var statusFile: String { "\(directory)/ocsp-status.json" }

    func stapleFile(fingerprint: String) -> String { "\(directory)/staple-\(fingerprint).der" }

    func loadStaple(fingerprint: String) -> [UInt8]? {
        FileManager.default.contents(atPath: stapleFile(fingerprint: fingerprint)).map { [UInt8]($0) }
    }

    /// Write-then-rename, so a crash never leaves half a response to be loaded at the next start.
    func saveStaple(_ der: [UInt8], fingerprint: String) throws {
        try ensureDirectory()
        try Data(der).write(to: URL(fileURLWithPath: stapleFile(fingerprint: fingerprint)), options: .atomic)
    }

    func saveStatus(_ statuses: [StapleStatus]) throws {
        try ensureDirectory()
        try Self.encoder.encode(statuses).write(to: URL(fileURLWithPath: statusFile), options: .atomic)
    }

    public func loadStatus() throws -> [StapleStatus] {
        try Self.decoder.decode([StapleStatus].self, from: Data(contentsOf: URL(fileURLWithPath: statusFile)))
    }

    private func ensureDirectory() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}
