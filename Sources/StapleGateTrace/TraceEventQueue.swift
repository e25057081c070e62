import CoreMetrics
import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The bounded queue between `record` (called on event loops) and a trace store's one writer.
/// Both stores (the SQLite file, the fleet's PostgreSQL) use it, so that they drop, count and
/// warn the same way: in `staplegate_trace_events_dropped_total`, and in the log when a failure
/// starts, then at most once a minute while it lasts ("trace store failing: N events dropped so
/// far: why"), and once when the store writes again.
///
/// Every call is a short lock and an append or a swap: nothing here waits for the writer.
public final class TraceEventQueue: Sendable {
    /// A message-trace switch waiting to be stored.
    public enum SwitchChange: Sendable, Equatable {
        case on(until: Date)
        case off
    }

    /// What the writer takes in one go.
    public struct Batch: Sendable {
        public var events: [TraceEvent]
        /// The newest change per device.
        public var switches: [String: SwitchChange]
        /// Resumed once the events and switches before them are written, or failed to be.
        public var barriers: [@Sendable () -> Void]

        public var isEmpty: Bool { events.isEmpty && switches.isEmpty }
    }

    /// Where events go (a path, a database URL without secrets), for the log.
    public let location: String
    public let capacity: Int
    /// How long `append` drops events after a failed write before letting one through again
    /// (unless a write succeeds first): while the store is away, each event costs one lock, not
    /// a wait in the queue.
    public let retryDelay: Duration
    private let logger: Logger
    private let writtenCounter: Counter
    private let droppedCounter: Counter
    private let state = NIOLockedValueBox(State())

    public init(location: String, capacity: Int, retryDelay: Duration, logger: Logger,
                metricsFactory: any MetricsFactory = MetricsSystem.factory) {
        self.location = location
        self.capacity = capacity
        self.retryDelay = retryDelay
        self.logger = logger
        writtenCounter = Counter(label: "staplegate_trace_events_written_total", factory: metricsFactory)
        droppedCounter = Counter(label: "staplegate_trace_events_dropped_total", factory: metricsFactory)
    }

    /// Queues `event`, or drops and counts it when the queue is full or the store is failing.
    /// Returns whether the writer must be woken (no drain is already due).
    public func append(_ event: TraceEvent) -> Bool {
        let outcome = state.withLockedValue { state -> Outcome in
            if let until = state.failingUntil {
                let now = ContinuousClock.now
                guard now >= until else { return .dropped(warning: state.drop(1, problem: nil, now: now)) }
                // Time to try again: this event is the probe.
                state.failingUntil = nil
            }
            guard state.pending.count < capacity else {
                return .dropped(warning: state.drop(1, problem: .queueFull(capacity), now: .now))
            }
            state.pending.append(event)
            return state.markDrainDue() ? .mustDrain : .queued
        }
        switch outcome {
        case .queued:
            return false
        case .mustDrain:
            return true
        case .dropped(let warning):
            droppedCounter.increment()
            if let warning { warn(warning) }
            return false
        }
    }

    /// Queues a switch change (never dropped: switches are few and the operator asked for
    /// them). Returns whether the writer must be woken.
    public func change(device: String, _ change: SwitchChange) -> Bool {
        state.withLockedValue { state in
            state.pendingSwitches[device] = change
            return state.markDrainDue()
        }
    }

    /// Queues `resume`, called once what is queued before it is written (or failed to be).
    public func addBarrier(_ resume: @escaping @Sendable () -> Void) -> Bool {
        state.withLockedValue { state in
            state.barriers.append(resume)
            return state.markDrainDue()
        }
    }

    /// Everything queued, for the writer: from here on `append` may wake it again.
    public func take() -> Batch {
        state.withLockedValue { state in
            state.drainQueued = false
            defer {
                state.pending = []
                state.pendingSwitches = [:]
                state.barriers = []
            }
            return Batch(events: state.pending, switches: state.pendingSwitches, barriers: state.barriers)
        }
    }

    /// Switch changes not yet written: a store that reads the switches back must lay these over
    /// what it reads, or a switch set a moment ago would seem to flicker off.
    public var pendingSwitches: [String: SwitchChange] { state.withLockedValue { $0.pendingSwitches } }

    /// The writer stored `batch`: counted, and the end of a failure said once.
    ///
    /// A batch can succeed before the retry delay ends: events recorded while a write was
    /// failing (before `failed`) are queued, and the next batch carries them. The failure is
    /// over then: `append` queues again at once, or the events after "writes again" would be
    /// dropped until the delay ran out, unsaid (within the minute of the last warning). A new
    /// failure is warned at once for the same reason.
    public func written(_ batch: Batch) {
        writtenCounter.increment(by: batch.events.count)
        let recovered = state.withLockedValue { state -> Int? in
            state.failingUntil = nil
            guard state.failing else { return nil }
            state.failing = false
            state.lastWarning = nil
            return state.dropped
        }
        if let recovered {
            logger.notice("trace store \(location) writes again after \(recovered) events dropped")
        }
    }

    /// The writer could not store `batch`: its events are dropped and counted, its switches wait
    /// for the next batch (anything set meanwhile is newer and wins), and `append` drops for
    /// `retryDelay`.
    public func failed(_ batch: Batch, problem: String) {
        let warning = state.withLockedValue { state -> String? in
            state.pendingSwitches.merge(batch.switches) { newer, _ in newer }
            state.failing = true
            state.failingUntil = .now + retryDelay
            return state.drop(batch.events.count, problem: .failure(problem), now: .now)
        }
        droppedCounter.increment(by: batch.events.count)
        if let warning { warn(warning) }
    }

    /// Events dropped since the store was opened (queue full, or a write failed).
    public var dropped: Int { state.withLockedValue { $0.dropped } }

    /// Events waiting for the writer.
    public var queued: Int { state.withLockedValue { $0.pending.count } }

    /// Logs off the caller's thread: `append` runs on event loops, and log handlers may write.
    private func warn(_ message: String) {
        let logger = logger
        DispatchQueue.global().async { logger.warning("\(message)") }
    }
}

private enum Outcome {
    case queued
    case mustDrain
    case dropped(warning: String?)
}

private enum DropProblem: Sendable, CustomStringConvertible {
    case queueFull(Int)
    case failure(String)

    var description: String {
        switch self {
        case .queueFull(let capacity): "the writer is behind (\(capacity) events queued)"
        case .failure(let message): message
        }
    }
}

private struct State: Sendable {
    var pending: [TraceEvent] = []
    var pendingSwitches: [String: TraceEventQueue.SwitchChange] = [:]
    var barriers: [@Sendable () -> Void] = []
    /// Whether a drain is already due: it will pick up what is added meanwhile.
    var drainQueued = false
    /// Set by a failed write: `append` drops without queueing until then (or a write succeeds).
    var failingUntil: ContinuousClock.Instant?
    /// Whether the last write failed (for the "writes again" notice).
    var failing = false
    var dropped = 0
    var lastProblem: DropProblem?
    /// Reset when the store writes again: the next failure is a new one.
    var lastWarning: ContinuousClock.Instant?

    /// Whether the caller must wake the writer (true once until the writer takes the batch).
    mutating func markDrainDue() -> Bool {
        guard !drainQueued else { return false }
        drainQueued = true
        return true
    }

    /// Counts `count` dropped events; returns the warning to log on the first drop and then at
    /// most once a minute.
    mutating func drop(_ count: Int, problem: DropProblem?, now: ContinuousClock.Instant) -> String? {
        dropped += count
        if let problem { lastProblem = problem }
        guard count > 0 else { return nil }
        if let last = lastWarning, now - last < .seconds(60) { return nil }
        lastWarning = now
        return "trace store failing: \(dropped) events dropped so far: \(lastProblem.map(\.description) ?? "unknown")"
    }
}
