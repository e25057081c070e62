import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// What the gateway knows of each broker — up or marked down, since when, the last error — shared
/// by every session on every event loop, and by readiness. One per gateway: it outlives reloads,
/// keyed by the broker's address, so a broker kept across a reload keeps its state.
///
/// Cheap on the hot path: a session takes the lock once to plan its connects (`plan`: a few
/// reads, no hashing); a connect to a broker that was up changes nothing and takes no lock. Only
/// changes of state (a failure, a broker back, a retry handed on) lock again; they are rare.
public final class BrokerHealth: Sendable {
    /// One broker as /readyz shows it.
    public struct Status: Sendable, Equatable {
        public let broker: UpstreamConfiguration.Endpoint
        /// false while marked down (including while one session tries it again).
        public let up: Bool
        /// When it went up or down; for a broker that never failed, when the gateway started using it.
        public let since: Date
        /// The last reason it could not be reached, kept after it is back.
        public let lastError: String?

        public init(broker: UpstreamConfiguration.Endpoint, up: Bool, since: Date, lastError: String?) {
            self.broker = broker
            self.up = up
            self.since = since
            self.lastError = lastError
        }
    }

    /// The brokers one session tries, in order (see `BrokerRanking`).
    public struct Plan: Sendable {
        public struct Candidate: Sendable {
            public let broker: UpstreamConfiguration.Endpoint
            /// Up when planned: connecting to it then changes nothing, so needs no lock.
            let wasUp: Bool
            /// This session was given the one retry of a broker whose down time is over; if it
            /// never gets to try it, the retry is handed back (`release`).
            let isTrial: Bool
            /// nil for a broker no longer configured (a session planned before a reload).
            let metrics: BrokerMetrics?
        }

        public let candidates: [Candidate]
        public var brokers: [UpstreamConfiguration.Endpoint] { candidates.map(\.broker) }
    }

    /// One broker's state. Transitions:
    /// - up → down (a connect failed): skipped until `retryAt` = now + `upstream.down_time`;
    /// - down → retrying (`retryAt` passed and a session planned it): that session tries it, the
    ///   others keep skipping it, so a burst of devices does not all wait on a broker still dead;
    /// - retrying → down with `retryAt` now (the session connected elsewhere first): the next
    ///   session gets the retry;
    /// - down or retrying → down (a connect failed again), `since` kept;
    /// - any → up (a connect succeeded).
    enum Condition: Equatable {
        case up(since: Date)
        case down(since: Date, retryAt: NIODeadline)
        case retrying(since: Date)

        var isUp: Bool { if case .up = self { true } else { false } }

        var since: Date {
            switch self {
            case let .up(since), let .down(since, _), let .retrying(since): since
            }
        }
    }

    private struct Entry {
        var condition: Condition
        var lastError: String?
        let metrics: BrokerMetrics
    }

    /// One broker as a plan found it.
    private struct Seen {
        /// Not marked down, or its retry was just claimed.
        let available: Bool
        let wasUp: Bool
        let isTrial: Bool
        let metrics: BrokerMetrics?
    }

    private struct State {
        var entries: [UpstreamConfiguration.Endpoint: Entry] = [:]
        /// The round-robin position, advanced once per round-robin session.
        var turn: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())
    private let factory: any MetricsFactory
    private let logger: Logger

    public init(logger: Logger, factory: any MetricsFactory = MetricsSystem.factory) {
        self.logger = logger
        self.factory = factory
    }

    /// The brokers configured now (at start and after each reload): new ones start up (their
    /// metrics exported from now on), kept ones keep their state, removed ones are forgotten and
    /// their series leave /metrics.
    public func track(_ brokers: [UpstreamConfiguration.Endpoint]) {
        let removed = state.withLockedValue { state -> [BrokerMetrics] in
            for broker in brokers where state.entries[broker] == nil {
                let metrics = BrokerMetrics(broker: broker.description, factory: factory)
                metrics.up.record(1)
                state.entries[broker] = Entry(condition: .up(since: Date()), lastError: nil, metrics: metrics)
            }
            let gone = state.entries.keys.filter { !brokers.contains($0) }
            return gone.compactMap { state.entries.removeValue(forKey: $0)?.metrics }
        }
        for metrics in removed { metrics.destroy() }
    }

    /// The order one session tries `upstream`'s brokers in, for `hashKey` (its client id).
    public func plan(for upstream: UpstreamConfiguration, hashKey: String, now: NIODeadline = .now()) -> Plan {
        // Under the lock only what must be read and claimed together; the ranking (hashing, for
        // client_id_hash) is worked out after.
        let (seen, turn) = state.withLockedValue { state -> ([Seen], UInt64) in
            let seen = upstream.brokers.map { broker -> Seen in
                guard let entry = state.entries[broker] else { return Seen(available: true, wasUp: true, isTrial: false, metrics: nil) }
                switch entry.condition {
                case .up:
                    return Seen(available: true, wasUp: true, isTrial: false, metrics: entry.metrics)
                case let .down(since, retryAt) where retryAt <= now:
                    state.entries[broker]?.condition = .retrying(since: since)
                    return Seen(available: true, wasUp: false, isTrial: true, metrics: entry.metrics)
                case .down, .retrying:
                    return Seen(available: false, wasUp: false, isTrial: false, metrics: entry.metrics)
                }
            }
            let turn = state.turn
            if upstream.balance == .roundRobin { state.turn &+= 1 }
            return (seen, turn)
        }
        let order = BrokerRanking.order(of: upstream.brokers, balance: upstream.balance, available: seen.map(\.available),
                                        hashKey: hashKey, turn: turn)
        return Plan(candidates: order.map { index in
            Plan.Candidate(broker: upstream.brokers[index], wasUp: seen[index].wasUp, isTrial: seen[index].isTrial,
                           metrics: seen[index].metrics)
        })
    }

    /// A connect to `broker` (a session's, or a readiness probe's) ended; `failure` is nil when
    /// it connected. A failure marks the broker down for `downTime`.
    public func record(_ broker: UpstreamConfiguration.Endpoint, failure: BrokerConnectFailure?, downTime: Duration,
                       now: NIODeadline = .now()) {
        let change = state.withLockedValue { state -> String? in
            guard var entry = state.entries[broker] else { return nil }  // no longer configured
            defer { state.entries[broker] = entry }
            let wasUp = entry.condition.isUp
            guard let failure else {
                guard !wasUp else { return nil }
                let downSince = entry.condition.since
                entry.condition = .up(since: Date())
                entry.metrics.up.record(1)
                return "broker \(broker) is reachable again (down since \(downSince.formatted(.iso8601)))"
            }
            entry.lastError = failure.reason
            entry.condition = .down(since: wasUp ? Date() : entry.condition.since, retryAt: now + TimeAmount(downTime))
            guard wasUp else { return nil }
            entry.metrics.up.record(0)
            return "broker \(broker) marked down for \(downTime): \(failure.reason)"
        }
        // Logged outside the lock; once per change, not per device.
        if let change { failure == nil ? logger.notice("\(change)") : logger.warning("\(change)") }
    }

    /// The session given `broker`'s retry connected elsewhere before trying it: the next session
    /// gets the retry.
    func release(_ broker: UpstreamConfiguration.Endpoint, now: NIODeadline = .now()) {
        state.withLockedValue { state in
            guard case let .retrying(since)? = state.entries[broker]?.condition else { return }
            state.entries[broker]?.condition = .down(since: since, retryAt: now)
        }
    }

    /// `brokers`' states, in the order given (brokers not tracked show as up since now).
    public func statuses(of brokers: [UpstreamConfiguration.Endpoint]) -> [Status] {
        state.withLockedValue { state in
            brokers.map { broker in
                guard let entry = state.entries[broker] else { return Status(broker: broker, up: true, since: Date(), lastError: nil) }
                return Status(broker: broker, up: entry.condition.isUp, since: entry.condition.since, lastError: entry.lastError)
            }
        }
    }

    /// For tests: one broker's condition.
    func condition(of broker: UpstreamConfiguration.Endpoint) -> Condition? {
        state.withLockedValue { $0.entries[broker]?.condition }
    }
}
