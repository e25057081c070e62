import Foundation
import Logging
import NIOConcurrencyHelpers
import StapleGateTLS

/// `tls.session_ticket_keys: fleet` in one gateway process: the fleet's keys, rotated through
/// its database, in the ring every `SSL_CTX` of this process uses.
///
/// A task (never an event loop) reads the keys every `refreshInterval`; when the newest is
/// `rotation` old, it makes the next one under the fleet's advisory lock (one gateway makes it,
/// whichever gets there first). A new key encrypts only `activationDelay` (two refreshes) after
/// it was written, so every gateway decrypts tickets under it before any gateway issues them.
/// The keys are opened with `fleet.secret_file` and swapped into the ring in place: handshakes
/// pick them up at once, no reload needed.
///
/// Until the database first answers, the ring holds a random key made at start: devices are
/// served, their tickets resume on this gateway only (and still do afterwards, the start key is
/// kept for decryption). While the database is away later, the keys held stay in use.
public final class FleetTicketKeys: Sendable {
    public let ring: SessionTicketKeyRing
    public let rotation: TicketKeyRotation
    private let store: PostgresTicketKeyStore
    private let secret: FleetSecret
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let task: NIOLockedValueBox<Task<Void, Never>?>

    /// Where this process stands with the fleet's keys; each change is logged once.
    enum Phase: Sendable, Equatable {
        /// No answer from the database yet: the start key serves.
        case waiting
        /// The fleet's keys serve; `encrypting` names new tickets.
        case sharing(encrypting: String)
        /// The last refresh failed (why, in words); the keys held still serve.
        case failing(String)
    }

    struct State: Sendable {
        var phase: Phase = .waiting
        /// Keys already opened, by id: each is opened (and its failure logged) once.
        var opened: [String: SessionTicketKey] = [:]
        var unopenable: [String: String] = [:]
        /// The ids the ring holds, in its order.
        var shared: [String] = []
        var sharedOnce = false
    }

    /// Starts refreshing at once (in the background).
    public init(database: FleetDatabase, secret: FleetSecret, rotation: TicketKeyRotation, logger: Logger) {
        ring = .fleet(location: database.location)
        self.rotation = rotation
        store = PostgresTicketKeyStore(database: database, logger: logger)
        self.secret = secret
        self.logger = logger
        state = NIOLockedValueBox(State())
        task = NIOLockedValueBox(nil)
        let running = Task { [self] in await run(database: database) }
        task.withLockedValue { $0 = running }
    }

    deinit {
        task.withLockedValue { $0?.cancel() }
    }

    /// Stops the refreshes; the ring keeps the keys it holds.
    public func close() {
        task.withLockedValue { $0?.cancel() }
    }

    var phase: Phase { state.withLockedValue { $0.phase } }

    private func run(database: FleetDatabase) async {
        var failures = 0
        while !Task.isCancelled {
            let succeeded = await refresh(quietly: database.health != .ready && phase == .waiting)
            failures = succeeded ? 0 : failures + 1
            // After a failure, sooner than the refresh interval (a start waits for the database,
            // and 12 h rotations refresh every 5 min), backing off to it.
            let pause = succeeded ? rotation.refreshInterval
                : min(.milliseconds(250) * (1 << min(failures, 10)), rotation.refreshInterval)
            do { try await Task.sleep(for: pause) } catch { return }
        }
    }

    /// One read (and rotation, when due); whether the fleet's keys serve afterwards. `quietly`:
    /// a failure is not logged (the database is still connecting and says so itself).
    @discardableResult
    func refresh(quietly: Bool = false) async -> Bool {
        do {
            var (stored, now) = try await store.keys()
            if rotation.isDue(stored.map(\.entry), now: now) {
                let secret = self.secret
                if let made = try await store.rotateIfDue(rotation, instance: store.database.instance, seal: { key in
                    TicketKeySeal.seal(key, id: key.nameHex, with: secret)
                }) {
                    // Not at once (but for the fleet's first key): every gateway reads it first.
                    logger.notice("made the fleet's next session ticket key \(made.id.prefix(16)); it encrypts new tickets from \(made.activeFrom)")
                }
                (stored, now) = try await store.keys()
            }
            guard let plan = rotation.plan(stored.map(\.entry), now: now) else {
                throw FleetTicketKeyError("no session ticket key in \(store.location) yet")
            }
            try use(plan, stored: stored)
            return true
        } catch {
            let reason = error is FleetTicketKeyError ? "\(error)" : FleetDatabase.describe(error)
            let (changed, sharing) = state.withLockedValue { state -> (Bool, Bool) in
                defer { state.phase = .failing(reason) }
                if case .failing = state.phase { return (false, state.sharedOnce) }
                return (true, state.sharedOnce)
            }
            if changed && !quietly {
                let held = sharing ? "the keys held stay in use" : "tickets resume on this gateway only meanwhile"
                logger.warning("cannot refresh the fleet's session ticket keys from \(store.location): \(reason); \(held), retrying")
            }
            return false
        }
    }

    /// Opens what `plan` needs (once per key) and swaps the ring when its keys changed.
    private func use(_ plan: TicketKeyRotation.Plan, stored: [StoredTicketKey]) throws {
        let sealed = Dictionary(stored.map { ($0.entry.id, $0.sealed) }) { first, _ in first }
        var newlyUnopenable: [(String, String)] = []
        let keys = state.withLockedValue { state -> [SessionTicketKey] in
            var keys: [SessionTicketKey] = []
            for id in plan.decrypting {
                if let key = state.opened[id] { keys.append(key); continue }
                guard state.unopenable[id] == nil, let blob = sealed[id] else { continue }
                do {
                    let key = try TicketKeySeal.open(blob, id: id, with: secret)
                    state.opened[id] = key
                    keys.append(key)
                } catch {
                    state.unopenable[id] = "\(error)"
                    newlyUnopenable.append((id, "\(error)"))
                }
            }
            // Forget what the fleet no longer lists.
            let listed = Set(plan.decrypting)
            state.opened = state.opened.filter { listed.contains($0.key) }
            state.unopenable = state.unopenable.filter { listed.contains($0.key) }
            return keys
        }
        for (id, reason) in newlyUnopenable {
            logger.error("the fleet's session ticket key \(id.prefix(16)) in \(store.location) \(reason)")
        }
        guard let first = keys.first, first.nameHex == plan.encrypting else {
            let reason = state.withLockedValue { $0.unopenable[plan.encrypting] } ?? "is missing"
            throw FleetTicketKeyError("the key that encrypts now (\(plan.encrypting.prefix(16))) \(reason)")
        }
        let ids = keys.map(\.nameHex)
        let (swap, previous, sharedBefore) = state.withLockedValue { state -> (Bool, Phase, Bool) in
            let before = (state.shared != ids, state.phase, state.sharedOnce)
            state.phase = .sharing(encrypting: plan.encrypting)
            state.shared = ids
            state.sharedOnce = true
            return before
        }
        if swap { ring.share(keys) }
        if case .failing = previous, sharedBefore {
            logger.notice("the fleet's session ticket keys are read from \(store.location) again")
        }
        if swap || previous != .sharing(encrypting: plan.encrypting) {
            logger.notice("session tickets: \(ring.summary)")
        }
    }
}

struct FleetTicketKeyError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
