import NIOConcurrencyHelpers
import NIOCore

/// The one switch of a listener's `autoRead`, for every reason it may have to stop accepting for
/// a while: its handshake slots full (`listen.max_handshakes`), or the kernel out of descriptors
/// for a new socket (`AcceptBackoff`). Each reason closes and opens the gate on its own, and the
/// listener accepts while none holds it closed: with two writers of `autoRead`, the end of one
/// pause would undo the other. Meanwhile new connections wait in the kernel's accept queue.
final class ListenerReadGate: Sendable {
    enum Reason: Sendable, Hashable {
        case handshakeSlots
        case acceptBackoff
    }

    private struct State {
        var closedFor: Set<Reason> = []
        var listener: Channel?
    }

    private let state = NIOLockedValueBox(State())

    init() {}

    func attach(listener: Channel) {
        state.withLockedValue { $0.listener = listener }
        apply()
    }

    func close(for reason: Reason) {
        state.withLockedValue { _ = $0.closedFor.insert(reason) }
        apply()
    }

    func open(for reason: Reason) {
        state.withLockedValue { _ = $0.closedFor.remove(reason) }
        apply()
    }

    /// Sets `autoRead` on the listener's loop to what the state says when it runs there, not
    /// when it was asked: a close and an open sent from two loops may reach the listener's loop
    /// in either order, and the last to run must leave the state's value. Always a task, never
    /// at once, so that callers may hold their own lock: the loop runs it before it next polls
    /// the listener.
    private func apply() {
        guard let listener = state.withLockedValue({ $0.listener }) else { return }
        listener.eventLoop.execute { [state] in
            let open = state.withLockedValue { $0.closedFor.isEmpty }
            listener.setOption(ChannelOptions.autoRead, value: open).whenFailure { _ in }
        }
    }
}
