#if canImport(Glibc)
import Glibc
#endif
import CoreMetrics
import Logging
import NIOCore
import StapleGateTLS

/// What a listener does when the kernel refuses its `accept()` for want of resources: out of file
/// descriptors (EMFILE at the process's open-files limit, ENFILE at the system's), or of kernel
/// memory (ENOBUFS, ENOMEM).
///
/// NIO leaves such a listener registered for reads: the connection stays in the kernel's queue,
/// the socket stays readable, and the event loop calls `accept()` again at once, spinning a core
/// (measured: 4 s of CPU in 4 s) with nothing in the log. (NIO's `AcceptBackoffHandler` holds
/// back the next `read()`, which never comes: the failed accept leaves the channel's read
/// pending.) Here the listener stops reading for `backoff` (`AcceptBackoff`, through the
/// listener's `ListenerReadGate`), connections wait in the kernel's accept queue
/// (`listen.backlog`) until descriptors are free again, and the failures are counted and
/// logged at a limited rate (`AcceptFailureLog`).
enum AcceptFailures {
    /// How long a listener waits before it tries `accept()` again, as nginx does (500 ms): long
    /// enough that retries cost nothing, short enough that a freed descriptor is used soon.
    static let backoff: TimeAmount = .milliseconds(500)

    /// The errors that say "not now" rather than "this connection failed".
    static func isResourceShortage(_ error: IOError) -> Bool {
        [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode)
    }

    /// Adds the back-off and the log to a listener's pipeline (its `serverChannelInitializer`),
    /// and attaches `gate` to it. `listener` names it in the log and the metric: "device",
    /// "admin", "control".
    static func install(on channel: Channel, listener: String, gate: ListenerReadGate = ListenerReadGate(), logger: Logger,
                        factory: any MetricsFactory = MetricsSystem.factory) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            gate.attach(listener: channel)
            try channel.pipeline.syncOperations.addHandlers([
                AcceptBackoff(gate: gate),
                AcceptFailureLog(listener: listener, logger: logger, factory: factory),
            ])
        }
    }
}

/// Closes the listener's gate for `AcceptFailures.backoff` after an accept failed for want of
/// resources, then opens it: one attempt per back-off instead of one per loop iteration.
/// Sits on the listener; passes every error on.
final class AcceptBackoff: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    private let gate: ListenerReadGate
    private var backingOff = false

    init(gate: ListenerReadGate) {
        self.gate = gate
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if !backingOff, let error = error as? IOError, AcceptFailures.isResourceShortage(error) {
            backingOff = true
            gate.close(for: .acceptBackoff)
            context.eventLoop.assumeIsolated().scheduleTask(in: AcceptFailures.backoff) { [self] in
                backingOff = false
                gate.open(for: .acceptBackoff)
            }
        }
        context.fireErrorCaught(error)
    }
}

/// Counts the accepts a listener's kernel refused (`staplegate_accept_failures_total{listener,
/// error}`) and logs them at most once per `logInterval`, each line saying how many failed since
/// the previous one; once a connection is accepted again, says so once. A listener out of
/// descriptors fails an accept per back-off for as long as it lasts: a line per attempt would
/// bury the log. Sits on the listener, after the back-off; the errors end here.
final class AcceptFailureLog: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    private let listener: String
    private let logger: Logger
    private let factory: any MetricsFactory
    private let warning: ThrottledWarning
    /// Failed accepts since the last accepted connection; 0 while accepting works.
    private var failedSinceAccepted = 0

    init(listener: String, logger: Logger, factory: any MetricsFactory, logInterval: TimeAmount = .seconds(10)) {
        self.listener = listener
        self.logger = logger
        self.factory = factory
        warning = ThrottledWarning(logInterval: logInterval)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if failedSinceAccepted > 0 {
            logger.notice("accepting \(listener) connections again, after \(failedSinceAccepted) failed accept(s)")
            failedSinceAccepted = 0
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let error = error as? IOError else {
            context.fireErrorCaught(error)
            return
        }
        let name = Self.errnoName(error.errnoCode)
        // One counter per listener and errno, made on first use: swift-metrics hands back the
        // same series for the same label and dimensions.
        Counter(label: "staplegate_accept_failures_total", dimensions: [("listener", listener), ("error", name)],
                factory: factory).increment()
        guard AcceptFailures.isResourceShortage(error) else {
            // ECONNABORTED and the like: one connection gone before it was accepted; nothing to fix.
            logger.debug("\(listener) listener: accept failed: \(String(cString: strerror(error.errnoCode)))")
            return
        }
        failedSinceAccepted += 1
        if let count = warning.occurred() {
            logger.warning("cannot accept new \(listener) connections: \(String(cString: strerror(error.errnoCode))) (\(name)\(Self.openFilesLimit(name))); they wait in the kernel's accept queue and accepting is retried every \(AcceptFailures.backoff.nanoseconds / 1_000_000) ms; open sessions are not affected (\(count) failed accept(s) since the last such line)")
        }
    }

    static func errnoName(_ code: CInt) -> String {
        switch code {
        case EMFILE: "EMFILE"
        case ENFILE: "ENFILE"
        case ENOBUFS: "ENOBUFS"
        case ENOMEM: "ENOMEM"
        case ECONNABORTED: "ECONNABORTED"
        default: "errno \(code)"
        }
    }

    /// For EMFILE, the limit reached, so that the operator knows what to raise (LimitNOFILE=).
    private static func openFilesLimit(_ name: String) -> String {
        var limit = rlimit()
        guard name == "EMFILE", getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return "" }
        return ": the open-files limit, \(limit.rlim_cur), is reached"
    }
}
