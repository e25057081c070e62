import COpenSSL
import CStapleGateShim
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// TLS sessions kept in this process for devices to resume (stateful tickets in TLS 1.3,
/// session ids in TLS 1.2), used when no ticket keys are shared (`tls.session_ticket_keys`
/// unset): tickets would resume on this gateway only anyway, so nothing is lost by keeping the
/// session here, and sealing it costs more than the rest of the handshake's ticket work — the
/// profile of a full mutual-TLS handshake showed a quarter of its CPU in OpenSSL 3.0 decoding
/// the device's public key again while it copies the session into the ticket.
///
/// One cache serves every generation's `SSL_CTX`, so sessions survive a reload (not a restart).
/// It holds at most `capacity` sessions, oldest out first; each lives as long as its ticket
/// (the context's session timeout).
public final class ServerSessionCache: SessionResumption {
    /// An `SSL_SESSION` this cache holds a reference to.
    private struct Held: @unchecked Sendable {
        let session: OpaquePointer
    }

    private struct Contents {
        var sessions: [[UInt8]: Held] = [:]
        /// Session ids, oldest first; ids no longer in `sessions` are skipped when reached.
        var arrivals = CircularBuffer<[UInt8]>()
        /// `tls.session_cache_size`: a reload may change it.
        var capacity: Int
    }

    public var capacity: Int { contents.withLockedValue { $0.capacity } }
    private let contents: NIOLockedValueBox<Contents>

    /// OpenSSL's own default cache size (`tls.session_cache_size`). Each session holds the
    /// device's certificate and chain (shared with its connection while that lasts; about
    /// 5 KiB once it has ended, measured with a P-256 leaf and its CA); a device whose session
    /// was pushed out makes one full handshake.
    public static let defaultCapacity = 20_480

    public init(capacity: Int = ServerSessionCache.defaultCapacity) {
        precondition(capacity >= 1, "a session cache must hold at least one session")
        contents = NIOLockedValueBox(Contents(capacity: capacity))
    }

    /// Holds at most `capacity` sessions from now on; the oldest beyond it are dropped at once.
    public func resize(to capacity: Int) {
        precondition(capacity >= 1, "a session cache must hold at least one session")
        let released: [Held] = contents.withLockedValue { contents in
            contents.capacity = capacity
            var released: [Held] = []
            while contents.sessions.count > capacity, let oldest = contents.arrivals.popFirst() {
                if let held = contents.sessions.removeValue(forKey: oldest) { released.append(held) }
            }
            return released
        }
        for held in released { SSL_SESSION_free(held.session) }
    }

    deinit {
        contents.withLockedValue { contents in
            for held in contents.sessions.values { SSL_SESSION_free(held.session) }
        }
    }

    public var count: Int { contents.withLockedValue { $0.sessions.count } }

    public var summary: String {
        "sessions kept in this process (tls.session_ticket_keys not set): they resume across reloads, not restarts, and on this gateway only"
    }

    // MARK: Keeping and finding

    /// Keeps `session` (a reference the cache now owns) under its id, making room first.
    func keep(_ session: OpaquePointer, now: time_t = time(nil)) {
        let id = Self.id(of: session)
        guard !id.isEmpty else {  // nothing could name it
            SSL_SESSION_free(session)
            return
        }
        var released: [Held] = []
        contents.withLockedValue { contents in
            if let replaced = contents.sessions.updateValue(Held(session: session), forKey: id) {
                released.append(replaced)
            } else {
                contents.arrivals.append(id)
            }
            // The oldest first: every session has the same lifetime, so those that have
            // expired are at the front.
            while let oldest = contents.arrivals.first {
                guard let held = contents.sessions[oldest] else {
                    contents.arrivals.removeFirst()
                    continue
                }
                guard contents.sessions.count > contents.capacity || Self.hasExpired(held.session, now: now) else { break }
                contents.arrivals.removeFirst()
                contents.sessions.removeValue(forKey: oldest)
                released.append(held)
            }
        }
        for held in released { SSL_SESSION_free(held.session) }
    }

    /// The session named `id` with a reference for the caller, or nil (unknown, or expired:
    /// then dropped).
    func find(_ id: [UInt8], now: time_t = time(nil)) -> OpaquePointer? {
        let (found, expired): (OpaquePointer?, Held?) = contents.withLockedValue { contents in
            guard let held = contents.sessions[id] else { return (nil, nil) }
            if Self.hasExpired(held.session, now: now) { return (nil, contents.sessions.removeValue(forKey: id)) }
            // Referenced under the lock: another thread may push it out right after.
            SSL_SESSION_up_ref(held.session)
            return (held.session, nil)
        }
        if let expired { SSL_SESSION_free(expired.session) }  // the cache's reference, outside the lock
        return found
    }

    private static func hasExpired(_ session: OpaquePointer, now: time_t) -> Bool {
        SSL_SESSION_get_time(session) + SSL_SESSION_get_timeout(session) <= now
    }

    private static func id(of session: OpaquePointer) -> [UInt8] {
        var length: UInt32 = 0
        guard let bytes = SSL_SESSION_get_id(session, &length) else { return [] }
        return Array(UnsafeBufferPointer(start: bytes, count: Int(length)))
    }

    // MARK: OpenSSL

    static let exDataIndex: Int32 = sg_SSL_CTX_get_ex_new_index()

    public func install(on context: OpaquePointer) {
        // No sealed tickets: a TLS 1.3 ticket then carries a session id, as TLS 1.2's session id does.
        SSL_CTX_set_options(context, SG_SSL_OP_NO_TICKET)
        // Only this cache: OpenSSL's internal one is per SSL_CTX (lost at a reload) and is
        // looked up without asking the gate.
        _ = sg_SSL_CTX_set_session_cache_mode(context, Int(SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL))
        SSL_CTX_set_ex_data(context, Self.exDataIndex, Unmanaged.passUnretained(self).toOpaque())
        SSL_CTX_sess_set_new_cb(context, Self.newSessionCallback)
        SSL_CTX_sess_set_get_cb(context, Self.getSessionCallback)
    }

    /// Nothing to add: every lookup asks the gate when the connection has one (`getSessionCallback`).
    public func gate(on context: OpaquePointer) {}

    private static func cache(of ssl: OpaquePointer?) -> ServerSessionCache? {
        guard let ssl, let context = SSL_get_SSL_CTX(ssl), let pointer = SSL_CTX_get_ex_data(context, exDataIndex) else {
            return nil
        }
        return Unmanaged<ServerSessionCache>.fromOpaque(pointer).takeUnretainedValue()
    }

    /// A session to keep: the connection's own, shared with it while it lasts (a copy would
    /// cost every idle session a kilobyte). `SSLConnection` keeps OpenSSL from marking it
    /// unresumable when the connection ends without our close_notify.
    static let newSessionCallback: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32 = { ssl, session in
        guard let cache = cache(of: ssl), let session else { return 0 }
        cache.keep(session)
        return 1  // the reference OpenSSL took for this call is the cache's now
    }

    /// A device names a session to resume: handed over (with a reference for OpenSSL) only if
    /// the device certificate gate lets its certificate in now; otherwise a full handshake, and
    /// a full check, follow.
    static let getSessionCallback: @convention(c) (
        OpaquePointer?, UnsafePointer<UInt8>?, Int32, UnsafeMutablePointer<Int32>?
    ) -> OpaquePointer? = { ssl, id, length, copy in
        copy?.pointee = 0  // the reference returned is OpenSSL's to free
        guard let ssl, let cache = cache(of: ssl), let id, length > 0,
              let session = cache.find(Array(UnsafeBufferPointer(start: id, count: Int(length)))) else { return nil }
        guard HandshakeVerdictSlot.mayResume(session, on: ssl) else {
            SSL_SESSION_free(session)
            return nil
        }
        return session
    }
}
