import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import StapleGateOCSP
import StapleGateProxy
import StapleGateTLS

/// Applies revocations to sessions already open, which no other front does: when the cached
/// status of a connected device's certificate expires, it is asked again in the background, and
/// sessions whose certificate a new connection would now be refused for (revoked, or unknown
/// where that is refused) are closed. A responder that cannot be reached does not cut sessions
/// off: hard-fail applies to new connections.
public final class SessionRevocationMonitor: Service, Sendable {
    public struct RecheckResult: Sendable, Codable {
        public let serial: String
        public let device: String
        public let verdict: String
        public let refused: Bool
        public let sessionsClosed: Int
    }

    /// The serving generation's checker; a reload hands over the new one (nil: checks off).
    private let currentChecker: NIOLockedValueBox<DeviceStatusChecker?>
    public var checker: DeviceStatusChecker? { currentChecker.withLockedValue { $0 } }
    private let sessions: LiveSessions
    /// Each live session's cache key, worked out once (an issuer search and two hashes) rather
    /// than on every pass over thousands of sessions; nil when its issuer is unknown.
    private let keys = NIOLockedValueBox<[ObjectIdentifier: CertID?]>([:])
    private let interval: Duration
    private let logger: Logger

    public init(checker: DeviceStatusChecker?, sessions: LiveSessions, interval: Duration = .seconds(1), logger: Logger) {
        self.currentChecker = NIOLockedValueBox(checker)
        self.sessions = sessions
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.recheckExpired(now: Date())
                do { try await Task.sleep(for: self.interval) } catch { return }
            }
        }
    }

    /// From now on, sessions are rechecked with `checker` (a reload's), or not at all (nil).
    public func use(_ checker: DeviceStatusChecker?) {
        currentChecker.withLockedValue { $0 = checker }
        keys.withLockedValue { $0 = [:] }  // a new device CA bundle may resolve issuers differently
    }

    /// Rechecks every connected certificate whose cached status has expired (or was dropped).
    func recheckExpired(now: Date) async {
        guard let checker else { return }
        let live = sessions.all
        var groups: [CertID: [LiveSessions.Session]] = [:]
        keys.withLockedValue { keys in
            var seen: [ObjectIdentifier: CertID?] = [:]
            for session in live {
                let channel = ObjectIdentifier(session.channel)
                let key = keys[channel] ?? checker.certID(of: session.certificate)
                seen[channel] = key
                if let key { groups[key, default: []].append(session) }
            }
            keys = seen  // sessions that ended are forgotten
        }
        let due = groups.filter { key, _ in (checker.cache.peek(key)?.expiresAt ?? .distantPast) <= now }
        await withTaskGroup(of: Void.self) { tasks in
            for (_, group) in due {
                tasks.addTask {
                    _ = await self.recheck(group[0].certificate, sessions: group, reason: "cached status expired")
                }
            }
        }
    }

    /// `staplegate ocsp recheck --serial HEX`: forgets what the cache holds for the serial (so the
    /// next connect asks the responder too), rechecks each connected certificate with it, and
    /// closes the sessions it would now refuse.
    public func recheck(serialHex: String) async -> [RecheckResult] {
        checker?.cache.remove(serialHex: serialHex)
        return await recheck(sessions.sessions(serialHex: serialHex), reason: "recheck requested")
    }

    /// The same for a device identity (certificate CN).
    public func recheck(identity: String) async -> [RecheckResult] {
        let matching = sessions.sessions(identity: identity)
        for serial in Set(matching.map(\.certificate.serialHex)) { checker?.cache.remove(serialHex: serial) }
        return await recheck(matching, reason: "recheck requested")
    }

    private func recheck(_ matching: [LiveSessions.Session], reason: String) async -> [RecheckResult] {
        var groups: [String: (X509Certificate, [LiveSessions.Session])] = [:]
        for session in matching {
            groups[session.certificate.sha256Fingerprint, default: (session.certificate, [])].1.append(session)
        }
        var results: [RecheckResult] = []
        for (certificate, group) in groups.values {
            if let result = await recheck(certificate, sessions: group, reason: reason) { results.append(result) }
        }
        return results
    }

    private func recheck(_ certificate: X509Certificate, sessions group: [LiveSessions.Session], reason: String) async -> RecheckResult? {
        let identity = group.first?.identity ?? certificate.subject
        guard let checker else { return nil }
        guard let (verdict, _) = await checker.recheck(certificate) else {
            logger.warning("cannot recheck a connected device: its issuing CA is not known", metadata: ["device": "\(identity)"])
            return nil
        }
        var closed = 0
        let refused: Bool
        switch verdict {
        case .accept:
            refused = false
        case .reject(.statusUnavailable, _):
            refused = false  // keep the session; new connections follow the hard/soft-fail policy
            logger.warning("connected device could not be rechecked: \(verdict.reason); session kept",
                           metadata: ["device": "\(identity)"])
        case .reject:
            refused = true
            for session in group {
                logger.warning("closing the session of a device whose certificate is no longer accepted: \(verdict.reason)", metadata: [
                    "device": "\(session.identity)", "conn": "\(session.connectionID)", "why": "\(reason)",
                ])
                session.channel.pipeline.fireUserInboundEventTriggered(
                    ProxyEvent.sessionEnding(closedBy: "gateway", reason: "certificate no longer accepted: \(verdict.reason)"))
                session.channel.close(promise: nil)
                closed += 1
            }
        }
        return RecheckResult(serial: certificate.serialHex, device: identity, verdict: verdict.reason, refused: refused,
                             sessionsClosed: closed)
    }
}
