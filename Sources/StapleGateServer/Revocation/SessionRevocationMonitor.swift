import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import StapleGateOCSP
import StapleGateProxy
import StapleGateTLS
import StapleGateTrace

/// Applies revocations to devices already known, which no other front does:
/// - when the cached status of a connected device's certificate expires, it is asked again in
///   the background, and sessions a new connection would now be refused for (revoked, or
///   unknown where that is refused) are closed;
/// - `staplegate ocsp recheck` asks again right away about every certificate the gateway knows
///   for a device or serial, connected or not, caches the answers and closes refused sessions.
/// A responder that cannot be reached does not cut sessions off: hard-fail applies to new
/// connections.
public final class SessionRevocationMonitor: Service, Sendable {
    /// The serving generation's checker; a reload hands over the new one (nil: checks off).
    private let currentChecker: NIOLockedValueBox<DeviceStatusChecker?>
    public var checker: DeviceStatusChecker? { currentChecker.withLockedValue { $0 } }
    private let sessions: LiveSessions
    /// Each live session's cache key, worked out once (an issuer search and two hashes) rather
    /// than on every pass over thousands of sessions; nil when its issuer is unknown.
    /// Kept with the certificate it was worked out for: a channel's identifier is its address,
    /// which a new channel may get once the old one is freed, and that channel's certificate is
    /// another (the hour's soak run saw a recheck close, and bar, the wrong device by it).
    private let keys = NIOLockedValueBox<[ObjectIdentifier: (certificate: X509Certificate, key: CertID?)]>([:])
    /// Certificates the background pass found nothing to ask about (checks off for their CA, no
    /// responder): not rechecked every second. Forgotten at a reload, whose policy may differ.
    private let unaskable = NIOLockedValueBox<Set<CertID>>([])
    /// Until when each connected certificate's last answer holds, as the pass last saw it: an
    /// entry evicted from a full status cache has not expired, and must not be asked about
    /// again every second (with more live devices than `cache_size`, that would ask the
    /// responder about the evicted ones on every pass).
    private let knownUntil = NIOLockedValueBox<[CertID: Date]>([:])
    private let interval: Duration
    private let recorder: RecheckRecorder
    private let logger: Logger

    public init(checker: DeviceStatusChecker?, sessions: LiveSessions, interval: Duration = .seconds(1),
                traceStore: (any TraceStore)? = nil, metricsFactory: any MetricsFactory = MetricsSystem.factory,
                logger: Logger) {
        self.currentChecker = NIOLockedValueBox(checker)
        self.sessions = sessions
        self.interval = interval
        self.recorder = RecheckRecorder(traceStore: traceStore, factory: metricsFactory)
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
        unaskable.withLockedValue { $0 = [] }
    }

    // MARK: The background pass

    /// Rechecks every connected certificate whose cached status has expired (or was dropped).
    func recheckExpired(now: Date) async {
        guard let checker else { return }
        let mark = sessions.registrationMark
        let groups = grouped(sessions.all, checker: checker, forgettingEnded: true)
        let skipped = unaskable.withLockedValue { $0 }
        let due = knownUntil.withLockedValue { known in
            // Only the certificates connected now are remembered.
            known = known.filter { key, _ in groups[key] != nil }
            return groups.compactMap { key, group in key.map { ($0, group) } }.filter { key, _ in
                if let entry = checker.cache.peek(key) { known[key] = entry.expiresAt }
                return !skipped.contains(key) && (known[key] ?? .distantPast) <= now
            }
        }
        await withTaskGroup(of: Void.self) { tasks in
            for (key, group) in due {
                tasks.addTask {
                    let target = RecheckTarget(certID: key, certificate: group[0].certificate, entry: nil, sessions: group, mark: mark)
                    let result = await self.recheck(target, checker: checker, trigger: .expiry)
                    if result.answer == .notChecked || result.answer == .noResponder {
                        self.unaskable.withLockedValue { _ = $0.insert(key) }
                    }
                }
            }
        }
    }

    /// `live` grouped by their certificate's cache key; those whose issuer is unknown (so that
    /// they cannot be asked about) under nil. `forgettingEnded`: `live` is every session, so
    /// the keys of sessions not in it are dropped.
    private func grouped(_ live: [LiveSessions.Session], checker: DeviceStatusChecker,
                         forgettingEnded: Bool = false) -> [CertID?: [LiveSessions.Session]] {
        var groups: [CertID?: [LiveSessions.Session]] = [:]
        keys.withLockedValue { keys in
            var seen: [ObjectIdentifier: (certificate: X509Certificate, key: CertID?)] = [:]
            for session in live {
                let channel = ObjectIdentifier(session.channel)
                let key: CertID?
                if let cached = keys[channel], cached.certificate === session.certificate {
                    key = cached.key
                } else {
                    key = checker.certID(of: session.certificate)
                }
                seen[channel] = (session.certificate, key)
                groups[key, default: []].append(session)
            }
            if forgettingEnded { keys = seen } else { keys.merge(seen) { $1 } }
        }
        return groups
    }

    // MARK: The operator's recheck

    /// `staplegate ocsp recheck --serial HEX | --device IDENTITY`: every certificate the
    /// gateway knows for `selector` (in its status cache, on disk, or connected now) is asked
    /// about again right away; each answer is cached, and sessions it refuses are closed.
    public func recheck(_ selector: CertificateSelector) async -> RecheckReport {
        guard let checker else { return RecheckReport(target: "\(selector)", certificates: []) }
        var targets: [CertID: RecheckTarget] = [:]
        var unkeyed: [String: RecheckTarget] = [:]
        let mark = sessions.registrationMark
        for (key, group) in grouped(sessions.sessions(matching: selector), checker: checker) {
            if let key {
                targets[key] = RecheckTarget(certID: key, certificate: group[0].certificate, entry: nil, sessions: group, mark: mark)
                continue
            }
            // Issuer unknown: one report line per certificate all the same.
            for session in group {
                unkeyed[session.certificate.sha256Fingerprint, default: RecheckTarget(
                    certID: nil, certificate: session.certificate, entry: nil, sessions: [])].sessions.append(session)
            }
        }
        do {
            for entry in try await checker.cache.statuses(matching: selector) {
                targets[entry.certID, default: RecheckTarget(certID: entry.certID, certificate: nil, entry: nil, sessions: [], mark: mark)]
                    .entry = entry
            }
        } catch {
            logger.error("recheck of \(selector): \(error); rechecking what is in memory and connected only")
        }
        let all = Array(targets.values) + Array(unkeyed.values)
        let results = await withTaskGroup(of: (CertID?, CertificateRecheck).self) { tasks in
            for target in all { tasks.addTask { (target.certID, await self.recheck(target, checker: checker, trigger: .operator)) } }
            var results: [(CertID?, CertificateRecheck)] = []
            for await result in tasks { results.append(result) }
            return results
        }
        // In a fleet, the answers are in the shared table by now: every other gateway applies
        // them to its own sessions, and says what it closed.
        var elsewhere: [FleetSessionsClosed] = []
        let refused = results.compactMap { id, result in result.refused && result.answer != .unavailable ? id : nil }
        if let fleet = checker.fleet, !refused.isEmpty {
            elsewhere = await fleet.closeSessions(of: refused, within: Self.fleetReplyWait)
        }
        return RecheckReport(target: "\(selector)", certificates: results.map(\.1).sorted { ($0.serial, $0.subject) < ($1.serial, $1.subject) },
                             elsewhere: elsewhere)
    }

    /// How long an operator's recheck waits for the other gateways of the fleet to reply.
    static let fleetReplyWait: Duration = .milliseconds(1500)

    // MARK: Another gateway's answer

    /// Another gateway of the fleet got an answer refusing `certID`, or an operator's recheck
    /// there asks: the newest answer is read from the fleet's table into this gateway's cache
    /// (so that reconnects here are refused without asking), and this gateway's sessions with
    /// the certificate are judged by it under this gateway's policy. Returns the addresses of
    /// the sessions closed.
    public func applyFleetAnswer(for certID: CertID) async -> [String] {
        guard let checker else { return [] }
        guard let status = await checker.cache.lookUpInStore(certID, now: Date(), timeout: .seconds(1)) ?? checker.cache.lookup(certID, now: Date()) else {
            return []
        }
        let mark = sessions.registrationMark
        guard let group = grouped(sessions.all, checker: checker)[certID], let first = group.first,
              let verdict = checker.cachedVerdict(of: first.certificate) else { return [] }
        let target = RecheckTarget(certID: certID, certificate: first.certificate, entry: nil, sessions: group)
        var result = describe(target, DeviceRecheck(verdict: verdict, asked: .answered(status)))
        guard case let .reject(refusal, reason) = verdict, refusal != .statusUnavailable else { return [] }
        let closed = close(group, certID: certID, since: mark, checker: checker, reason: reason,
                           why: RecheckRecorder.Trigger.fleet.logReason)
        guard !closed.isEmpty else { return [] }  // already being closed, and counted, by another closer
        result.sessionsClosed = closed.count
        result.sessionAddresses = closed.map(\.remoteAddress)
        result.sessionsKept = 0
        recorder.record(result, trigger: .fleet)
        return closed.map(\.remoteAddress)
    }

    // MARK: One certificate

    /// A certificate to ask about again, with what the gateway has of it: the certificate (from a
    /// live session) or only its cache entry, and the sessions that use it now.
    struct RecheckTarget: Sendable {
        /// Nil when the certificate's issuer is unknown.
        var certID: CertID?
        var certificate: X509Certificate?
        var entry: CachedOCSPStatus?
        var sessions: [LiveSessions.Session]
        /// `LiveSessions.registrationMark` from before `sessions` were gathered.
        var mark: UInt64 = 0
    }

    /// Asks, caches, closes what the answer refuses, then traces and counts it.
    private func recheck(_ target: RecheckTarget, checker: DeviceStatusChecker,
                         trigger: RecheckRecorder.Trigger) async -> CertificateRecheck {
        var asked: DeviceRecheck?
        if let certificate = target.certificate {
            // When a status merely ran out, another gateway's fresh answer serves as well as a
            // new request (in a fleet, one gateway asks); an operator wants the responder itself.
            asked = await checker.recheck(certificate, consultingTheFleet: trigger == .expiry)
        } else if let entry = target.entry {
            asked = await checker.recheck(entry: entry)
        }
        if let certID = target.certID, let answer = asked?.status {
            knownUntil.withLockedValue { $0[certID] = answer.expiresAt }
        }
        var result = describe(target, asked)
        if let certID = target.certID, asked == nil || asked?.status?.isFailure == true {
            // No new answer: the old one must not go on admitting the device.
            checker.cache.discardAnswer(for: certID)
            result.cachedAnswerDropped = target.entry.map { !$0.isFailure } ?? false
            result.cachedUntil = nil
        }
        if asked == nil {
            logger.warning("cannot recheck a device certificate: its issuing CA is not known", metadata: [
                "device": "\(result.device ?? result.subject)", "serial": "\(result.serial)",
            ])
        }
        if let asked, case let .reject(refusal, reason) = asked.verdict, refusal != .statusUnavailable {
            let closed = close(target.sessions, certID: target.certID, since: target.mark, checker: checker, reason: reason,
                               why: trigger.logReason)
            result.sessionsClosed = closed.count
            result.sessionAddresses = closed.map(\.remoteAddress)
            result.sessionsKept = 0
        } else if let asked, case .reject = asked.verdict {
            logger.warning("connected device could not be rechecked: \(asked.verdict.reason); session kept", metadata: [
                "device": "\(result.device ?? result.subject)",
            ])
        }
        // A background pass over a CA without checks has nothing to say, every time: not traced.
        if trigger == .operator || result.answer != .notChecked { recorder.record(result, trigger: trigger) }
        return result
    }

    /// Closes those of `group` no other closer is closing already, and returns them. With the
    /// certificate's `certID`, it is barred first, then the sessions registered with it since
    /// `mark` (while the responder was being asked) are closed too: from the bar on, none can
    /// register (`LiveSessions.bar`). Only those few are grouped, not every session again: a
    /// mass revocation closes thousands of certificates' sessions in one pass.
    private func close(_ group: [LiveSessions.Session], certID: CertID?, since mark: UInt64, checker: DeviceStatusChecker,
                       reason: String, why: String) -> [LiveSessions.Session] {
        var candidates = group
        if let certID {
            sessions.bar(certID)
            let known = Set(group.map { ObjectIdentifier($0.channel) })
            candidates += (grouped(sessions.registered(after: mark), checker: checker)[certID] ?? [])
                .filter { !known.contains(ObjectIdentifier($0.channel)) }
        }
        let claimed = sessions.claimForClosing(candidates)
        for session in claimed {
            logger.warning("closing the session of a device whose certificate is no longer accepted: \(reason)", metadata: [
                "device": "\(session.identity)", "conn": "\(session.connectionID)", "why": "\(why)",
            ])
            session.channel.pipeline.fireUserInboundEventTriggered(
                ProxyEvent.sessionEnding(closedBy: "gateway", reason: "certificate no longer accepted: \(reason)"))
            session.channel.close(promise: nil)
        }
        return claimed
    }

    /// The answer in the report's terms, before any action (sessions all kept).
    private func describe(_ target: RecheckTarget, _ asked: DeviceRecheck?) -> CertificateRecheck {
        let status = asked?.status
        var result = CertificateRecheck(
            serial: target.certID?.serialHex ?? target.certificate.map { CertificateSelector.normalizedSerial($0.serialHex) ?? $0.serialHex } ?? "",
            device: target.sessions.first?.identity ?? target.entry?.identity ?? status?.identity,
            subject: target.certificate?.subject ?? target.entry?.subject ?? "",
            responder: status?.responderURL, answer: .issuerUnknown, refused: false,
            verdict: asked?.verdict.reason ?? "issuing CA not known", sessionsClosed: 0,
            sessionsKept: target.sessions.count, sessionAddresses: target.sessions.map(\.remoteAddress),
            cachedAnswerDropped: false)
        guard let asked else { return result }
        if case .reject = asked.verdict { result.refused = true }
        switch asked.asked {
        case .checksOff: result.answer = .notChecked
        case .noResponder: result.answer = .noResponder
        case let .answered(status):
            result.cachedUntil = status.expiresAt
            switch status.outcome {
            case .good: result.answer = .good
            case let .revoked(at, reason):
                result.answer = .revoked
                result.revokedAt = at
                result.revocationReason = reason?.rawValue
            case .unknown: result.answer = .unknown
            case let .failed(why):
                result.answer = .unavailable
                result.failure = why
            }
        }
        return result
    }
}
