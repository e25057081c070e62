import Foundation

/// A failure to open, write or read the trace store. The message names the file or database,
/// because the operator's fix (permissions, disk, a stray folder, a database away) is about it.
public struct TraceStoreError: Error, Sendable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// Where a gateway's per-device trace events go, so that "why can't device X connect?" has an
/// answer after the fact. Two implementations, chosen once at start (`FleetStores.trace`): the
/// gateway's own SQLite file (`SQLiteTraceStore`), or the fleet's PostgreSQL database, shared
/// by every gateway (`PostgresTraceStore`).
///
/// The rule both keep: `record` and `messageTraceUntil` run on event loops and never wait for
/// I/O. Events go to a bounded queue (`TraceEventQueue`) that one writer drains in batches; a
/// slow or failing store drops events and counts them rather than slowing MQTT traffic.
public protocol TraceStore: AnyObject, Sendable {
    /// The file or database (URL without secrets), for messages.
    var location: String { get }

    /// Queues `event`, or drops and counts it. Never blocks.
    func record(_ event: TraceEvent)

    /// Events dropped since the store was opened (queue full, or a write failed).
    var droppedEvents: Int { get }

    /// Events waiting for the writer.
    var queuedEvents: Int { get }

    /// Blocks until everything queued before the call is written (or failed to be). Never on
    /// an event loop: at exit, and in tests.
    func flush()

    /// Records PUBLISH events for `device` until `until`, on every gateway the store reaches
    /// (this one with a file of its own; the whole fleet with the shared database).
    func enableMessageTrace(device: String, until: Date)

    func disableMessageTrace(device: String)

    /// When message trace for `device` ends, or nil if it is off (or over) at `now`. Called at
    /// every device session start: a lookup in memory, never I/O.
    func messageTraceUntil(device: String, now: Date) -> Date?

    /// Every device with message trace on at `now`, and until when.
    func messageTraces(now: Date) -> [String: Date]

    /// Deletes events older than the retention before `now`, then the oldest while the store is
    /// over its size cap. Returns false when another gateway of the fleet is doing it now.
    @discardableResult
    func prune(now: Date) throws -> Bool

    /// Read access to what the store holds (with the shared database: the whole fleet's events).
    func reader() throws -> any TraceReading
}

extension TraceStore {
    /// `flush()` without holding the caller's thread: for a reader in this process (the admin
    /// listener) that must show everything recorded so far, as the writer lets events gather
    /// for a moment before it writes them.
    public func written() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                self.flush()
                done.resume()
            }
        }
    }

    public func messageTraceUntil(device: String) -> Date? {
        messageTraceUntil(device: device, now: Date())
    }

    public func messageTraces() -> [String: Date] {
        messageTraces(now: Date())
    }
}

/// Queries for `staplegate trace` and `/devices/ID/trace`. Results come oldest first.
public protocol TraceReading: Sendable {
    /// The file or database read (URL without secrets), for messages.
    var location: String { get }

    /// The newest `limit` events of `device` at or after `since`, oldest first.
    func events(device: String, since: Date?, limit: Int) async throws -> [TraceEvent]

    /// The newest `limit` failures of any device at or after `since`, oldest first.
    func failures(since: Date?, limit: Int) async throws -> [TraceEvent]

    /// Every device with events at or after `since`, most recently seen first.
    func devices(since: Date?) async throws -> [TraceDeviceSummary]

    /// For `--follow`: a cursor placed now, before the first events are read and shown, so that
    /// everything stored from here on is returned by its `next()`, exactly once.
    func follower(device: String) async throws -> any TraceFollowing
}

extension TraceReading {
    public func events(device: String, since: Date? = nil) async throws -> [TraceEvent] {
        try await events(device: device, since: since, limit: 1000)
    }

    public func failures(since: Date? = nil) async throws -> [TraceEvent] {
        try await failures(since: since, limit: 1000)
    }
}

/// `staplegate trace DEVICE --follow`: new events of one device, each returned once.
public protocol TraceFollowing: AnyObject, Sendable {
    /// Events already shown (the first listing): not returned again.
    func markShown(_ events: [TraceEvent])

    /// The device's events stored since the previous call and not returned (or shown) before.
    func next() async throws -> [TraceEvent]
}

/// One line of `staplegate trace --devices`.
public struct TraceDeviceSummary: Sendable, Equatable {
    public var device: String
    public var lastSeen: Date
    public var events: Int
    public var failures: Int

    public init(device: String, lastSeen: Date, events: Int, failures: Int) {
        self.device = device
        self.lastSeen = lastSeen
        self.events = events
        self.failures = failures
    }
}
