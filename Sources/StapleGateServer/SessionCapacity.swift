import Logging
import StapleGateConfig
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How many device sessions the gateway holds at once (`listen.max_sessions`). Each session
/// holds two descriptors (the device's and the broker's), so past the open-files limit new
/// sessions would fail anyway, with "too many open files" and no word to the device; a cap
/// below it refuses them cleanly instead, with a CONNACK the device understands.
public enum SessionCapacity {
    /// Descriptors kept for everything but sessions: the listener, the control socket, the
    /// SQLite stores, OCSP requests, and connections still in their TLS handshake.
    public static let descriptorReserve = 128
    public static let descriptorsPerSession = 2

    /// `auto`: what the open-files limit leaves room for.
    public static func automatic(openFileLimit: UInt64) -> Int {
        let usable = openFileLimit > UInt64(descriptorReserve) ? openFileLimit - UInt64(descriptorReserve) : 0
        let sessions = usable / UInt64(descriptorsPerSession)
        return Int(clamping: max(1, sessions))
    }

    /// The cap for `limit` under the process's current open-files soft limit (read after it has
    /// been raised at start), logged; nil (no cap) only if the limit cannot be read.
    public static func resolve(_ limit: SessionLimit, logger: Logger) -> Int? {
        let openFiles = currentOpenFileLimit()
        switch limit {
        case .automatic:
            guard let openFiles else {
                logger.warning("cannot read the open-files limit; device sessions are not capped")
                return nil
            }
            let capacity = automatic(openFileLimit: openFiles)
            logger.notice("at most \(capacity) device sessions at once (listen.max_sessions: auto; open-files limit \(openFiles), \(descriptorReserve) kept in reserve, \(descriptorsPerSession) per session)")
            return capacity
        case let .fixed(capacity):
            logger.notice("at most \(capacity) device sessions at once (listen.max_sessions)")
            if let openFiles, capacity > automatic(openFileLimit: openFiles) {
                logger.warning("listen.max_sessions \(capacity) needs about \(capacity * descriptorsPerSession + descriptorReserve) open files, but the limit is \(openFiles): sessions beyond \(automatic(openFileLimit: openFiles)) may fail with \"too many open files\" (raise LimitNOFILE)")
            }
            return capacity
        }
    }

    /// RLIMIT_NOFILE's soft limit, nil if unreadable or unlimited (RLIM_INFINITY, all ones).
    static func currentOpenFileLimit() -> UInt64? {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        return UInt64(limit.rlim_cur)
    }
}
