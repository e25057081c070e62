import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StapleGateTLS

/// `listen.max_handshakes`: counts the connections between accept and the end of their TLS
/// handshake, and stops the listener accepting while `limit` of them are under way. A flood of
/// connections then waits in the kernel's accept queue (at most `listen.backlog`, costing the
/// gateway nothing) instead of holding an `SSL` and its buffers each in the gateway's memory.
/// Accepting resumes as soon as one of them ends. Shared by the connections of every event loop.
final class HandshakeSlots: Sendable {
    let limit: Int

    private struct State {
        var inFlight = 0
        var paused = false
        /// The listening channel, whose `autoRead` is the switch.
        var listener: Channel?
    }

    private let state = NIOLockedValueBox(State())
    private let inProgress: Gauge
    private let pauses: Counter
    private let pauseWarning = ThrottledWarning(logInterval: .seconds(60))
    private let logger: Logger
    private let backlog: Int

    init(limit: Int, backlog: Int, logger: Logger, factory: any MetricsFactory) {
        self.limit = limit
        self.backlog = backlog
        self.logger = logger
        inProgress = Gauge(label: "staplegate_handshakes_in_progress", factory: factory)
        pauses = Counter(label: "staplegate_listener_pauses_total", factory: factory)
        inProgress.record(0)
    }

    func attach(listener: Channel) {
        state.withLockedValue { $0.listener = listener }
    }

    /// One connection accepted: its handshake holds a slot until `Slot.release`.
    func take() -> Slot {
        let (count, pause) = state.withLockedValue { state -> (Int, Channel?) in
            state.inFlight += 1
            guard state.inFlight >= limit, !state.paused, let listener = state.listener else { return (state.inFlight, nil) }
            state.paused = true
            return (state.inFlight, listener)
        }
        inProgress.record(count)
        if let listener = pause {
            pauses.increment()
            // Connections the listener already took from the kernel are served; the next wait there.
            apply(to: listener)
            if let times = pauseWarning.occurred() {
                logger.warning("listen.max_handshakes (\(limit)) handshakes under way: new connections wait in the kernel's accept queue (listen.backlog \(backlog)) until one ends (\(times) pause(s) since the last such line)")
            }
        }
        return Slot(owner: self)
    }

    fileprivate func release() {
        let (count, resume) = state.withLockedValue { state -> (Int, Channel?) in
            state.inFlight -= 1
            guard state.paused, state.inFlight < limit, let listener = state.listener else { return (state.inFlight, nil) }
            state.paused = false
            return (state.inFlight, listener)
        }
        inProgress.record(count)
        if let resume { apply(to: resume) }
    }

    /// Sets `autoRead` on the listener's loop to what the state says when it runs there, not
    /// when it was asked: a pause from one loop and a resume from another may reach the
    /// listener's loop in either order, and the last to run must leave the state's value.
    private func apply(to listener: Channel) {
        listener.eventLoop.execute { [self] in
            let paused = state.withLockedValue { $0.paused }
            listener.setOption(ChannelOptions.autoRead, value: !paused).whenFailure { _ in }
        }
    }

    /// One connection's slot, given back once: when its handshake ends, or when it closes first.
    final class Slot: Sendable {
        private let owner: HandshakeSlots
        private let held = NIOLockedValueBox(true)

        fileprivate init(owner: HandshakeSlots) {
            self.owner = owner
        }

        func release() {
            guard held.withLockedValue({ held in defer { held = false }; return held }) else { return }
            owner.release()
        }
    }
}

/// Gives the connection's slot back when its TLS handshake ends, then leaves the pipeline.
/// Sits after the TLS handler, whose events it waits for.
final class HandshakeSlotHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let slot: HandshakeSlots.Slot

    init(slot: HandshakeSlots.Slot) {
        self.slot = slot
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        var ended = false
        switch event {
        case TLSEvent.handshakeCompleted, TLSEvent.handshakeFailed: ended = true
        default: break
        }
        if ended { slot.release() }
        context.fireUserInboundEventTriggered(event)
        if ended { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }
}
