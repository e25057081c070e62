import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writing key files (`staplegate ticket-keys generate` and `rotate`). A file is written whole
/// under a temporary name in its folder, then moved into place, so a gateway reloading meanwhile
/// reads the old keys or the new ones, never half a file.
extension SessionTicketKeyFile {
    /// What `rotate` did.
    public struct Rotation: Sendable {
        /// The new first key: it encrypts new tickets once the gateways reload.
        public let added: SessionTicketKey
        /// The file's earlier keys still in it (decrypt only), in order.
        public let kept: [SessionTicketKey]
        /// The oldest keys, beyond `keep`: tickets made with them get a full handshake.
        public let dropped: [SessionTicketKey]
    }

    /// Writes a new key file holding `keys`, readable by its owner only (0600). An existing file
    /// is refused unless `replacing`; a replaced file keeps its owner, group and (when narrow
    /// enough) mode, so a file made for the gateway's user stays readable by it.
    public static func create(at path: String, keys: [SessionTicketKey], replacing: Bool) throws(SessionTicketKeyFileError) {
        if !replacing, FileManager.default.fileExists(atPath: path) {
            throw SessionTicketKeyFileError(path: path, line: nil, reason: "already exists; --force replaces it (tickets made with its keys then get a full handshake), `ticket-keys rotate` adds a key to it")
        }
        try write(text(for: keys), to: path, replacing: replacing)
    }

    /// Puts a fresh key first in the file at `path` (which must load as the gateway would load
    /// it) and keeps at most `keep` keys in all, dropping the oldest (the last ones).
    public static func rotate(at path: String, keep: Int) throws(SessionTicketKeyFileError) -> Rotation {
        precondition((2...SessionTicketKeyRing.maximumKeys).contains(keep), "rotate keeps the new key and at least one older one")
        let current = try load(at: path).keys
        let added = SessionTicketKey.random()
        let kept = Array(current.prefix(keep - 1))
        try write(text(for: [added] + kept), to: path, replacing: true)
        return Rotation(added: added, kept: kept, dropped: Array(current.dropFirst(keep - 1)))
    }

    /// The file's text: what it is, then one base64 key per line, the encrypting one first.
    static func text(for keys: [SessionTicketKey]) -> String {
        """
        # StapleGate session ticket keys (tls.session_ticket_keys). SECRET: mode 0600, owned by the
        # gateway's user, the same file on every gateway of the fleet.
        # One base64 key per line (80 bytes: 16-byte name, 32-byte HMAC secret, 32-byte AES key).
        # The first key encrypts new tickets; every key decrypts. Rotate: staplegate ticket-keys rotate.

        """ + keys.map { $0.base64 + "\n" }.joined()
    }

    private static func write(_ text: String, to path: String, replacing: Bool) throws(SessionTicketKeyFileError) {
        func failure(_ reason: String) -> SessionTicketKeyFileError {
            SessionTicketKeyFileError(path: path, line: nil, reason: reason)
        }
        func systemError() -> String { String(cString: strerror(errno)) }
        let url = URL(fileURLWithPath: path)
        var template = Array("\(url.deletingLastPathComponent().path)/.\(url.lastPathComponent).XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw failure("cannot be written (\(systemError()))") }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var written = false
        defer {
            if !written { unlink(temporary) }
        }
        var mode: mode_t = 0o600
        var existing = stat()
        if replacing, stat(path, &existing) == 0 {
            if existing.st_mode & SecretFile.forbiddenModeBits == 0 { mode = existing.st_mode & 0o640 }
            guard fchown(descriptor, existing.st_uid, existing.st_gid) == 0 else {
                close(descriptor)
                throw failure("cannot keep its owner and group (\(systemError())): run this as its owner or as root")
            }
        }
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else {
                close(descriptor)
                throw failure("cannot be written (\(systemError()))")
            }
            offset += count
        }
        let synced = fchmod(descriptor, mode) == 0 && fsync(descriptor) == 0
        guard close(descriptor) == 0, synced else { throw failure("cannot be written (\(systemError()))") }
        if replacing {
            guard rename(temporary, path) == 0 else { throw failure("cannot be replaced (\(systemError()))") }
        } else {
            // link() never replaces: a file that appeared since the check above is kept.
            guard link(temporary, path) == 0 else {
                throw failure(errno == EEXIST ? "already exists; --force replaces it" : "cannot be written (\(systemError()))")
            }
            unlink(temporary)
        }
        written = true
    }
}
