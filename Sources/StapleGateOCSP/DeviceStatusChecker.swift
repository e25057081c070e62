import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import StapleGateTLS

/// Judges device certificates against OCSP for the TLS engine (`DeviceCertificateGate`): from
/// the status cache when it can, otherwise by asking the responder in the certificate's AIA
/// extension (or the configured override), one request per certificate however many devices
/// connect with it at once (single flight), at most `maximumRequestsInFlight` requests at a time.
public final class DeviceStatusChecker: DeviceCertificateGate, Sendable {
    private let configuration: DeviceOCSPConfiguration
    private let client: OCSPHTTPClient
    public let cache: OCSPStatusCache
    private let limiter: OCSPRequestLimiter
    private let lookups = NIOLockedValueBox<[CertID: Lookup]>([:])
    /// How long a handshake waits for the store's row on a miss in memory before asking the
    /// responder itself: a shared database that hangs must cost a device no more than this.
    static let storeReadTimeout: Duration = .seconds(1)

    /// A lookup in flight, and whether it may answer from the store (a handshake's) or must
    /// ask the responder (an operator's recheck, which must not be answered by the row it
    /// meant to refresh).
    private struct Lookup {
        let task: Task<CachedOCSPStatus, Never>
        let consultsStore: Bool
    }
    /// CA certificates that may issue device certificates: the device CA bundle, plus
    /// intermediates seen in verified chains. Needed to recheck a certificate known only from a
    /// resumed session or a live session.
    private let issuers: NIOLockedValueBox<[X509Certificate]>
    private let logger: Logger
    private let metrics: DeviceOCSPMetrics
    /// The device identity of a certificate, as admission takes it: recorded with each answer
    /// so that an operator can recheck a device by identity while it is not connected.
    private let identify: @Sendable (X509Certificate) -> String?
    /// The other gateways of the fleet (nil: this gateway asks on its own): one of them asks
    /// about a certificate while the others wait, and every answer is announced to them all.
    public let fleet: (any DeviceStatusFleet)?

    public init(configuration: DeviceOCSPConfiguration, deviceCAs: [X509Certificate], client: OCSPHTTPClient,
                cache: OCSPStatusCache, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory,
                fleet: (any DeviceStatusFleet)? = nil,
                identify: @escaping @Sendable (X509Certificate) -> String? = { $0.commonName }) {
        self.identify = identify
        self.fleet = fleet
        self.configuration = configuration
        self.client = client
        self.cache = cache
        self.limiter = OCSPRequestLimiter(maximum: configuration.maximumRequestsInFlight)
        self.issuers = NIOLockedValueBox(deviceCAs)
        self.logger = logger
        self.metrics = DeviceOCSPMetrics(factory: metricsFactory)
    }

    /// The requests in flight and waiting now (for status and tests).
    public var requestsInFlight: Int { limiter.inFlight }
    public var requestsQueued: Int { limiter.queued }

    // MARK: DeviceCertificateGate

    public func immediateVerdict(for chain: [X509Certificate]) -> DeviceCertificateVerdict? {
        immediateJudgement(for: chain)?.verdict
    }

    public func verdict(for chain: [X509Certificate]) async -> DeviceCertificateVerdict {
        await judgement(for: chain).verdict
    }

    public func immediateJudgement(for chain: [X509Certificate]) -> DeviceCertificateJudgement? {
        let plan = DeviceCheckPlan(chain: chain, configuration: configuration)
        guard plan.policy.enabled else { return DeviceCertificateJudgement(verdict: .accept(note: "OCSP check off for this CA")) }
        var findings: [DeviceCheckFinding] = []
        for check in plan.checks {
            // The cache first: a hit needs neither the AIA extension parsed nor anything else.
            if let cached = cache.lookup(check.certID, now: Date()) {
                metrics.cacheHit()
                findings.append(.status(check, cached, url: cached.responderURL, cached: true))
                continue
            }
            guard check.responderURL != nil else {
                findings.append(.noResponder(check))
                continue
            }
            metrics.cacheMiss()
            return nil
        }
        return judge(findings, policy: plan.policy)
    }

    public func judgement(for chain: [X509Certificate]) async -> DeviceCertificateJudgement {
        let plan = DeviceCheckPlan(chain: chain, configuration: configuration)
        guard plan.policy.enabled else { return DeviceCertificateJudgement(verdict: .accept(note: "OCSP check off for this CA")) }
        learnIssuers(from: chain)
        let findings = await withTaskGroup(of: (Int, DeviceCheckFinding).self) { group in
            for (position, check) in plan.checks.enumerated() {
                group.addTask {
                    guard let url = check.responderURL else { return (position, .noResponder(check)) }
                    if let cached = self.cache.lookup(check.certID, now: Date()) {
                        return (position, .status(check, cached, url: url, cached: true))
                    }
                    let status = await self.lookUp(check, responderURL: url, fetch: plan.policy.fetch, consultStore: true)
                    // An answer from the store is a cached one (another gateway asked, or
                    // this one before it restarted), whatever its source says.
                    return (position, .status(check, status, url: url, cached: status.latency == nil && !status.isFailure))
                }
            }
            var ordered: [(Int, DeviceCheckFinding)] = []
            for await finding in group { ordered.append(finding) }
            return ordered.sorted { $0.0 < $1.0 }.map(\.1)
        }
        return judge(findings, policy: plan.policy)
    }

    public func allowsResumption(of certificate: X509Certificate) -> Bool {
        guard let issuer = issuer(of: certificate) else { return false }
        let plan = DeviceCheckPlan(chain: [certificate, issuer], configuration: configuration)
        guard plan.policy.enabled else { return true }
        // Intermediates are not in a session ticket: scope "chain" needs a full handshake.
        guard plan.policy.scope == .leaf, let check = plan.checks.first else { return false }
        guard check.responderURL != nil else { return plan.policy.noResponder == .allow }
        // Only a fresh "good" resumes; anything else is decided by a full handshake.
        return cache.lookup(check.certID, now: Date())?.outcome == .good
    }

    // MARK: Rechecks (live sessions, `staplegate ocsp recheck`)

    /// Asks the responder again now, whatever the cache holds (joining a request already in
    /// flight), caches the answer, and returns the verdict a new connection would get. Nil when
    /// the certificate's issuer is unknown, so it cannot be asked about. `consultingTheFleet`:
    /// a fresh answer in the store, or another gateway's answer to a request it is making, is
    /// taken instead (a status that ran out, not an operator's doubt).
    public func recheck(_ certificate: X509Certificate, consultingTheFleet: Bool = false) async -> DeviceRecheck? {
        guard let issuer = issuer(of: certificate) else { return nil }
        return await recheck(DeviceCheckPlan(chain: [certificate, issuer], configuration: configuration),
                             consultingTheFleet: consultingTheFleet)
    }

    /// Asks the responder again now about a certificate known only by its cache entry (a device
    /// not connected now), under the policy of its CA, and caches the answer. Nil when the
    /// entry's issuing CA is not known to this gateway (not in the device CA bundle, nor seen
    /// in a chain since it started), so it cannot be asked about.
    public func recheck(entry: CachedOCSPStatus) async -> DeviceRecheck? {
        let issuers = issuerChain(of: entry.certID)
        guard !issuers.isEmpty else { return nil }
        return await recheck(DeviceCheckPlan(entry: entry, issuers: issuers, configuration: configuration))
    }

    /// The leaf check of `plan`, asked now.
    private func recheck(_ plan: DeviceCheckPlan, consultingTheFleet: Bool = false) async -> DeviceRecheck {
        guard plan.policy.enabled, let check = plan.checks.first else {
            return DeviceRecheck(verdict: .accept(note: "OCSP check off for this CA"), asked: .checksOff)
        }
        guard let url = check.responderURL else {
            return DeviceRecheck(verdict: conclude([.noResponder(check)], policy: plan.policy), asked: .noResponder)
        }
        let status = await lookUp(check, responderURL: url, fetch: plan.policy.fetch, consultStore: consultingTheFleet)
        return DeviceRecheck(verdict: conclude([.status(check, status, url: url, cached: false)], policy: plan.policy),
                             asked: .answered(status))
    }

    /// The verdict a new connection with `certificate` would get from what the cache holds now
    /// (nil when nothing valid is cached, or its issuer is unknown): another gateway's answer,
    /// just adopted, applied to this gateway's sessions without asking the responder again.
    public func cachedVerdict(of certificate: X509Certificate) -> DeviceCertificateVerdict? {
        guard let issuer = issuer(of: certificate) else { return nil }
        let plan = DeviceCheckPlan(chain: [certificate, issuer], configuration: configuration)
        guard plan.policy.enabled, let check = plan.checks.first,
              let cached = cache.lookup(check.certID, now: Date()) else { return nil }
        return conclude([.status(check, cached, url: cached.responderURL, cached: true)], policy: plan.policy, counted: false)
    }

    /// The CertID the cache keys `certificate` by; nil when its issuer is unknown. Costs an
    /// issuer search and two hashes: callers that ask repeatedly keep the answer.
    public func certID(of certificate: X509Certificate) -> CertID? {
        guard let issuer = issuer(of: certificate) else { return nil }
        return try? CertID(certificate: certificate, issuer: issuer)
    }

    // MARK: Asking the responder

    /// One lookup per CertID at a time: concurrent callers share the task in flight. With
    /// `consultStore`, the store's row (in a fleet, perhaps another gateway's answer) is tried
    /// before the responder; a recheck joins only a lookup that asks the responder.
    private func lookUp(_ check: DeviceCheck, responderURL: String, fetch: OCSPFetchConfiguration,
                        consultStore: Bool = false) async -> CachedOCSPStatus {
        let task = lookups.withLockedValue { lookups -> Task<CachedOCSPStatus, Never> in
            if let running = lookups[check.certID], consultStore || !running.consultsStore { return running.task }
            let task = Task {
                var status: CachedOCSPStatus?
                if consultStore {
                    status = await self.cache.lookUpInStore(check.certID, now: Date(), timeout: Self.storeReadTimeout)
                    if status == nil { status = await self.fleetAnswer(check, responderURL: responderURL, fetch: fetch) }
                }
                if status == nil {
                    // A handshake does not wait for the fleet to hear the answer; an operator's
                    // recheck does, since it then asks the other gateways to apply it.
                    status = await self.query(check, responderURL: responderURL, fetch: fetch, announceBeforeReturning: !consultStore)
                }
                // Cached before the task is forgotten, so a caller arriving in between hits the cache.
                self.lookups.withLockedValue { lookups in
                    if lookups[check.certID]?.consultsStore == consultStore { lookups.removeValue(forKey: check.certID) }
                }
                return status!
            }
            lookups[check.certID] = Lookup(task: task, consultsStore: consultStore)
            return task
        }
        return await task.value
    }

    /// In a fleet, on a miss in the shared table too: another gateway's answer when it is asking
    /// about the certificate already (waited for), or nil when this gateway is to ask.
    private func fleetAnswer(_ check: DeviceCheck, responderURL: String, fetch: OCSPFetchConfiguration) async -> CachedOCSPStatus? {
        guard let fleet else { return nil }
        // The holder may wait in its own request queue, then for the responder: the lease
        // covers both, and a waiter gives up a little before the lease would be taken over.
        switch await fleet.turn(for: check.certID, lease: fetch.timeout + .seconds(3), within: fetch.timeout + .seconds(2)) {
        case .ask:
            return nil
        case let .answered(status):
            cache.adopt(status)
            return status
        case let .failedElsewhere(reason, until, by):
            let failure = CachedOCSPStatus(certID: check.certID, outcome: .failed("\(reason) (asked by \(by))"), thisUpdate: nil,
                                           nextUpdate: nil, checkedAt: Date(), expiresAt: until, responderURL: responderURL,
                                           subject: check.subject, identity: nil)
            cache.insert(failure)
            return failure
        }
    }

    private func query(_ check: DeviceCheck, responderURL: String, fetch: OCSPFetchConfiguration,
                       announceBeforeReturning: Bool) async -> CachedOCSPStatus {
        let query = OCSPQuery(client: client, fetch: fetch, clockSkew: configuration.clockSkew, nonce: configuration.nonce)
        metrics.requestQueued(limiter)
        let result = await limiter.run {
            self.metrics.requestStarted(self.limiter)
            return await query.ask(about: check.certID, issuer: check.issuer, responderURL: responderURL)
        }
        metrics.requestFinished(limiter)
        let now = Date()
        let status: CachedOCSPStatus
        let identity: String?
        switch check.known {
        case let .certificate(certificate): identity = check.isLeaf ? identify(certificate) : nil
        case let .cacheEntry(entry): identity = entry.identity
        }
        switch result {
        case let .success(answer):
            let response = answer.response
            metrics.responderLatency(answer.latency)
            let outcome: CachedOCSPStatus.Outcome
            switch response.status {
            case .good: outcome = .good
            case let .revoked(at, reason): outcome = .revoked(at: at, reason: reason)
            case .unknown: outcome = .unknown
            }
            var expires = now.addingTimeInterval(configuration.cacheLifetime.timeInterval)
            if let nextUpdate = response.nextUpdate { expires = min(expires, nextUpdate) }
            var answered = CachedOCSPStatus(certID: check.certID, outcome: outcome, thisUpdate: response.thisUpdate,
                                            nextUpdate: response.nextUpdate, checkedAt: now, expiresAt: expires,
                                            responderURL: responderURL, subject: check.subject, identity: identity)
            answered.latency = answer.latency
            status = answered
            logger.info("OCSP answer for a device certificate", metadata: [
                "device": "\(check.logName)", "serial": "\(check.certID.serialHex)",
                "ocsp.status": "\(response.status)", "ocsp.responder": "\(answer.url)",
                "ocsp.latency_ms": "\(answer.latency.milliseconds)",
                "ocsp.next_update": "\(response.nextUpdate?.iso8601String ?? "none")",
            ])
        case let .failure(failure):
            status = CachedOCSPStatus(certID: check.certID, outcome: .failed(failure.description), thisUpdate: nil,
                                      nextUpdate: nil, checkedAt: now,
                                      expiresAt: now.addingTimeInterval(configuration.failureCacheLifetime.timeInterval),
                                      responderURL: responderURL, subject: check.subject, identity: identity)
            logger.warning("OCSP check of a device certificate failed: \(failure)", metadata: [
                "device": "\(check.logName)", "serial": "\(check.certID.serialHex)",
                "ocsp.responder": "\(responderURL)",
            ])
        }
        // A failure with no failure lifetime is not remembered: the next device asks again.
        if !status.isFailure || configuration.failureCacheLifetime > .zero { cache.insert(status) }
        metrics.cacheSize(cache.count)
        if let fleet {
            if announceBeforeReturning {
                await fleet.announce(status)
            } else {
                Task { await fleet.announce(status) }
            }
        }
        return status
    }

    // MARK: Verdicts

    private func conclude(_ findings: [DeviceCheckFinding], policy: DeviceOCSPConfiguration.CAPolicy,
                          counted: Bool = true) -> DeviceCertificateVerdict {
        judge(findings, policy: policy, counted: counted).verdict
    }

    /// The first refusal, or an acceptance noting every finding; the evidence is the device
    /// certificate's own answer (the trace shows the leaf's status, whichever check refused).
    private func judge(_ findings: [DeviceCheckFinding], policy: DeviceOCSPConfiguration.CAPolicy,
                       counted: Bool = true) -> DeviceCertificateJudgement {
        let evidence = findings.first.flatMap(\.leafEvidence)
        var notes: [String] = []
        for finding in findings {
            let verdict = finding.verdict(policy: policy)
            if counted { metrics.lookup(finding.resultLabel) }
            switch verdict {
            case .reject: return DeviceCertificateJudgement(verdict: verdict, evidence: evidence)
            case let .accept(note): notes.append(note)
            }
        }
        return DeviceCertificateJudgement(verdict: .accept(note: notes.joined(separator: "; ")), evidence: evidence)
    }

    // MARK: Issuers

    private func learnIssuers(from chain: [X509Certificate]) {
        let intermediates = chain.dropFirst().filter(\.isCA)
        guard !intermediates.isEmpty else { return }
        issuers.withLockedValue { known in
            for certificate in intermediates where !known.contains(where: { $0.isSameCertificate(as: certificate) }) {
                known.append(certificate)
            }
        }
    }

    private func issuer(of certificate: X509Certificate) -> X509Certificate? {
        issuers.withLockedValue { known in known.first { (try? CertID(certificate: certificate, issuer: $0)) != nil } }
    }

    /// The known CA that issued the certificate `certID` names, then that CA's issuers as far
    /// as they are known (for the per-CA policy); empty when the issuer is not known.
    private func issuerChain(of certID: CertID) -> [X509Certificate] {
        let known = issuers.withLockedValue { $0 }
        guard let issuer = known.first(where: certID.isIssued(by:)) else { return [] }
        var chain = [issuer]
        // Bounded: a CA bundle is no place for loops, but a cross-signed pair would make one.
        while chain.count < 8, let last = chain.last, !last.isSelfIssued,
              let above = known.first(where: { candidate in
                  !chain.contains { $0 === candidate } && (try? CertID(certificate: last, issuer: candidate)) != nil
              }) {
            chain.append(above)
        }
        return chain
    }
}
