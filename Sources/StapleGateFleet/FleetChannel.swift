import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import StapleGateOCSP

/// The gateways of a fleet talking to each other through their database: PostgreSQL's
/// LISTEN/NOTIFY on one channel, a notification delivered to every listening gateway when the
/// transaction that sent it commits (so whatever that transaction wrote is visible to the
/// receivers by then), and a heartbeat row per gateway so that a gateway asking the others for
/// replies knows whom to wait for.
///
/// One listening connection per gateway, held for good and re-established with backoff when
/// the database goes away; notifications sent meanwhile are lost, which every user tolerates
/// (a waiter also polls, and a gateway that was cut off finds the newest answers in the table).
final class FleetChannel: Sendable {
    static let name = "staplegate_fleet"
    /// How often each gateway says it is alive, and how long one counts as alive after.
    static let heartbeatInterval: Duration = .seconds(2)
    static let aliveWindowSeconds = 10

    let database: FleetDatabase
    private let logger: Logger
    private let state = NIOLockedValueBox(Registry())
    private let incoming: AsyncStream<FleetAnnouncement>.Continuation
    let announcements: AsyncStream<FleetAnnouncement>
    private let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])

    private struct Registry {
        /// Lookups waiting for an answer about a CertID (by `FleetMessage.key`).
        var waiters: [String: [ObjectIdentifier: AnswerWaiter]] = [:]
        /// Replies expected to a `close` request.
        var replies: [UUID: AsyncStream<FleetSessionsClosed>.Continuation] = [:]
        var listening = false
    }

    init(database: FleetDatabase, logger: Logger) {
        self.database = database
        self.logger = logger
        (announcements, incoming) = AsyncStream.makeStream(of: FleetAnnouncement.self, bufferingPolicy: .bufferingNewest(10_000))
        let listen = Task { [self] in await listenForever() }
        let beat = Task { [self] in await heartbeatForever() }
        tasks.withLockedValue { $0 = [listen, beat] }
    }

    func close() {
        tasks.withLockedValue { $0.forEach { $0.cancel() } }
        incoming.finish()
    }

    /// Whether notifications are being received now.
    var isListening: Bool { state.withLockedValue { $0.listening } }

    // MARK: Sending

    /// Sends `message` on `connection`, inside the caller's transaction: it is delivered when
    /// that transaction commits.
    static func send(_ message: FleetMessage, on connection: PostgresConnection, logger: Logger) async throws {
        _ = try await connection.query("SELECT pg_notify(\(name), \(message.payload))", logger: logger)
    }

    /// Sends `message` on its own.
    func send(_ message: FleetMessage) async throws {
        try await withDeadline(.seconds(2), "notify the fleet through \(database.location)") { [database, logger] in
            _ = try await database.client.query("SELECT pg_notify(\(Self.name), \(message.payload))", logger: logger)
        }
    }

    // MARK: Waiting

    /// A waiter woken when an answer about `key` arrives; unregister it when done.
    func waitForAnswer(about key: String) -> AnswerWaiter {
        let waiter = AnswerWaiter()
        state.withLockedValue { $0.waiters[key, default: [:]][ObjectIdentifier(waiter)] = waiter }
        return waiter
    }

    func stopWaiting(_ waiter: AnswerWaiter, about key: String) {
        state.withLockedValue { registry in
            registry.waiters[key]?.removeValue(forKey: ObjectIdentifier(waiter))
            if registry.waiters[key]?.isEmpty == true { registry.waiters.removeValue(forKey: key) }
        }
    }

    /// Replies to `request` as they arrive; unregister when done.
    func expectReplies(to request: UUID) -> AsyncStream<FleetSessionsClosed> {
        let (stream, continuation) = AsyncStream.makeStream(of: FleetSessionsClosed.self)
        state.withLockedValue { $0.replies[request] = continuation }
        return stream
    }

    func stopExpectingReplies(to request: UUID) {
        state.withLockedValue { $0.replies.removeValue(forKey: request)?.finish() }
    }

    /// The other gateways seen alive lately.
    func otherInstancesAlive() async throws -> Set<String> {
        try await withDeadline(.seconds(2), "read the fleet's gateways in \(database.location)") { [database, logger] in
            var names: Set<String> = []
            let rows = try await database.client.query("""
                SELECT instance FROM fleet_instance
                WHERE seen_at > now() - make_interval(secs => \(Self.aliveWindowSeconds)) AND instance <> \(database.instance)
                """, logger: logger)
            for try await name in rows.decode(String.self) { names.insert(name) }
            return names
        }
    }

    // MARK: Receiving

    private func listenForever() async {
        var backoff: Duration = .milliseconds(250)
        while !Task.isCancelled {
            do {
                try await database.client.withConnection { [self] connection in
                    try await connection.listen(on: Self.name) { notifications in
                        state.withLockedValue { $0.listening = true }
                        for try await notification in notifications { receive(notification.payload) }
                    }
                }
            } catch {
                if Task.isCancelled { break }
            }
            // A connection that listened for a while starts the backoff over.
            if state.withLockedValue({ state in defer { state.listening = false }; return state.listening }) {
                backoff = .milliseconds(250)
            }
            do { try await Task.sleep(for: backoff) } catch { break }
            backoff = min(backoff * 2, .seconds(10))
        }
        state.withLockedValue { $0.listening = false }
    }

    private func receive(_ payload: String) {
        guard let message = FleetMessage(payload: payload) else {
            logger.debug("ignoring a fleet notification this version does not read", metadata: ["payload": "\(payload.prefix(200))"])
            return
        }
        let me = database.instance
        switch message.kind {
        case .answer:
            guard let key = message.key else { return }
            let waiting = state.withLockedValue { Array(($0.waiters[key] ?? [:]).values) }
            for waiter in waiting { waiter.signal() }
            if message.origin != me, message.refused == true, let certID = CertID(fleetKey: key) {
                incoming.yield(FleetAnnouncement(kind: .refused, certID: certID, origin: message.origin))
            }
        case .close:
            guard message.origin != me, let key = message.key, let certID = CertID(fleetKey: key),
                  let request = message.request else { return }
            incoming.yield(FleetAnnouncement(kind: .closeRequest(request), certID: certID, origin: message.origin))
        case .closed:
            guard let request = message.request, let closed = message.closed else { return }
            _ = state.withLockedValue { $0.replies[request] }?.yield(closed)
        }
    }

    // MARK: Heartbeat

    private func heartbeatForever() async {
        var beats = 0
        while !Task.isCancelled {
            if database.health == .ready {
                let purge = beats % 30 == 0
                try? await withDeadline(.seconds(2), "heartbeat") { [database, logger] in
                    _ = try await database.client.query("""
                        INSERT INTO fleet_instance (instance, seen_at, started_at) VALUES (\(database.instance), now(), now())
                        ON CONFLICT (instance) DO UPDATE SET seen_at = now()
                        """, logger: logger)
                    // Now and then, leases long over and failures expired go (any gateway may).
                    if purge {
                        _ = try await database.client.query("""
                            DELETE FROM device_ocsp_lookup WHERE lease_until < now() - interval '10 minutes'
                            AND (failure_until IS NULL OR failure_until < now())
                            """, logger: logger)
                    }
                }
                beats += 1
            }
            do { try await Task.sleep(for: Self.heartbeatInterval) } catch { return }
        }
    }
}

/// Wakes a lookup waiting for another gateway's answer: a signal that arrives while nobody
/// waits is kept for the next wait, so that none is lost between two looks.
final class AnswerWaiter: Sendable {
    private struct State {
        var signalled = false
        var waiting: CheckedContinuation<Void, Never>?
        var generation = 0
    }

    private let state = NIOLockedValueBox(State())

    func signal() {
        let waiting = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let waiting = state.waiting else {
                state.signalled = true
                return nil
            }
            state.waiting = nil
            return waiting
        }
        waiting?.resume()
    }

    /// Returns at the next signal (at once if one came since the last wait), or after `timeout`.
    func wait(atMost timeout: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let generation = state.withLockedValue { state -> Int? in
                if state.signalled {
                    state.signalled = false
                    return nil
                }
                state.waiting = continuation
                state.generation += 1
                return state.generation
            }
            guard let generation else { return continuation.resume() }
            Task { [state] in
                try? await Task.sleep(for: timeout)
                let timedOut = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                    guard state.generation == generation, let waiting = state.waiting else { return nil }
                    state.waiting = nil
                    return waiting
                }
                timedOut?.resume()
            }
        }
    }
}
