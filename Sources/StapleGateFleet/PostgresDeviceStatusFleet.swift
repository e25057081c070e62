import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import StapleGateOCSP

/// The fleet's device checks on PostgreSQL: a fleet-wide single flight per CertID (a lease row
/// in `device_ocsp_lookup`, taken with one conditional upsert, so that exactly one gateway asks
/// the responder), answers written and announced in one transaction, and the refusals and
/// close requests of other gateways delivered to this one.
///
/// Every call is bounded and gives up quickly when the database is away: the gateway then asks
/// the responder itself, as a single gateway would. The database's clock decides leases, so
/// that gateways whose clocks disagree still agree on who holds one.
public final class PostgresDeviceStatusFleet: DeviceStatusFleet {
    private let database: FleetDatabase
    private let channel: FleetChannel
    private let logger: Logger
    public var instance: String { database.instance }

    /// How long one attempt at the lease (or one read while waiting) may take.
    static let attemptTimeout: Duration = .seconds(1)
    /// How often a waiter looks again when no notification came (one may be lost while the
    /// listening connection is re-established).
    static let pollInterval: Duration = .milliseconds(250)

    public init(database: FleetDatabase, logger: Logger) {
        self.database = database
        self.logger = logger
        channel = FleetChannel(database: database, logger: logger)
    }

    public func close() {
        channel.close()
    }

    // MARK: Single flight

    private enum Attempt {
        case mine
        case answered(CachedOCSPStatus)
        case failed(reason: String, until: Date, by: String)
        case busy
    }

    public func turn(for certID: CertID, lease: Duration, within timeout: Duration) async -> FleetLookupTurn {
        guard database.health == .ready else { return .ask }
        let key = certID.fleetKey
        // Registered before the first look, so that an answer announced in between is not missed.
        let waiter = channel.waitForAnswer(about: key)
        defer { channel.stopWaiting(waiter, about: key) }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let attempt: Attempt
            do {
                attempt = try await withDeadline(Self.attemptTimeout, "take the lookup lease in \(database.location)") { [self] in
                    try await attemptTurn(certID, lease: lease)
                }
            } catch {
                logger.debug("fleet lookup lease: \(FleetDatabase.describe(error)); asking the responder", metadata: [
                    "serial": "\(certID.serialHex)",
                ])
                return .ask
            }
            switch attempt {
            case .mine: return .ask
            case let .answered(status): return .answered(status)
            case let .failed(reason, until, by): return .failedElsewhere(reason: reason, until: until, by: by)
            case .busy: break
            }
            // Another gateway is asking: its announcement, or the poll interval, whichever first.
            let pause = min(Self.pollInterval, deadline - ContinuousClock.now)
            guard pause > .zero else { break }
            await waiter.wait(atMost: pause)
        }
        return .ask
    }

    /// One look: a fresh answer, a standing failure, the lease taken, or someone else's lease.
    private func attemptTurn(_ certID: CertID, lease: Duration) async throws -> Attempt {
        let client = database.client
        if let status = try await freshStatus(certID, client: client) { return .answered(status) }
        let name = ByteBuffer(bytes: certID.issuerNameHash), key = ByteBuffer(bytes: certID.issuerKeyHash)
        let serial = ByteBuffer(bytes: certID.serialNumber)
        let milliseconds = Int(lease.components.seconds) * 1000 + Int(lease.components.attoseconds / 1_000_000_000_000_000)
        // Taken when nobody holds it, the holder's lease ran out (it may have died asking), or
        // the holder is this gateway (lookups are single-flight within a gateway, so its own
        // lease is one left over from before a restart), unless a failure still stands.
        let taken = try await client.query("""
            INSERT INTO device_ocsp_lookup (issuer_name_hash, issuer_key_hash, serial, holder, lease_until)
            VALUES (\(name), \(key), \(serial), \(instance), now() + make_interval(secs => \(Double(milliseconds) / 1000)))
            ON CONFLICT (issuer_name_hash, issuer_key_hash, serial) DO UPDATE SET
                holder = excluded.holder, lease_until = excluded.lease_until, failure = NULL, failure_until = NULL
            WHERE (device_ocsp_lookup.lease_until < now() OR device_ocsp_lookup.holder = excluded.holder)
              AND (device_ocsp_lookup.failure_until IS NULL OR device_ocsp_lookup.failure_until <= now())
            RETURNING holder
            """, logger: logger)
        var mine = false
        for try await _ in taken { mine = true }
        if mine {
            // The previous holder writes its answer and gives the lease up in one transaction:
            // taking the lease just after that must find the answer, not ask again.
            if let status = try await freshStatus(certID, client: client) {
                _ = try await client.query("""
                    DELETE FROM device_ocsp_lookup WHERE issuer_name_hash = \(name) AND issuer_key_hash = \(key)
                    AND serial = \(serial) AND holder = \(instance)
                    """, logger: logger)
                return .answered(status)
            }
            return .mine
        }
        let failures = try await client.query("""
            SELECT failure, failure_until, holder FROM device_ocsp_lookup
            WHERE issuer_name_hash = \(name) AND issuer_key_hash = \(key) AND serial = \(serial)
            AND failure IS NOT NULL AND failure_until > now()
            """, logger: logger)
        for try await (reason, until, holder) in failures.decode((String, Date, String).self) {
            return .failed(reason: reason, until: until, by: holder)
        }
        return .busy
    }

    private func freshStatus(_ certID: CertID, client: PostgresClient) async throws -> CachedOCSPStatus? {
        let rows = try await client.query(StatusRow.valid(certID, at: Date()), logger: logger)
        for try await row in rows {
            if let status = try StatusRow.status(from: row) { return status }
        }
        return nil
    }

    // MARK: Announcements

    public func announce(_ status: CachedOCSPStatus) async {
        guard database.health == .ready else { return }
        let id = status.certID
        let name = ByteBuffer(bytes: id.issuerNameHash), key = ByteBuffer(bytes: id.issuerKeyHash)
        let serial = ByteBuffer(bytes: id.serialNumber)
        let refused: Bool
        switch status.outcome {
        case .revoked, .unknown: refused = true
        case .good, .failed: refused = false
        }
        let message = FleetMessage(kind: .answer, origin: instance, key: id.fleetKey, refused: refused)
        do {
            try await withDeadline(.seconds(2), "announce an answer through \(database.location)") { [database, instance, logger] in
                try await database.client.withTransaction(logger: logger) { connection in
                    if case let .failed(reason) = status.outcome {
                        _ = try await connection.query("""
                            INSERT INTO device_ocsp_lookup (issuer_name_hash, issuer_key_hash, serial, holder, lease_until, failure, failure_until)
                            VALUES (\(name), \(key), \(serial), \(instance), now(), \(reason), \(status.expiresAt))
                            ON CONFLICT (issuer_name_hash, issuer_key_hash, serial) DO UPDATE SET
                                holder = excluded.holder, lease_until = now(), failure = excluded.failure,
                                failure_until = excluded.failure_until
                            """, logger: logger)
                    } else {
                        _ = try await connection.query(StatusRow.upsert(status, writtenBy: instance), logger: logger)
                        _ = try await connection.query("""
                            DELETE FROM device_ocsp_lookup WHERE issuer_name_hash = \(name) AND issuer_key_hash = \(key)
                            AND serial = \(serial)
                            """, logger: logger)
                    }
                    try await FleetChannel.send(message, on: connection, logger: logger)
                }
            }
        } catch {
            logger.warning("cannot share an OCSP answer with the fleet: \(FleetDatabase.describe(error)); the other gateways ask on their own", metadata: [
                "serial": "\(id.serialHex)", "database": "\(database.location)",
            ])
        }
    }

    public func announcements() -> AsyncStream<FleetAnnouncement> { channel.announcements }

    public func closeSessions(of certIDs: [CertID], within timeout: Duration) async -> [FleetSessionsClosed] {
        guard !certIDs.isEmpty, database.health == .ready else { return [] }
        let request = UUID()
        let replies = channel.expectReplies(to: request)
        defer { channel.stopExpectingReplies(to: request) }
        let expected: Set<String>
        do {
            expected = try await channel.otherInstancesAlive()
            for certID in certIDs {
                try await channel.send(FleetMessage(kind: .close, origin: instance, key: certID.fleetKey, request: request))
            }
        } catch {
            logger.warning("cannot ask the other gateways of the fleet to close sessions: \(FleetDatabase.describe(error))")
            return []
        }
        guard !expected.isEmpty else { return [] }
        let wanted = expected.count * certIDs.count
        let collected = NIOLockedValueBox<[FleetSessionsClosed]>([])
        // Until every reply is in, or the time is up: what arrived by then is the answer.
        _ = try? await withDeadline(timeout, "collect the fleet's replies") {
            for await reply in replies {
                let count = collected.withLockedValue { collected -> Int in
                    collected.append(reply)
                    return collected.count
                }
                if count >= wanted { return }
            }
        }
        return collected.withLockedValue { $0 }.sorted { ($0.instance, $0.serial) < ($1.instance, $1.serial) }
    }

    public func reply(to request: UUID, _ closed: FleetSessionsClosed) async {
        var closed = closed
        closed.addresses = Array(closed.addresses.prefix(FleetMessage.maximumAddresses))
        do {
            try await channel.send(FleetMessage(kind: .closed, origin: instance, request: request, closed: closed))
        } catch {
            logger.warning("cannot reply to another gateway's close request: \(FleetDatabase.describe(error))")
        }
    }
}
