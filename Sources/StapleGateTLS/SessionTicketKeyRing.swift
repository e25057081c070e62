import COpenSSL
import CStapleGateShim

/// The keys a `ServerContext` encrypts and decrypts session tickets with, in place of the random
/// keys OpenSSL makes for each `SSL_CTX` (which die with every reload and restart, and differ
/// between the gateways behind one load balancer). The first key encrypts every new ticket;
/// every key decrypts. Immutable, so the key callback reads it from any event loop unlocked.
public final class SessionTicketKeyRing: Sendable {
    /// Where the keys came from, for the log and `check-config`.
    public enum Source: Sendable, Equatable {
        /// `tls.session_ticket_keys`: shared by every gateway given the same file, and by restarts.
        case file(String)
        /// Made at start, kept across reloads: tickets survive a reload, not a restart, and resume
        /// on this gateway only.
        case process
    }

    /// A ticket's first bytes name its key: a linear search over this many names stays cheaper
    /// than the ticket's own decryption.
    public static let maximumKeys = 32

    /// The first one encrypts.
    public let keys: [SessionTicketKey]
    public let source: Source

    /// `keys` must be 1 to `maximumKeys` keys with distinct names (`SessionTicketKeyFile` checks
    /// that and says which line is at fault).
    init(keys: [SessionTicketKey], source: Source) {
        precondition((1...Self.maximumKeys).contains(keys.count), "a key ring holds 1 to \(Self.maximumKeys) keys")
        precondition(Set(keys.map { Array($0.name) }).count == keys.count, "session ticket key names must differ")
        self.keys = keys
        self.source = source
    }

    /// One fresh key, for a gateway without `tls.session_ticket_keys`.
    public static func random() -> SessionTicketKeyRing {
        SessionTicketKeyRing(keys: [.random()], source: .process)
    }

    /// The key that encrypts new tickets.
    public var encryptionKey: SessionTicketKey { keys[0] }

    /// For the log: how many keys, from where, and which one names new tickets.
    public var summary: String {
        switch source {
        case let .file(path):
            "\(keys.count) key(s) from \(path), new tickets under key \(encryptionKey.shortName)"
        case .process:
            "a random key made at start (tls.session_ticket_keys not set): tickets resume across reloads, not restarts, and on this gateway only"
        }
    }

    /// How a ticket's key name was found.
    enum Lookup {
        /// The key that encrypts now.
        case current(SessionTicketKey)
        /// A key kept for decryption only: the ticket is good, but its device gets a new one.
        case older(SessionTicketKey)
        /// No key of ours (removed from the file, another fleet's, or made by another process).
        case unknown
    }

    func lookUp(name: UnsafePointer<UInt8>) -> Lookup {
        guard let index = keys.firstIndex(where: { $0.isNamed(name) }) else { return .unknown }
        return index == 0 ? .current(keys[0]) : .older(keys[index])
    }

    // MARK: OpenSSL

    static let exDataIndex: Int32 = sg_SSL_CTX_get_ex_new_index()

    /// Makes `context` use this ring for every ticket. The context keeps an unretained pointer:
    /// its `ServerContext` holds the ring for as long as it holds the `SSL_CTX`.
    func install(on context: OpaquePointer) {
        SSL_CTX_set_ex_data(context, Self.exDataIndex, Unmanaged.passUnretained(self).toOpaque())
        _ = sg_SSL_CTX_set_tlsext_ticket_key_evp_cb(context, Self.keyCallback)
    }

    /// OpenSSL's ticket key callback (`SSL_CTX_set_tlsext_ticket_key_evp_cb`). Encrypting: names
    /// the first key, draws a fresh IV and keys the contexts; 1. Decrypting: 1 for the current
    /// key, 2 for an older one (OpenSSL then issues a ticket under the current key), 0 for a
    /// name we do not hold (a full handshake), -1 when OpenSSL fails. It only encrypts and
    /// decrypts: whether a decrypted session may be resumed is the ticket decrypt callback's
    /// question (`HandshakeVerdictSlot.ticketDecryptCallback`), asked after this.
    /// May run inside the handshake's async job, on its small stack: nothing heavy here.
    static let keyCallback: @convention(c) (
        OpaquePointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt8>?, OpaquePointer?, OpaquePointer?, Int32
    ) -> Int32 = { ssl, name, iv, cipher, mac, encrypting in
        guard let ssl, let name, let iv, let cipher, let mac, let context = SSL_get_SSL_CTX(ssl),
              let pointer = SSL_CTX_get_ex_data(context, exDataIndex) else { return -1 }
        let ring = Unmanaged<SessionTicketKeyRing>.fromOpaque(pointer).takeUnretainedValue()
        if encrypting == 1 {
            let key = ring.encryptionKey
            key.name.withUnsafeBufferPointer { name.update(from: $0.baseAddress!, count: SessionTicketKey.nameLength) }
            let ivLength = EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())
            guard RAND_bytes(iv, ivLength) == 1,
                  key.prepare(cipher: cipher, mac: mac, iv: iv, encrypting: true) else { return -1 }
            return 1
        }
        switch ring.lookUp(name: name) {
        case let .current(key):
            return key.prepare(cipher: cipher, mac: mac, iv: iv, encrypting: false) ? 1 : -1
        case let .older(key):
            return key.prepare(cipher: cipher, mac: mac, iv: iv, encrypting: false) ? 2 : -1
        case .unknown:
            return 0
        }
    }
}
