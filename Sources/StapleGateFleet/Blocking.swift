import Dispatch
import NIOConcurrencyHelpers

/// Runs `work` and waits for it on this thread, at most `timeout`: for the store's synchronous
/// entry points (start-up, which must have the tables and the warm-up before the listener
/// opens, and the flush at exit). Never called on an event loop: the work needs those.
func blocking<Value: Sendable>(timeout: Duration, _ what: String,
                               _ work: @escaping @Sendable () async throws -> Value) throws -> Value {
    let result = NIOLockedValueBox<Result<Value, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    let task = Task.detached {
        let outcome: Result<Value, any Error>
        do { outcome = .success(try await work()) } catch { outcome = .failure(error) }
        result.withLockedValue { $0 = outcome }
        done.signal()
    }
    let milliseconds = Int(timeout.components.seconds) * 1000 + Int(timeout.components.attoseconds / 1_000_000_000_000_000)
    if done.wait(timeout: .now() + .milliseconds(milliseconds)) == .timedOut {
        task.cancel()
        throw BlockingTimeout(what: what, timeout: timeout)
    }
    return try result.withLockedValue { $0! }.get()
}

struct BlockingTimeout: Error, CustomStringConvertible {
    let what: String
    let timeout: Duration
    var description: String { "no answer within \(timeout) trying to \(what)" }
}

/// `work`, cancelled when it has not finished within `timeout`: the connection pool waits for
/// a connection as long as the database stays away, and a caller must hear about it sooner.
func withDeadline<Value: Sendable>(_ timeout: Duration, _ what: String,
                                   _ work: @escaping @Sendable () async throws -> Value) async throws -> Value {
    try await withThrowingTaskGroup(of: Value.self) { group in
        group.addTask { try await work() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw BlockingTimeout(what: what, timeout: timeout)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
