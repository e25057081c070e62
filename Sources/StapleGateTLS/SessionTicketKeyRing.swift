import COpenSSL
import CStapleGateShim
import NIOConcurrencyHelpers

/// The keys a `ServerContext` encrypts and decrypts session tickets with, in place of the random
/// keys OpenSSL makes for each `SSL_CTX` (which die with every reload and restart, and differ
/// between the gateways behind one load balancer). The first key encrypts every new ticket;
/// every key decrypts.
///
/// Used when the keys are shared (a file, or the fleet's): without shared keys the process keeps
/// the sessions itself (`ServerSessionCache`). A ring from a file never changes. A fleet ring
/// (`tls.session_ticket_keys: fleet`) is swapped in place by `FleetTicketKeys` whenever the
/// fleet's keys change, so the `SSL_CTX`s holding it pick the new keys up without a reload; the
/// key callback takes one snapshot of the keys under a lock held for a copy of one array
/// reference, never waiting on anything else (the lock is never held across I/O).
public final class SessionTicketKeyRing: SessionResumption {
    /// Where the keys came from, for the log and `check-config`.
    public enum Source: Sendable, Equatable {
        /// `tls.session_ticket_keys`: shared by every gateway given the same file, and by restarts.
        case file(String)
        /// `tls.session_ticket_keys: fleet`: rotated by the fleet through its database (named
        /// here without secrets).
        case fleet(String)
    }

    /// What the ring holds. File rings stay `fixed`; a fleet ring starts `waiting`
    /// and moves to `shared` once (then `shared → shared` at each change of the fleet's keys).
    enum Contents: Sendable {
        case fixed([SessionTicketKey])
        /// A random key made at start, until the fleet's database first answers: handshakes go
        /// on, tickets resume on this gateway only.
        case waiting(SessionTicketKey)
        /// The fleet's keys, then the start key kept for decryption.
        case shared([SessionTicketKey], startKey: SessionTicketKey)

        var keys: [SessionTicketKey] {
            switch self {
            case let .fixed(keys): keys
            case let .waiting(key): [key]
            case let .shared(keys, _): keys
            }
        }
    }

    /// A ticket's first bytes name its key: a linear search over this many names stays cheaper
    /// than the ticket's own decryption.
    public static let maximumKeys = 32

    public let source: Source
    private let contents: NIOLockedValueBox<Contents>

    /// The first one encrypts.
    public var keys: [SessionTicketKey] { contents.withLockedValue { $0.keys } }

    /// `keys` must be 1 to `maximumKeys` keys with distinct names (`SessionTicketKeyFile` checks
    /// that and says which line is at fault).
    init(keys: [SessionTicketKey], source: Source) {
        Self.check(keys)
        self.source = source
        if case .fleet = source { contents = NIOLockedValueBox(.waiting(keys[0])) } else { contents = NIOLockedValueBox(.fixed(keys)) }
    }

    private static func check(_ keys: [SessionTicketKey]) {
        precondition((1...Self.maximumKeys).contains(keys.count), "a key ring holds 1 to \(Self.maximumKeys) keys")
        precondition(Set(keys.map { Array($0.name) }).count == keys.count, "session ticket key names must differ")
    }

    /// A ring for the fleet's keys at `location`, holding a random key until `share(_:)`.
    public static func fleet(location: String) -> SessionTicketKeyRing {
        SessionTicketKeyRing(keys: [.random()], source: .fleet(location))
    }

    /// Fleet rings only: from now on, new tickets are encrypted under `keys[0]` and every key of
    /// `keys` decrypts. The key made at start stays last (while there is room), so tickets
    /// issued before the database answered still resume here. 1 to `maximumKeys - 1` keys.
    public func share(_ keys: [SessionTicketKey]) {
        guard case .fleet = source else { preconditionFailure("only a fleet ring changes") }
        contents.withLockedValue { contents in
            let startKey: SessionTicketKey
            switch contents {
            case let .waiting(key), let .shared(_, key): startKey = key
            case .fixed: preconditionFailure("a fleet ring is never fixed")
            }
            var next = Array(keys.prefix(Self.maximumKeys - 1))
            if !next.contains(where: { $0.name == startKey.name }) { next.append(startKey) }
            Self.check(next)
            contents = .shared(next, startKey: startKey)
        }
    }

    /// Whether a fleet ring holds the fleet's keys yet (always true for the other sources).
    public var isShared: Bool {
        guard case .fleet = source else { return true }
        return contents.withLockedValue { if case .waiting = $0 { false } else { true } }
    }

    /// The key that encrypts new tickets.
    public var encryptionKey: SessionTicketKey { keys[0] }

    /// For the log: how many keys, from where, and which one names new tickets.
    public var summary: String {
        let keys = self.keys
        switch source {
        case let .file(path):
            return "\(keys.count) key(s) from \(path), new tickets under key \(keys[0].shortName)"
        case let .fleet(location):
            guard isShared else {
                return "fleet keys not loaded yet from \(location): a random key made at start meanwhile (tickets resume on this gateway only until the database answers)"
            }
            return "fleet keys from \(location), new tickets under key \(keys[0].shortName) (\(keys.count) key(s) held, the one made at start included)"
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
        Self.lookUp(name: name, in: keys)
    }

    static func lookUp(name: UnsafePointer<UInt8>, in keys: [SessionTicketKey]) -> Lookup {
        guard let index = keys.firstIndex(where: { $0.isNamed(name) }) else { return .unknown }
        return index == 0 ? .current(keys[0]) : .older(keys[index])
    }

    // MARK: OpenSSL

    static let exDataIndex: Int32 = sg_SSL_CTX_get_ex_new_index()

    /// Makes `context` use this ring for every ticket.
    public func install(on context: OpaquePointer) {
        SSL_CTX_set_ex_data(context, Self.exDataIndex, Unmanaged.passUnretained(self).toOpaque())
        _ = sg_SSL_CTX_set_tlsext_ticket_key_evp_cb(context, Self.keyCallback)
    }

    public func gate(on context: OpaquePointer) {
        HandshakeVerdictSlot.gateSealedTickets(on: context)
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
        // One snapshot for the whole call: a fleet ring may be swapped meanwhile.
        let keys = ring.keys
        if encrypting == 1 {
            let key = keys[0]
            key.name.withUnsafeBufferPointer { name.update(from: $0.baseAddress!, count: SessionTicketKey.nameLength) }
            let ivLength = EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())
            guard RAND_bytes(iv, ivLength) == 1,
                  key.prepare(cipher: cipher, mac: mac, iv: iv, encrypting: true) else { return -1 }
            return 1
        }
        switch lookUp(name: name, in: keys) {
        case let .current(key):
            return key.prepare(cipher: cipher, mac: mac, iv: iv, encrypting: false) ? 1 : -1
        case let .older(key):
            return key.prepare(cipher: cipher, mac: mac, iv: iv, encrypting: false) ? 2 : -1
        case .unknown:
            return 0
        }
    }
}
