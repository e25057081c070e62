import Foundation
import StapleGateTLS

/// A fleet ticket key as the database lists it: when it was made and from when it encrypts;
/// no secret. The id is the key's name in hex (public: every ticket carries it in clear).
public struct TicketKeyEntry: Sendable, Equatable {
    public let id: String
    public let createdAt: Date
    public let activeFrom: Date

    public init(id: String, createdAt: Date, activeFrom: Date) {
        self.id = id
        self.createdAt = createdAt
        self.activeFrom = activeFrom
    }
}

/// The fleet's rotation rules as pure functions of the listed keys and the time (the
/// database's clock, so the gateways' own clocks do not matter): when a new key is due, from
/// when it encrypts, and which keys each gateway encrypts and decrypts with. As Caddy's
/// distributed STEK provider: one newest key encrypts, the few before it still decrypt.
public struct TicketKeyRotation: Sendable, Equatable {
    /// A new key is made once the newest is this old (`fleet.ticket_key_rotation`).
    public let rotation: Duration

    public static let defaultRotation: Duration = .seconds(12 * 3600)
    /// Shorter only makes sense in tests; longer keeps one key for too many tickets.
    public static let allowedRotation: ClosedRange<Duration> = .seconds(5) ... .seconds(7 * 86_400)
    /// Keys that stopped encrypting, still kept for decryption: a ticket resumes for at least
    /// this many rotations after its key was replaced (longer than OpenSSL's ticket lifetime at
    /// the default rotation).
    public static let previousKeysKept = 2

    public init(rotation: Duration = TicketKeyRotation.defaultRotation) {
        self.rotation = rotation
    }

    /// How often each gateway reads the keys again: a tenth of the rotation, 1 s to 5 min.
    public var refreshInterval: Duration {
        min(max(rotation / 10, .seconds(1)), .seconds(300))
    }

    /// How long after it is written a new key starts encrypting: two refreshes, so that every
    /// gateway already holds it (and decrypts its tickets) by the time any gateway issues one.
    public var activationDelay: Duration { refreshInterval * 2 }

    /// Whether a new key must be made now: none yet, or the newest is `rotation` old.
    public func isDue(_ entries: [TicketKeyEntry], now: Date) -> Bool {
        guard let newest = entries.map(\.createdAt).max() else { return true }
        return newest.addingTimeInterval(rotation.timeInterval) <= now
    }

    /// From when a key made at `createdAt` encrypts. The fleet's first key at once: no gateway
    /// holds any fleet key yet, so there is nothing to wait for.
    public func activeFrom(createdAt: Date, isFirst: Bool) -> Date {
        isFirst ? createdAt : createdAt.addingTimeInterval(activationDelay.timeInterval)
    }

    /// Which keys a gateway uses at `now`.
    public struct Plan: Sendable, Equatable {
        /// The newest key already active: it encrypts every new ticket.
        public let encrypting: String
        /// Every key that decrypts, `encrypting` first, then keys not active yet (a gateway that
        /// switched before us issues tickets under them), then the previous ones, newest first.
        public let decrypting: [String]
        /// Keys older than those kept: no gateway uses them any more, the rotating one deletes them.
        public let obsolete: [String]
    }

    /// nil when there is no key at all.
    public func plan(_ entries: [TicketKeyEntry], now: Date) -> Plan? {
        // Newest first; equal times are ordered by id so every gateway agrees.
        let ordered = entries.sorted {
            ($0.activeFrom, $0.createdAt, $0.id) > ($1.activeFrom, $1.createdAt, $1.id)
        }
        let pending = ordered.filter { $0.activeFrom > now }
        let active = ordered.filter { $0.activeFrom <= now }
        // No key active (only possible if keys were removed by hand): the one active soonest
        // encrypts, rather than no fleet key at all.
        guard let encrypting = active.first ?? pending.last else { return nil }
        let previous = active.dropFirst().prefix(Self.previousKeysKept)
        let kept = [encrypting] + pending.filter { $0.id != encrypting.id } + previous
        let keptIDs = Set(kept.map(\.id))
        return Plan(encrypting: encrypting.id, decrypting: kept.map(\.id),
                    obsolete: ordered.map(\.id).filter { !keptIDs.contains($0) })
    }
}
