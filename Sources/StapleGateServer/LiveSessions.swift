import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StapleGateOCSP
import StapleGateTLS

/// The device sessions admitted to the broker right now, with the certificate each presented,
/// so that a certificate found revoked later can be cut off wherever it is connected; and the
/// cap on how many there may be (`listen.max_sessions`).
public final class LiveSessions: Sendable {
    public struct Session: Sendable {
        public let channel: Channel
        public let certificate: X509Certificate
        /// The device identity (`admission.identity`).
        public let identity: String
        /// Connection number, as in the log.
        public let connectionID: UInt64
        /// Where the device connected from (its own address, behind a balancer too).
        public var remoteAddress: String = "?"
    }

    /// The most sessions held at once; nil: no cap.
    public let capacity: Int?
    private let refusals: SessionCapRefusals?

    private struct Slots {
        var sessions: [ObjectIdentifier: Session] = [:]
        /// Slots taken for devices being admitted (their session not registered yet) or admitted.
        var taken: Set<ObjectIdentifier> = []
        /// Sessions a closer has claimed; they stay in `sessions` until their channel has closed.
        var closing: Set<ObjectIdentifier> = []
    }

    private let slots = NIOLockedValueBox(Slots())

    /// - Parameters:
    ///   - capacity: the most sessions at once (at least 1), or nil for no cap.
    ///   - logger: where refusals at the cap are reported (rate-limited, see `SessionCapRefusals`).
    public init(capacity: Int? = nil, logger: Logger = Logger(label: "staplegate"),
                metricsFactory: any MetricsFactory = MetricsSystem.factory) {
        precondition(capacity.map { $0 >= 1 } ?? true, "a session cap must allow at least one session")
        self.capacity = capacity
        refusals = capacity.map { SessionCapRefusals(capacity: $0, logger: logger, metricsFactory: metricsFactory) }
    }

    /// Takes a slot for the session on `channel`, or returns false (and counts the refusal) when
    /// all `capacity` slots are taken. The check and the taking happen under one lock, so two
    /// devices judged at the same moment on different event loops cannot both get the last
    /// slot. The slot is given back when the channel closes.
    func reserveSlot(for channel: Channel) -> Bool {
        let key = ObjectIdentifier(channel)
        guard reserveSlot(key) else { return false }
        channel.closeFuture.whenComplete { [self] _ in releaseSlot(key) }
        return true
    }

    /// `reserveSlot(for:)` by key: the counting alone, for tests of the cap without channels.
    func reserveSlot(_ key: ObjectIdentifier) -> Bool {
        let reserved = slots.withLockedValue { slots in
            if slots.taken.contains(key) { return true }
            if let capacity, slots.taken.count >= capacity { return false }
            slots.taken.insert(key)
            return true
        }
        if !reserved { refusals?.refused() }
        return reserved
    }

    func releaseSlot(_ key: ObjectIdentifier) {
        slots.withLockedValue { slots in
            slots.taken.remove(key)
            slots.sessions.removeValue(forKey: key)
            slots.closing.remove(key)
        }
    }

    /// Those of `candidates` no closer has claimed yet, claimed now under one lock. A session
    /// stays listed until its channel has closed on its event loop, so two closers close to each
    /// other (a fleet's refusal and the operator's close request behind it, or a background
    /// recheck beside an operator's) would each find it and each count it closed.
    func claimForClosing(_ candidates: [Session]) -> [Session] {
        slots.withLockedValue { slots in
            candidates.filter { slots.sessions[ObjectIdentifier($0.channel)] != nil
                && slots.closing.insert(ObjectIdentifier($0.channel)).inserted }
        }
    }

    /// Why a device was turned away when `reserveSlot` returned false.
    var capReachedReason: String { "session cap of \(capacity.map(String.init) ?? "∞") reached" }

    /// Registers an admitted session (taking a slot for it if `reserveSlot` did not already).
    func admitted(_ channel: Channel, certificate: X509Certificate, identity: String, connectionID: UInt64,
                  remoteAddress: String = "?") {
        let key = ObjectIdentifier(channel)
        let session = Session(channel: channel, certificate: certificate, identity: identity, connectionID: connectionID,
                              remoteAddress: remoteAddress)
        let hadSlot = slots.withLockedValue { slots in
            slots.sessions[key] = session
            return !slots.taken.insert(key).inserted
        }
        if !hadSlot { channel.closeFuture.whenComplete { [self] _ in releaseSlot(key) } }
    }

    public var all: [Session] { slots.withLockedValue { Array($0.sessions.values) } }
    /// Sessions admitted and registered.
    public var count: Int { slots.withLockedValue { $0.sessions.count } }
    /// Slots in use: admitted sessions and devices being admitted.
    public var slotsTaken: Int { slots.withLockedValue { $0.taken.count } }

    /// Sessions whose certificate `selector` names (by serial, or by device identity).
    public func sessions(matching selector: CertificateSelector) -> [Session] {
        all.filter { selector.matches(serialHex: $0.certificate.serialHex, identity: $0.identity) }
    }
}
