import Foundation

/// The other gateways of a fleet, as device checks see them (issue 14): without it each
/// gateway asks the responder on its own; with it (`fleet.store: postgres`) one gateway in
/// the fleet asks about a certificate while the others wait for its answer, and every answer
/// that refuses a device reaches every gateway, which closes that device's sessions.
///
/// One implementation (PostgreSQL: a lease row per CertID, LISTEN/NOTIFY), chosen once at
/// start; a single gateway has none.
public protocol DeviceStatusFleet: AnyObject, Sendable {
    /// This gateway's name in the fleet.
    var instance: String { get }

    /// Whose turn it is to ask the responder about `certID`: this gateway's (`ask`: it must
    /// then `announce` the answer or failure, which ends the turn), or another gateway's,
    /// whose answer arrived within `timeout`. `lease` bounds how long another gateway may hold
    /// the turn before it is taken over (it may have died asking). Answers `ask` at once when
    /// the fleet cannot be reached: a device never waits on a database that is away.
    func turn(for certID: CertID, lease: Duration, within timeout: Duration) async -> FleetLookupTurn

    /// Writes `status` (a fresh answer from the responder, or a failure to get one) to the
    /// fleet now, not queued, ends this gateway's turn for its CertID, and tells every
    /// gateway: those waiting for it take it, and an answer that refuses the device closes
    /// its sessions everywhere.
    func announce(_ status: CachedOCSPStatus) async

    /// Answers other gateways announced, and their requests to close a certificate's
    /// sessions, as they arrive. One consumer.
    func announcements() -> AsyncStream<FleetAnnouncement>

    /// Asks every other gateway to apply the newest answer about `certIDs` now, closing the
    /// sessions it refuses, and collects what each did: until every gateway seen alive lately
    /// has replied, at most `timeout`.
    func closeSessions(of certIDs: [CertID], within timeout: Duration) async -> [FleetSessionsClosed]

    /// Replies to another gateway's `closeSessions` request.
    func reply(to request: UUID, _ closed: FleetSessionsClosed) async
}

/// Whose turn it is to ask the responder about a certificate.
public enum FleetLookupTurn: Sendable, Equatable {
    /// This gateway asks (and then announces what it got).
    case ask
    /// Another gateway asked and got this answer.
    case answered(CachedOCSPStatus)
    /// Another gateway asked and got no answer; the failure stands until `until`.
    case failedElsewhere(reason: String, until: Date, by: String)
}

/// Something another gateway of the fleet learnt or asks for.
public struct FleetAnnouncement: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A fresh answer about the certificate, whose outcome refuses it (revoked, unknown).
        case refused
        /// An operator's recheck on `origin` asks for the certificate's sessions to be judged
        /// again from the newest answer, and for a reply saying what was closed.
        case closeRequest(UUID)
    }

    public let kind: Kind
    public let certID: CertID
    /// The gateway it came from.
    public let origin: String

    public init(kind: Kind, certID: CertID, origin: String) {
        self.kind = kind
        self.certID = certID
        self.origin = origin
    }
}

/// What one gateway closed for a certificate at another's request.
public struct FleetSessionsClosed: Codable, Sendable, Equatable {
    public var instance: String
    public var serial: String
    public var closed: Int
    /// Where the closed sessions came from (the first few).
    public var addresses: [String]

    public init(instance: String, serial: String, closed: Int, addresses: [String]) {
        self.instance = instance
        self.serial = serial
        self.closed = closed
        self.addresses = addresses
    }
}
