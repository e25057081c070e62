import NIOConcurrencyHelpers

/// An answer within a time limit, without waiting for the work to notice the limit: a shared
/// store read on a handshake's path must not hold the handshake when the database hangs (a
/// connection attempt to a host that dropped off the network can take its full connect timeout).
/// The work goes on in the background after the limit; its late answer is dropped.
enum FirstAnswer {
    static func within<Value: Sendable>(_ timeout: Duration,
                                        _ work: @escaping @Sendable () async -> Value?) async -> Value? {
        let resumed = NIOLockedValueBox(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
            let finish: @Sendable (Value?) -> Void = { value in
                let first = resumed.withLockedValue { done -> Bool in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: value) }
            }
            let worker = Task { finish(await work()) }
            Task {
                try? await Task.sleep(for: timeout)
                finish(nil)
                worker.cancel()
            }
        }
    }
}
