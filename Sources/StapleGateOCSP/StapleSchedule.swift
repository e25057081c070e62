import Foundation
import StapleGateTLS

/// When to refresh one certificate's staple and which response may be served, as a pure state
/// machine: the stapling service feeds it fetch outcomes and the time, and it answers with the
/// next refresh time and the staple to serve. Keeping the clock out makes every rule testable.
///
/// The rules (issue: "OCSP stapling for the gateway's own certificate"):
/// - refresh once half of thisUpdate..nextUpdate has passed (± jitter, so a fleet of gateways
///   does not hit the responder in step), or after `maximumInterval`, whichever is first;
/// - a response without nextUpdate is refreshed at `maximumInterval`;
/// - on failure, retry with exponential backoff, keeping the last good response;
/// - never serve a response whose nextUpdate has passed; "revoked" is served (it is the truth),
///   "unknown" is not (it would make clients fail for no reason a newer answer could not fix).
public struct StapleSchedule: Sendable {
    public struct Timing: Sendable, Equatable {
        public var maximumInterval: Duration
        public var minimumRetryDelay: Duration
        public var maximumRetryDelay: Duration
        /// Fraction of the planned delay to spread refreshes by, e.g. 0.1 for ±10 %.
        public var jitter: Double

        public init(maximumInterval: Duration = .seconds(3600), minimumRetryDelay: Duration = .seconds(5),
                    maximumRetryDelay: Duration = .seconds(600), jitter: Double = 0.1) {
            self.maximumInterval = maximumInterval
            self.minimumRetryDelay = minimumRetryDelay
            self.maximumRetryDelay = maximumRetryDelay
            self.jitter = jitter
        }
    }

    public enum Outcome: Sendable, Equatable {
        case stapled(OCSPCertStatus)
        /// Verified, but "unknown": recorded, not served.
        case notStapledUnknown
        case failed(String)
    }

    public let timing: Timing
    /// The last verified good or revoked response; served while in date.
    public private(set) var held: VerifiedOCSPResponse?
    public private(set) var nextRefresh: Date
    public private(set) var consecutiveFailures = 0
    public private(set) var lastAttempt: Date?
    public private(set) var lastOutcome: Outcome?

    /// Starts due at once, holding `persisted` (a response loaded from disk) if there is one.
    public init(timing: Timing, now: Date, persisted: VerifiedOCSPResponse? = nil) {
        self.timing = timing
        self.held = persisted
        self.nextRefresh = now
        if let persisted { nextRefresh = refreshTime(for: persisted, now: now, jitterDraw: 0) }
    }

    /// The response handshakes may staple now, if any.
    public func servable(at now: Date) -> VerifiedOCSPResponse? {
        guard let held else { return nil }
        if let nextUpdate = held.nextUpdate, nextUpdate <= now { return nil }
        return held
    }

    /// When the served staple stops being valid (the service must withdraw it then even if no
    /// refresh succeeded), or nil when nothing is served or it has no nextUpdate.
    public func servableUntil(now: Date) -> Date? {
        servable(at: now)?.nextUpdate
    }

    /// True when the wall clock reads more than a second before the last fetch: it was stepped
    /// back. The held response then looks dated in the future (libmosquitto, curl and others
    /// refuse a thisUpdate more than 5 min ahead of their clock), and the planned refresh lies
    /// as far off as the clock went back: time to fetch one dated by the clock as it is now.
    /// After that fetch `lastAttempt` is now again, so it triggers once per step.
    public func clockSteppedBack(now: Date) -> Bool {
        guard let lastAttempt else { return false }
        return now < lastAttempt.addingTimeInterval(-1)
    }

    /// `jitterDraw` is a random number in -1...1 (injected so tests are exact).
    public mutating func record(_ response: VerifiedOCSPResponse, now: Date, jitterDraw: Double) {
        lastAttempt = now
        switch response.status {
        case .good, .revoked:
            held = response
            consecutiveFailures = 0
            lastOutcome = .stapled(response.status)
            nextRefresh = refreshTime(for: response, now: now, jitterDraw: jitterDraw)
        case .unknown:
            lastOutcome = .notStapledUnknown
            scheduleRetry(now: now, jitterDraw: jitterDraw)
        }
    }

    /// Holds `response`, verified but fetched by someone else (another gateway of the fleet),
    /// when it is newer than what is held. Our own refresh schedule and failure count stay:
    /// the responder still has to be reached by us in time.
    public mutating func adopt(_ response: VerifiedOCSPResponse) {
        guard response.status != .unknown else { return }
        if let held, held.producedAt >= response.producedAt { return }
        held = response
    }

    public mutating func recordFailure(_ reason: String, now: Date, jitterDraw: Double) {
        lastAttempt = now
        lastOutcome = .failed(reason)
        scheduleRetry(now: now, jitterDraw: jitterDraw)
    }

    private mutating func scheduleRetry(now: Date, jitterDraw: Double) {
        consecutiveFailures += 1
        let doublings = min(consecutiveFailures - 1, 30)
        let delay = min(timing.minimumRetryDelay * Double(1 << doublings), timing.maximumRetryDelay)
        nextRefresh = now + (delay * (1 + timing.jitter * jitterDraw)).timeInterval
    }

    private func refreshTime(for response: VerifiedOCSPResponse, now: Date, jitterDraw: Double) -> Date {
        let latest = now + timing.maximumInterval.timeInterval
        guard let nextUpdate = response.nextUpdate else { return latest }
        let halfLife = nextUpdate.timeIntervalSince(response.thisUpdate) / 2
        let planned = response.thisUpdate + halfLife * (1 + timing.jitter * jitterDraw)
        // Never sooner than the retry floor (a response valid for seconds must not make us
        // hammer the responder), never later than the maximum interval.
        let earliest = now + timing.minimumRetryDelay.timeInterval
        return min(max(planned, earliest), latest)
    }
}
