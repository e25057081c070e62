import NIOConcurrencyHelpers

/// Caps the responder requests in flight at once. The rest wait in arrival order; a device
/// whose check waits here is still inside its handshake timeout, which bounds the wait.
/// Protects a responder from a reconnect storm (a whole fleet after a broker restart).
final class OCSPRequestLimiter: Sendable {
    private struct State {
        var inFlight = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
        /// Index of the next waiter in `waiting` (a queue without O(n) removal at the front).
        var head = 0
        var queued: Int { waiting.count - head }
    }

    let maximum: Int
    private let state = NIOLockedValueBox(State())

    init(maximum: Int) {
        precondition(maximum > 0, "at least one request must be allowed")
        self.maximum = maximum
    }

    var inFlight: Int { state.withLockedValue { $0.inFlight } }
    var queued: Int { state.withLockedValue { $0.queued } }

    /// Runs `body` once a place is free.
    func run<Result: Sendable>(_ body: @Sendable () async -> Result) async -> Result {
        await acquire()
        let result = await body()
        release()
        return result
    }

    private func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLockedValue { state -> Bool in
                guard state.inFlight < maximum else {
                    state.waiting.append(continuation)
                    return false
                }
                state.inFlight += 1
                return true
            }
            if admitted { continuation.resume() }
        }
    }

    /// Hands the place to the longest waiter, or frees it.
    private func release() {
        let next = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard state.head < state.waiting.count else {
                state.inFlight -= 1
                return nil
            }
            let next = state.waiting[state.head]
            state.head += 1
            if state.head == state.waiting.count || state.head > 1024 {
                state.waiting.removeFirst(state.head)
                state.head = 0
            }
            return next
        }
        next?.resume()
    }
}
