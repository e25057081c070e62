import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import StapleGateTLS

/// Keeps a fresh, verified OCSP response stapled for each of the gateway's certificates:
/// fetch → verify → install → archive, on the schedule `StapleSchedule` decides. Staples loaded
/// from the archive (the state directory, or the fleet's table) are verified and installed
/// before the listener opens, so even the first handshake after a start is stapled (nginx
/// staples lazily and misses it).
public final class StaplingService: Sendable {
    struct Target: Sendable {
        let index: Int
        let leaf: X509Certificate
        let issuer: X509Certificate
        let certID: CertID
        let responderURL: String
        let policy: StaplingConfiguration.Policy
    }

    public struct SetupError: Error, CustomStringConvertible, Sendable {
        /// Position in `TLSServerConfiguration.certificates`.
        public let certificateIndex: Int
        public let reason: String
        public var description: String { reason }
    }

    private let targets: [Target]
    private let staples: StapleStore
    private let configuration: StaplingConfiguration
    private let client: OCSPHTTPClient
    /// The status file `ocsp status` reads: always this gateway's own.
    private let persistence: StaplePersistence
    /// Where verified staples are kept between runs (and, with a fleet, shared).
    private let archive: any StapleArchive
    private let logger: Logger
    private let metrics: StaplingMetrics
    private let schedules: NIOLockedValueBox<[StapleSchedule]>

    /// `archive`: where staples are kept between runs; nil: `persistence`'s state directory.
    public init(serverContext: ServerContext, configuration: StaplingConfiguration, persistence: StaplePersistence,
                archive: (any StapleArchive)? = nil, client: OCSPHTTPClient, logger: Logger,
                metricsFactory: any MetricsFactory = MetricsSystem.factory) throws(SetupError) {
        let targets = try Self.targets(serverContext: serverContext, configuration: configuration)
        let now = Date()
        self.targets = targets
        self.staples = serverContext.staples
        self.configuration = configuration
        self.client = client
        self.persistence = persistence
        self.archive = archive ?? persistence
        self.logger = logger
        self.metrics = StaplingMetrics(factory: metricsFactory)
        self.schedules = NIOLockedValueBox(targets.map { _ in StapleSchedule(timing: configuration.timing, now: now) })
    }

    /// Checks, without starting anything, that every certificate can be stapled: its issuer is in
    /// its chain file and a responder URL is known. (The config loader calls it, so a certificate
    /// that cannot be stapled is reported against its key at start, not at the first refresh.)
    public static func validate(serverContext: ServerContext, configuration: StaplingConfiguration) throws(SetupError) {
        _ = try targets(serverContext: serverContext, configuration: configuration)
    }

    static func targets(serverContext: ServerContext, configuration: StaplingConfiguration) throws(SetupError) -> [Target] {
        var targets: [Target] = []
        for (index, identity) in serverContext.material.identities.enumerated() {
            let chainPath = serverContext.configuration.certificates[index].chainPath
            guard identity.chain.count >= 2 else {
                throw SetupError(certificateIndex: index, reason: "\(chainPath): stapling needs the issuing CA certificate; append it to the chain file after the server certificate")
            }
            guard let url = configuration.responderOverride ?? identity.leaf.ocspResponderURLs.first else {
                throw SetupError(certificateIndex: index, reason: "\(chainPath): the certificate names no OCSP responder (no AIA OCSP URL); set stapling.responder or stapling.enabled: false")
            }
            let certID: CertID
            do { certID = try CertID(certificate: identity.leaf, issuer: identity.chain[1]) } catch {
                throw SetupError(certificateIndex: index, reason: "\(chainPath): \(error)")
            }
            targets.append(Target(index: index, leaf: identity.leaf, issuer: identity.chain[1], certID: certID,
                                  responderURL: url, policy: configuration.policy(forMustStaple: identity.leaf.isMustStaple)))
        }
        return targets
    }

    /// Installs the archived staples that still verify (same certificate, in date): what a
    /// previous run, or another gateway of the fleet, fetched.
    public func loadPersisted(now: Date = Date()) async {
        for target in targets {
            if let response = await archived(target, now: now, quiet: false) {
                schedules.withLockedValue {
                    $0[target.index] = StapleSchedule(timing: configuration.timing, now: now, persisted: response)
                }
                logger.notice("installed the persisted OCSP staple from \(archive.location)", metadata: metadata(target, response))
            }
            publish(target, now: now)
        }
        saveStatus(now: now)
    }

    /// The archive's staple for `target` if it verifies now, exactly as a responder's answer
    /// would (the archive may be a shared database: never trusted blindly). `quiet`: a
    /// rejection is logged at debug only (the retry path asks again every few seconds).
    private func archived(_ target: Target, now: Date, quiet: Bool) async -> VerifiedOCSPResponse? {
        let der: [UInt8]
        do {
            guard let found = try await archive.staple(fingerprint: target.leaf.sha256Fingerprint) else { return nil }
            der = found
        } catch {
            logger.log(level: quiet ? .debug : .warning, "cannot read the persisted OCSP staple from \(archive.location): \(error)",
                       metadata: ["certificate": "\(target.leaf.subject)"])
            return nil
        }
        switch verificationPolicy(for: target).verify(der: der, for: target.certID, now: now) {
        case let .success(response) where response.status != .unknown:
            return response
        case .success:
            return nil
        case let .failure(rejection):
            logger.log(level: quiet ? .debug : .info, "persisted OCSP staple from \(archive.location) not used: \(rejection)",
                       metadata: ["certificate": "\(target.leaf.subject)"])
            return nil
        }
    }

    /// Fetches a staple now for every certificate that has no valid one, each attempt bounded
    /// by the fetch timeout. Called before the listener opens, so the very first handshake is
    /// stapled whenever the responder answers; a failure only schedules the retry.
    public func prime() async {
        let now = Date()
        let schedules = self.schedules.withLockedValue { $0 }
        await withTaskGroup(of: Void.self) { group in
            for target in targets where schedules[target.index].servable(at: now) == nil {
                group.addTask { await self.refresh(target) }
            }
        }
    }

    /// Refreshes every certificate's staple until the task is cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            for target in targets {
                group.addTask { await self.keepFresh(target) }
            }
        }
    }

    /// Why a new handshake must be refused now (a strict or must policy without a valid staple).
    public func refusalReason(now: Date = Date()) -> String? {
        let schedules = self.schedules.withLockedValue { $0 }
        for target in targets where target.policy != .lenient && schedules[target.index].servable(at: now) == nil {
            return "no valid OCSP staple held for \(target.leaf.subject) (stapling policy \(target.policy.rawValue))"
        }
        return nil
    }

    /// The certificates (by SHA-256 fingerprint) holding no staple that may be served now,
    /// whatever their policy: what a reload waits for before switching to a new certificate.
    public func fingerprintsWithoutStaple(now: Date = Date()) -> Set<String> {
        let schedules = self.schedules.withLockedValue { $0 }
        return Set(targets.filter { schedules[$0.index].servable(at: now) == nil }.map(\.leaf.sha256Fingerprint))
    }

    public func statuses(now: Date = Date()) -> [StapleStatus] {
        let schedules = self.schedules.withLockedValue { $0 }
        return targets.map { StapleStatus(target: $0, schedule: schedules[$0.index], now: now) }
    }

    // MARK: Refreshing

    /// Refreshes every certificate now, whatever the schedule says (tests drive the service with it).
    func refreshAll() async {
        await withTaskGroup(of: Void.self) { group in
            for target in targets { group.addTask { await self.refresh(target) } }
        }
    }

    /// Re-applies the serving rule at `now`: what is no longer valid is withdrawn.
    func republish(now: Date) {
        for target in targets { publish(target, now: now) }
    }

    /// The longest the refresh loop sleeps: its plan is in wall-clock time, but the sleep runs on
    /// the monotonic clock, so a step of the wall clock (NTP, a VM resumed) is noticed only when
    /// the loop wakes. Without the cap that was up to half a staple's validity later.
    static let clockCheckInterval: TimeInterval = 5

    private func keepFresh(_ target: Target) async {
        while !Task.isCancelled {
            let now = Date()
            let schedule = schedules.withLockedValue { $0[target.index] }
            if schedule.nextRefresh <= now || schedule.clockSteppedBack(now: now) {
                await refresh(target)
                continue
            }
            // Wake for the refresh, or earlier if the staple served now expires before it, and
            // at least every few seconds to notice a step of the wall clock.
            let wake = min(schedule.nextRefresh, schedule.servableUntil(now: now) ?? .distantFuture,
                           now + Self.clockCheckInterval)
            do { try await Task.sleep(for: .seconds(max(wake.timeIntervalSince(now), 0.01))) } catch { return }
            let woke = Date()
            publish(target, now: woke)
            // The status file only when the staple was withdrawn: a wake that only looked at the
            // clock changed nothing, and must not rewrite the file (nor fail to) every few seconds.
            if (schedule.servable(at: now) != nil) != (schedules.withLockedValue { $0[target.index].servable(at: woke) } != nil) {
                saveStatus(now: woke)
            }
        }
    }

    private func refresh(_ target: Target) async {
        let query = OCSPQuery(client: client, fetch: configuration.fetch, clockSkew: configuration.clockSkew, nonce: false)
        switch await query.ask(about: target.leaf, issuer: target.issuer, responderURL: target.responderURL) {
        case let .success(answer):
            let response = answer.response
            record(target) { $0.record(response, now: Date(), jitterDraw: .random(in: -1...1)) }
            await report(response, for: target)
        case let .failure(failure):
            fail(target, reason: failure.description)
            await adoptArchived(target)
        }
    }

    /// After a failed refresh with nothing to serve: another gateway of the fleet may have
    /// reached the responder (or the database may be back since the start) — its staple,
    /// verified, is served until a refresh of our own succeeds.
    private func adoptArchived(_ target: Target) async {
        let now = Date()
        guard schedules.withLockedValue({ $0[target.index].servable(at: now) }) == nil,
              let response = await archived(target, now: now, quiet: true) else { return }
        record(target) { $0.adopt(response) }
        logger.notice("installed the OCSP staple found in \(archive.location) while the responder fails",
                      metadata: metadata(target, response))
    }

    private func fail(_ target: Target, reason: String) {
        metrics.countRefresh(serial: target.leaf.serialHex, result: .failed)
        let schedule = record(target) { $0.recordFailure(reason, now: Date(), jitterDraw: .random(in: -1...1)) }
        let kept = schedule.servable(at: Date()).flatMap(\.nextUpdate).map { "keeping the previous staple until \($0)" }
            ?? "no staple held"
        logger.warning("OCSP staple refresh failed: \(reason); \(kept); retry at \(schedule.nextRefresh)", metadata: [
            "certificate": "\(target.leaf.subject)", "responder": "\(target.responderURL)",
            "failures": "\(schedule.consecutiveFailures)",
        ])
    }

    private func report(_ response: VerifiedOCSPResponse, for target: Target) async {
        switch response.status {
        case .good:
            metrics.countRefresh(serial: target.leaf.serialHex, result: .good)
            logger.info("OCSP staple refreshed", metadata: metadata(target, response))
            await persist(response, for: target)
        case .revoked:
            metrics.countRefresh(serial: target.leaf.serialHex, result: .revoked)
            logger.critical("the OCSP responder says our own certificate is REVOKED; stapling that answer — replace the certificate",
                            metadata: metadata(target, response))
            await persist(response, for: target)
        case .unknown:
            metrics.countRefresh(serial: target.leaf.serialHex, result: .unknown)
            logger.error("the OCSP responder does not know our certificate (status unknown); not stapled",
                         metadata: metadata(target, response))
        }
    }

    @discardableResult
    private func record(_ target: Target, _ change: (inout StapleSchedule) -> Void) -> StapleSchedule {
        let schedule = schedules.withLockedValue { schedules -> StapleSchedule in
            change(&schedules[target.index])
            return schedules[target.index]
        }
        publish(target, now: Date())
        saveStatus(now: Date())
        return schedule
    }

    /// Puts what may be served now into the store the handshakes read.
    private func publish(_ target: Target, now: Date) {
        let servable = schedules.withLockedValue { $0[target.index].servable(at: now) }
        staples.setStaple(servable?.der, validUntil: servable?.nextUpdate, forCertificateAt: target.index)
    }

    private func persist(_ response: VerifiedOCSPResponse, for target: Target) async {
        do { try await archive.save(response, fingerprint: target.leaf.sha256Fingerprint) } catch {
            logger.error("cannot persist the OCSP staple in \(archive.location): \(error)")
        }
    }

    /// After every change and check: the status file `ocsp status` reads, and the metrics.
    private func saveStatus(now: Date) {
        let statuses = statuses(now: now)
        for status in statuses { metrics.update(status, now: now) }
        do { try persistence.saveStatus(statuses) } catch {
            logger.error("cannot write \(persistence.statusFile): \(error)")
        }
    }

    private func verificationPolicy(for target: Target) -> OCSPVerificationPolicy {
        OCSPVerificationPolicy(issuer: target.issuer, clockSkew: configuration.clockSkew)
    }

    private func metadata(_ target: Target, _ response: VerifiedOCSPResponse) -> Logger.Metadata {
        [
            "certificate": "\(target.leaf.subject)", "serial": "\(target.leaf.serialHex)",
            "ocsp.status": "\(response.status)", "ocsp.this_update": "\(response.thisUpdate)",
            "ocsp.next_update": "\(response.nextUpdate.map { "\($0)" } ?? "none")",
            "ocsp.responder": "\(response.responderID)",
        ]
    }
}

extension StapleStatus {
    init(target: StaplingService.Target, schedule: StapleSchedule, now: Date) {
        let held = schedule.held
        var certStatus = "none"
        var revokedAt: Date?
        var reason: String?
        switch held?.status {
        case .good: certStatus = "good"
        case let .revoked(at, revocationReason):
            certStatus = "revoked"
            revokedAt = at
            reason = revocationReason?.rawValue
        case .unknown: certStatus = "unknown"
        case nil: if schedule.lastOutcome == .notStapledUnknown { certStatus = "unknown" }
        }
        var lastResult: String?
        switch schedule.lastOutcome {
        case let .stapled(status)?: lastResult = "ok (\(status))"
        case .notStapledUnknown?: lastResult = "responder answered unknown"
        case let .failed(reason)?: lastResult = "failed: \(reason)"
        case nil: lastResult = nil
        }
        self.init(subject: target.leaf.subject, serial: target.leaf.serialHex, fingerprint: target.leaf.sha256Fingerprint,
                  responderURL: target.responderURL, policy: target.policy.rawValue, certStatus: certStatus,
                  revokedAt: revokedAt, revocationReason: reason, thisUpdate: held?.thisUpdate, nextUpdate: held?.nextUpdate,
                  producedAt: held?.producedAt, responderID: held?.responderID, serving: schedule.servable(at: now) != nil,
                  lastFetch: schedule.lastAttempt, lastResult: lastResult, nextRefresh: schedule.nextRefresh,
                  consecutiveFailures: schedule.consecutiveFailures)
    }
}
