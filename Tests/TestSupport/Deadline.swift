import Foundation

/// A point in time by which something must have happened.
public struct Deadline {
    public let timeout: Duration
    public let instant: ContinuousClock.Instant

    public init(_ timeout: Duration) {
        self.timeout = timeout
        self.instant = ContinuousClock.now.advanced(by: timeout)
    }

    public var hasPassed: Bool { ContinuousClock.now >= instant }
    public var remaining: Duration { max(.zero, ContinuousClock.now.duration(to: instant)) }
}

/// Thrown when a condition did not become true before its deadline.
public struct WaitTimeoutError: Error, CustomStringConvertible {
    public let what: String
    public let timeout: Duration
    public let details: String

    public init(what: String, timeout: Duration, details: String = "") {
        self.what = what
        self.timeout = timeout
        self.details = details
    }

    public var description: String {
        "timed out after \(timeout) waiting for \(what)" + (details.isEmpty ? "" : "\n--- details ---\n\(details)")
    }
}

/// Polls `condition` every `pollEvery` until it returns true; throws `WaitTimeoutError` (naming
/// `what`, plus whatever `details` returns then) if it is still false at the deadline.
public func waitUntil(
    timeout: Duration,
    pollEvery: Duration = .milliseconds(20),
    _ what: @autoclosure () -> String,
    details: () -> String = { "" },
    _ condition: () async throws -> Bool
) async throws {
    let deadline = Deadline(timeout)
    while true {
        if try await condition() { return }
        if deadline.hasPassed {
            throw WaitTimeoutError(what: what(), timeout: timeout, details: details())
        }
        try await Task.sleep(for: min(pollEvery, max(deadline.remaining, .milliseconds(1))))
    }
}

/// The blocking twin of `waitUntil`, for synchronous contexts (class-level setUp/tearDown).
public func waitUntilBlocking(
    timeout: Duration,
    pollEvery: Duration = .milliseconds(20),
    _ what: @autoclosure () -> String,
    details: () -> String = { "" },
    _ condition: () throws -> Bool
) throws {
    let deadline = Deadline(timeout)
    while true {
        if try condition() { return }
        if deadline.hasPassed {
            throw WaitTimeoutError(what: what(), timeout: timeout, details: details())
        }
        Thread.sleep(forTimeInterval: min(pollEvery, max(deadline.remaining, .milliseconds(1))).seconds)
    }
}

extension Duration {
    /// The duration as fractional seconds.
    public var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}
