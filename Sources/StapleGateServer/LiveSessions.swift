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
        /// Its number in the order of registration (see `registered(after:)`).
        public internal(set) var registration: UInt64 = 0
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
        /// Certificates a recheck refused, until no connection judged before it can still come
        /// to register (see `bar`).
        var barred: [(certID: CertID, until: NIODeadline)] = []
        /// The longest from a certificate's judgment in the TLS handshake to the session's
        /// registration: tls.handshake_timeout + admission.connect_timeout (the longest any
        /// generation allowed, since connections keep the settings they were accepted with).
        var admissionWindow: TimeAmount = .seconds(20)
        /// Sessions registered so far, each numbered by it.
        var registrations: UInt64 = 0
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
    /// False, registering nothing, when a recheck barred its certificate after the handshake
    /// judged it: the device must be refused.
    func admitted(_ channel: Channel, certificate: X509Certificate, identity: String, connectionID: UInt64,
                  remoteAddress: String = "?", now: NIODeadline = .now()) -> Bool {
        let key = ObjectIdentifier(channel)
        var session = Session(channel: channel, certificate: certificate, identity: identity, connectionID: connectionID,
                              remoteAddress: remoteAddress)
        let registered: (hadSlot: Bool, barred: Bool) = slots.withLockedValue { slots in
            if !slots.barred.isEmpty {
                slots.barred.removeAll { $0.until <= now }
                if slots.barred.contains(where: { $0.certID.names(certificate) }) { return (true, true) }
            }
            slots.registrations += 1
            session.registration = slots.registrations
            slots.sessions[key] = session
            return (!slots.taken.insert(key).inserted, false)
        }
        if registered.barred { return false }
        if !registered.hadSlot { channel.closeFuture.whenComplete { [self] _ in releaseSlot(key) } }
        return true
    }

    /// A recheck found `certID` refused: sessions registering with it from now on are refused
    /// (`admitted` returns false), for as long as a connection judged from the old answer may
    /// take to come to register. Sessions registered before are the closer's to find in `all`
    /// after this returns. Without it, a device whose handshake was judged from the cached
    /// "good" a moment before the operator's recheck would register after the recheck had
    /// closed the sessions it found, and stay (the soak run found one).
    func bar(_ certID: CertID, now: NIODeadline = .now()) {
        slots.withLockedValue { slots in
            slots.barred.removeAll { $0.until <= now || $0.certID == certID }
            slots.barred.append((certID, now + slots.admissionWindow))
        }
    }

    /// Makes the window `bar` keeps a certificate barred at least `window` (never shorter:
    /// connections accepted under earlier settings are still being admitted).
    public func widenAdmissionWindow(to window: Duration) {
        let amount = TimeAmount(window)
        slots.withLockedValue { $0.admissionWindow = max($0.admissionWindow, amount) }
    }

    public var all: [Session] { slots.withLockedValue { Array($0.sessions.values) } }

    /// Taken before gathering sessions: those registered later are `registered(after:)` it.
    var registrationMark: UInt64 { slots.withLockedValue { $0.registrations } }

    /// Sessions registered after `mark` was taken (a closer's few, without grouping them all).
    func registered(after mark: UInt64) -> [Session] {
        slots.withLockedValue { $0.sessions.values.filter { $0.registration > mark } }
    }
    /// Sessions admitted and registered.
    public var count: Int { slots.withLockedValue { $0.sessions.count } }
    /// Slots in use: admitted sessions and devices being admitted.
    public var slotsTaken: Int { slots.withLockedValue { $0.taken.count } }

    /// Sessions whose certificate `selector` names (by serial, or by device identity).
    public func sessions(matching selector: CertificateSelector) -> [Session] {
        all.filter { selector.matches(serialHex: $0.certificate.serialHex, identity: $0.identity) }
    }
}
