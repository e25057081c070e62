import Foundation
import NIOConcurrencyHelpers

/// The device-status cache: the last answer (or recent failure) per device certificate, so that a
/// device reconnecting every few seconds does not cost a responder round trip each time.
///
/// It is read on event loop threads during TLS handshakes, so a lookup is a hash lookup plus a few
/// index updates under a lock: a bounded LRU made of a dictionary into an array of nodes linked
/// by index (no per-entry allocation, no scan). Least recently used entries go first when full,
/// which keeps the devices that actually connect.
///
/// With a store, verified answers are also written there (without blocking: see
/// `DeviceStatusStore`: a SQLite file, or PostgreSQL shared by a fleet), and
/// `loadPersisted(now:)` warms the cache at startup.
public final class OCSPStatusCache: Sendable {
    public let capacity: Int
    public let store: (any DeviceStatusStore)?
    private let lru: NIOLockedValueBox<LRU>

    public init(capacity: Int, store: (any DeviceStatusStore)? = nil) {
        precondition(capacity > 0, "the OCSP status cache needs room for at least one entry")
        self.capacity = capacity
        self.store = store
        lru = NIOLockedValueBox(LRU(capacity: capacity))
    }

    /// The entry for `certID` if it is still valid at `now` (it then becomes the most recently
    /// used). An entry that expired is dropped: the caller is about to ask the responder anyway.
    public func lookup(_ certID: CertID, now: Date) -> CachedOCSPStatus? {
        lru.withLockedValue { lru in
            guard let slot = lru.slots[certID], let status = lru.nodes[slot].status else { return nil }
            guard status.expiresAt > now else {
                lru.remove(slot: slot)
                return nil
            }
            lru.moveToNewest(slot)
            return status
        }
    }

    /// The entry for `certID` even if expired, without making it more recently used: background
    /// rechecks look at what they refresh without keeping it alive.
    public func peek(_ certID: CertID) -> CachedOCSPStatus? {
        lru.withLockedValue { lru in
            lru.slots[certID].flatMap { lru.nodes[$0].status }
        }
    }

    /// Stores `status` as the newest entry for its CertID, evicting the least recently used one
    /// when full. Answers are also persisted; a failure replaces the entry in memory only, so the
    /// store keeps the last verified answer for the next start.
    public func insert(_ status: CachedOCSPStatus, now: Date = Date()) {
        lru.withLockedValue { lru in
            if let slot = lru.slots[status.certID], let held = lru.nodes[slot].status,
               !Self.replaces(status, held, now: now) { return }
            lru.put(status)
            lru.discarded.remove(status.certID)
            // Queued while holding the lock (it only appends to the store's buffer), so that two
            // inserts for the same certificate reach the disk in the order they reached memory.
            if !status.isFailure { store?.save(status) }
        }
    }

    /// Whether `status` may take the place of `held`. A lookup that was in flight when a
    /// recheck got a newer answer finishes after it: its answer, produced earlier by the
    /// responder (an older thisUpdate), must not bring back "good" for a certificate revoked
    /// since, nor may its failure wipe a revocation still valid (under `unreachable: allow` that
    /// would admit the device).
    static func replaces(_ status: CachedOCSPStatus, _ held: CachedOCSPStatus, now: Date) -> Bool {
        if case .revoked = held.outcome, held.expiresAt > now, status.isFailure { return false }
        if let new = status.thisUpdate, let old = held.thisUpdate, new < old { return false }
        return true
    }

    /// On a miss in memory: the store's row for `certID` if it is still valid at `now` (in a
    /// fleet, another gateway may have asked the responder already; on its own, the row may be
    /// one evicted from memory or left out at startup), which then becomes the
    /// most recently used entry in memory. It is not written back: it came from there. Nil
    /// without a store, when the store has nothing, fails, or takes longer than `timeout`: the
    /// caller then asks the responder, as it would without a store.
    public func lookUpInStore(_ certID: CertID, now: Date, timeout: Duration) async -> CachedOCSPStatus? {
        guard let store, lru.withLockedValue({ !$0.discarded.contains(certID) && (store.isShared || $0.storeMayHoldMore) }) else {
            return nil
        }
        let found = await FirstAnswer.within(timeout) { try? await store.status(for: certID, now: now) }
        guard let found, found.expiresAt > now, !found.isFailure else { return nil }
        return lru.withLockedValue { lru -> CachedOCSPStatus? in
            // Discarded meanwhile: the row read may be the one whose deletion is still queued.
            guard !lru.discarded.contains(certID) else { return nil }
            // An entry that arrived meanwhile (this gateway's own answer) is at least as good.
            if let slot = lru.slots[certID], let current = lru.nodes[slot].status, current.checkedAt >= found.checkedAt {
                return current
            }
            lru.put(found)
            return found
        }
    }

    /// Keeps `status`, an answer another gateway of the fleet got and wrote to the store, in
    /// memory only (it is in the store already), unless what is held is newer.
    public func adopt(_ status: CachedOCSPStatus) {
        lru.withLockedValue { lru in
            if let slot = lru.slots[status.certID], let current = lru.nodes[slot].status, current.checkedAt > status.checkedAt { return }
            lru.put(status)
            lru.discarded.remove(status.certID)
        }
    }

    /// Every entry `selector` names, expired or not, newest first: those in memory, then those
    /// only the store still has (evicted from memory, or beyond the capacity at startup), so
    /// that an operator's recheck finds every certificate the gateway knows for a device.
    public func statuses(matching selector: CertificateSelector) async throws -> [CachedOCSPStatus] {
        let inMemory = entries().filter(selector.matches)
        guard let store else { return inMemory }
        let seen = Set(inMemory.map(\.certID))
        let stored = try await store.statuses(matching: selector)
        return inMemory + stored.filter { !seen.contains($0.certID) }
    }

    /// Forgets the verified answer for `certID`, in memory and on disk, so that the device's
    /// next connect asks the responder: after an operator's recheck got no answer, the old
    /// "good" must not keep admitting the device. A failure entry in memory stays (it expires
    /// on its own, and keeps hard-fail devices from hammering the responder meanwhile).
    public func discardAnswer(for certID: CertID) {
        lru.withLockedValue { lru in
            if let slot = lru.slots[certID], let status = lru.nodes[slot].status, !status.isFailure {
                lru.remove(slot: slot)
            }
            // Until a new answer arrives, the store's row (its deletion only queued here, or
            // another gateway's copy) must not bring the old answer back on a miss.
            if store != nil { lru.discarded.insert(certID) }
            store?.delete(certID)
        }
    }

    /// Every entry, expired or not, most recently used first (for listings).
    public func entries() -> [CachedOCSPStatus] {
        lru.withLockedValue { lru in
            var result: [CachedOCSPStatus] = []
            result.reserveCapacity(lru.slots.count)
            var slot = lru.newest
            while slot != LRU.none {
                if let status = lru.nodes[slot].status { result.append(status) }
                slot = lru.nodes[slot].older
            }
            return result
        }
    }

    public var count: Int {
        lru.withLockedValue { $0.slots.count }
    }

    /// Fills the cache from the store with the answers still valid at `now`, the most recently
    /// checked becoming the most recently used, up to the capacity. Meant for startup: an entry
    /// already in memory that is at least as recent as the stored one is kept. Returns how many
    /// entries were loaded (0 without a store).
    public func loadPersisted(now: Date) throws -> Int {
        guard let store else { return 0 }
        // Newest first, so the prefix is what an LRU of this capacity would have kept.
        let all = try store.loadAll(notExpiredAt: now)
        let stored = all.prefix(capacity)
        return lru.withLockedValue { lru in
            // Rows left out stay findable on a miss; if none were, a miss need not look there.
            lru.warmedWithEveryRow = all.count <= capacity
            var loaded = 0
            // Oldest first, so that the most recently checked ends up the most recently used.
            for status in stored.reversed() {
                if let slot = lru.slots[status.certID], let current = lru.nodes[slot].status,
                   current.checkedAt >= status.checkedAt {
                    continue
                }
                lru.put(status)
                loaded += 1
            }
            return loaded
        }
    }
}

/// The LRU proper, only ever touched under the cache's lock. Nodes live in one array and link to
/// each other by index; freed slots are reused, so after warm-up nothing is allocated per insert
/// beyond the dictionary's own storage.
private struct LRU: Sendable {
    static let none = -1

    struct Node: Sendable {
        /// Nil in a free slot, so that a removed entry's arrays are released at once.
        var status: CachedOCSPStatus?
        var newer: Int
        var older: Int
    }

    let capacity: Int
    var nodes: [Node] = []
    var slots: [CertID: Int] = [:]
    var freeSlots: [Int] = []
    /// CertIDs whose answer an operator's recheck discarded, until a new one is inserted:
    /// `lookUpInStore` skips them. Bounded by the rechecks that got no answer.
    var discarded: Set<CertID> = []
    var newest = LRU.none
    var oldest = LRU.none
    /// The start's warm-up loaded every valid row of the store.
    var warmedWithEveryRow = false
    /// An entry was pushed out to make room (its row stays in the store).
    var evicted = false
    /// Whether the store may hold valid rows memory does not.
    var storeMayHoldMore: Bool { !warmedWithEveryRow || evicted }

    init(capacity: Int) {
        self.capacity = capacity
        // Bounded by the capacity, so reserve it once rather than growing under the lock.
        let initial = min(capacity, 4096)
        nodes.reserveCapacity(initial)
        slots.reserveCapacity(initial)
    }

    /// Replaces or adds `status` as the newest entry, evicting the oldest ones beyond capacity.
    mutating func put(_ status: CachedOCSPStatus) {
        if let slot = slots[status.certID] {
            nodes[slot].status = status
            moveToNewest(slot)
            return
        }
        while slots.count >= capacity, oldest != LRU.none {
            remove(slot: oldest)
            evicted = true
        }
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
            nodes[slot] = Node(status: status, newer: LRU.none, older: LRU.none)
        } else {
            slot = nodes.count
            nodes.append(Node(status: status, newer: LRU.none, older: LRU.none))
        }
        slots[status.certID] = slot
        linkAsNewest(slot)
    }

    mutating func moveToNewest(_ slot: Int) {
        guard slot != newest else { return }
        unlink(slot)
        linkAsNewest(slot)
    }

    mutating func remove(slot: Int) {
        guard let status = nodes[slot].status else { return }
        unlink(slot)
        slots[status.certID] = nil
        nodes[slot].status = nil
        freeSlots.append(slot)
    }

    private mutating func linkAsNewest(_ slot: Int) {
        nodes[slot].newer = LRU.none
        nodes[slot].older = newest
        if newest != LRU.none { nodes[newest].newer = slot }
        newest = slot
        if oldest == LRU.none { oldest = slot }
    }

    private mutating func unlink(_ slot: Int) {
        let newer = nodes[slot].newer
        let older = nodes[slot].older
        if newer != LRU.none { nodes[newer].older = older } else { newest = older }
        if older != LRU.none { nodes[older].newer = newer } else { oldest = newer }
        nodes[slot].newer = LRU.none
        nodes[slot].older = LRU.none
    }
}
