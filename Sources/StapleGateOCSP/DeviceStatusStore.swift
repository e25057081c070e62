import Foundation

/// Where verified device statuses outlive the process and, with a shared database, the gateway:
/// what `OCSPStatusCache` keeps behind its in-memory LRU. One implementation is chosen once at
/// start (the SQLite file in the state directory, or PostgreSQL shared by a fleet of gateways);
/// nothing else knows which.
///
/// Writes never block the caller, who may be on an event loop in the middle of a handshake:
/// they are queued and applied in order by one writer, a batch per transaction. A failed batch
/// is counted and kept as `lastWriteError`; the in-memory cache still answers meanwhile.
public protocol DeviceStatusStore: AnyObject, Sendable {
    /// Names the store in messages and logs: a file path, or a database URL without password.
    var location: String { get }

    /// Whether other gateways write to it too (a fleet's database). If not, a miss in memory is
    /// a miss here as well unless the memory cache has let go of something
    /// (`OCSPStatusCache.lookUpInStore` then skips the read).
    var isShared: Bool { get }

    /// Queues an upsert of `status`; failures are ignored (only verified answers are kept).
    func save(_ status: CachedOCSPStatus)

    /// Queues the deletion of the row for `certID`, if there is one.
    func delete(_ certID: CertID)

    /// Blocks until everything queued before the call is written (or failed to be).
    func flush()

    /// Every row still valid at `now`, most recently checked first (the warm-up at start).
    func loadAll(notExpiredAt now: Date) throws -> [CachedOCSPStatus]

    /// Every row `selector` names, expired or not, most recently checked first, once what is
    /// queued has been written: what an operator's recheck may ask about.
    func statuses(matching selector: CertificateSelector) async throws -> [CachedOCSPStatus]

    /// The row for `certID` if it is still valid at `now`: on a miss in memory, another
    /// gateway of the fleet may have asked the responder already.
    func status(for certID: CertID, now: Date) async throws -> CachedOCSPStatus?

    /// How many batches failed to be written since the store was opened.
    var writeErrorCount: Int { get }

    /// The last write failure in words, for the caller to log; nil if none happened.
    var lastWriteError: String? { get }
}
