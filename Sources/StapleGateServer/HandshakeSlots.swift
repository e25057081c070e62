import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StapleGateTLS

/// `listen.max_handshakes`: counts the connections between accept and the end of their TLS
/// handshake, and stops the listener accepting while `limit` of them are under way. A flood of
/// connections then waits in the kernel's accept queue (at most `listen.backlog`, costing the
/// gateway nothing) instead of holding an `SSL` and its buffers each in the gateway's memory.
/// Accepting resumes as soon as one of them ends. Shared by the connections of every event loop;
/// the listener's `autoRead` is switched through its `ListenerReadGate`.
final class HandshakeSlots: Sendable {
    let limit: Int

    private struct State {
        var inFlight = 0
        var paused = false
    }

    private let state = NIOLockedValueBox(State())
    private let inProgress: Gauge
    private let pauses: Counter
    private let pauseWarning = ThrottledWarning(logInterval: .seconds(60))
    private let logger: Logger
    private let backlog: Int
    private let gate: ListenerReadGate

    init(limit: Int, backlog: Int, gate: ListenerReadGate, logger: Logger, factory: any MetricsFactory) {
        self.limit = limit
        self.gate = gate
        self.backlog = backlog
        self.logger = logger
        inProgress = Gauge(label: "staplegate_handshakes_in_progress", factory: factory)
        pauses = Counter(label: "staplegate_listener_pauses_total", factory: factory)
        inProgress.record(0)
    }

    /// One connection accepted: its handshake holds a slot until `Slot.release`.
    func take() -> Slot {
        let (count, pause) = state.withLockedValue { state -> (Int, Bool) in
            state.inFlight += 1
            guard state.inFlight >= limit, !state.paused else { return (state.inFlight, false) }
            state.paused = true
            // Under this lock, so that the gate's closes and opens follow `paused` in its order.
            gate.close(for: .handshakeSlots)
            return (state.inFlight, true)
        }
        inProgress.record(count)
        if pause {
            pauses.increment()
            // Connections the listener already took from the kernel are served; the next wait there.
            if let times = pauseWarning.occurred() {
                logger.warning("listen.max_handshakes (\(limit)) handshakes under way: new connections wait in the kernel's accept queue (listen.backlog \(backlog)) until one ends (\(times) pause(s) since the last such line)")
            }
        }
        return Slot(owner: self)
    }

    fileprivate func release() {
        let count = state.withLockedValue { state -> Int in
            state.inFlight -= 1
            if state.paused, state.inFlight < limit {
                state.paused = false
                gate.open(for: .handshakeSlots)
            }
            return state.inFlight
        }
        inProgress.record(count)
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
