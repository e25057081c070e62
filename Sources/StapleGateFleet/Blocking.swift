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
