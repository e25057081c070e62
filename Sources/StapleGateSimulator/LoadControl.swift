import Foundation

/// What every worker is told to do now. The generator moves all workers through the phases
/// together; each worker reads the current one on every turn of its loop.
enum LoadPhase: Sendable, Equatable {
    /// Open the worker's sessions (at most its share of --concurrency between connect and CONNACK).
    case connect
    /// Keep the sessions open and idle (keepalives only).
    case hold
    /// Subscribers subscribe to the topic.
    case subscribe
    /// Publishers publish from `start` until `end` (monotonic nanoseconds).
    case publish(start: UInt64, end: UInt64)
    /// Publishing is over; keep reading so the last messages arrive.
    case drain
    /// Disconnect every session cleanly, free them, and stop.
    case disconnect
}

/// A session's job.
enum SessionRole: Sendable, Equatable {
    case idle
    case subscriber
    /// Publisher number `index` (0-based, over all workers): it goes into the payload stamp.
    case publisher(index: UInt32)
}

/// One worker's counters, as it last reported them.
struct WorkerProgress: Sendable {
    var connectFinished = false
    var opened = 0
    var failed = 0
    var dropped = 0
    var firstConnectStart = UInt64.max
    var lastConnack: UInt64 = 0
    var subscribersConnected = 0
    var subscribed = 0
    var publishFinished = false
    var firstPublish = UInt64.max
    var lastPublish: UInt64 = 0
    var sent: UInt64 = 0
    var sentBytes: UInt64 = 0
    var received: UInt64 = 0
    var receivedBytes: UInt64 = 0
    var lastReceive: UInt64 = 0
    /// Sessions that were closed with a DISCONNECT when the run ended.
    var disconnectedCleanly = 0
    var finished = false
}

/// What a worker hands over when it stops.
struct WorkerResult: Sendable {
    var progress: WorkerProgress
    /// Why sessions failed to open or were dropped, with how many each.
    var failureReasons: [String: Int]
    /// Connect start → CONNACK, nanoseconds, per session opened.
    var connectTimes: LatencyHistogram
    /// Publish → deliver, nanoseconds, per stamped message received.
    var latencies: LatencyHistogram
}

/// The phase the workers follow and what they report, behind one lock: the generator and the
/// workers exchange little (a phase change, a few counters every few milliseconds).
final class LoadControl: @unchecked Sendable {
    private let lock = NSLock()
    private var currentPhase = LoadPhase.connect
    private var progress: [WorkerProgress]
    private var results: [WorkerResult?]

    init(workers: Int) {
        progress = Array(repeating: WorkerProgress(), count: workers)
        results = Array(repeating: nil, count: workers)
    }

    var phase: LoadPhase {
        get { lock.withLock { currentPhase } }
        set { lock.withLock { currentPhase = newValue } }
    }

    func report(worker: Int, _ snapshot: WorkerProgress) {
        lock.withLock { progress[worker] = snapshot }
    }

    func finish(worker: Int, _ result: WorkerResult) {
        lock.withLock {
            progress[worker] = result.progress
            results[worker] = result
        }
    }

    var snapshot: [WorkerProgress] { lock.withLock { progress } }
    var finishedResults: [WorkerResult] { lock.withLock { results.compactMap { $0 } } }
}
