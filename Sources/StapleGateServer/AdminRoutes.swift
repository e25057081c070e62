import CoreMetrics
import Foundation
import Logging
import NIOCore
import StapleGateConfig
import StapleGateFleet
import StapleGateOCSP
import StapleGateTLS
import StapleGateTrace

/// What the admin listener answers (all GET; other methods get 405, unknown paths 404):
/// - `/healthz`: 200 "ok" while every event loop runs tasks;
/// - `/readyz`: 200 when devices are accepted, at least one broker answers and a staple is held
///   where the stapling policy needs one (and, with `fleet.required_for_readiness`, the fleet
///   database is reachable); 503 with the failing conditions otherwise; each broker's state and
///   the fleet database's either way;
/// - `/metrics`: Prometheus text format;
/// - `/ocsp`: the staples held and the device-status cache;
/// - `/devices/ID/trace?since=15m`: the device's trace events, as `staplegate trace ID --json`
///   (in a fleet: its events on every gateway, each naming its instance).
///
/// With `admin.token_file`, every route but the two probes needs `Authorization: Bearer TOKEN`
/// (401 otherwise, before the method or the path is looked at): balancers and service managers
/// probe without credentials, while metrics, OCSP state and traces tell who connected from where.
public struct AdminRoutes: Sendable {
    /// Answered to anyone: they say only whether the gateway is alive and serving.
    static let probes: Set<String> = ["/healthz", "/readyz"]

    let isAcceptingDevices: @Sendable () -> Bool
    let upstream: UpstreamProbe
    /// The serving generation (a reload replaces it): its staples and device checker.
    let generation: @Sendable () -> GatewayGeneration
    /// The trace store (its reader answers); nil when tracing is off.
    let traceStore: (any TraceStore)?
    /// The metrics backend's exposition in the Prometheus text format.
    let metricsText: @Sendable () -> [UInt8]
    let eventLoops: EventLoopGroup
    /// The fleet's database (`fleet.store: postgres`), reported by /readyz; nil without one.
    let fleetDatabase: FleetDatabase?
    /// `fleet.required_for_readiness`: whether an unreachable database fails /readyz.
    let fleetDatabaseRequired: Bool
    /// `admin.token_file`'s token as of the serving configuration (a reload may change it).
    let token: @Sendable () -> AccessToken?
    private let unauthorized: Counter
    private let unauthorizedWarning = ThrottledWarning(logInterval: .seconds(60))
    private let logger: Logger?

    public init(isAcceptingDevices: @escaping @Sendable () -> Bool, upstream: UpstreamProbe,
                generation: @escaping @Sendable () -> GatewayGeneration, traceStore: (any TraceStore)?, eventLoops: EventLoopGroup,
                fleetDatabase: FleetDatabase? = nil, fleetDatabaseRequired: Bool = false,
                token: @escaping @Sendable () -> AccessToken? = { nil }, logger: Logger? = nil,
                metricsFactory: any MetricsFactory = MetricsSystem.factory,
                metricsText: @escaping @Sendable () -> [UInt8]) {
        self.token = token
        self.logger = logger
        unauthorized = Counter(label: "staplegate_admin_requests_unauthorized_total", factory: metricsFactory)
        self.fleetDatabase = fleetDatabase
        self.fleetDatabaseRequired = fleetDatabaseRequired
        self.isAcceptingDevices = isAcceptingDevices
        self.upstream = upstream
        self.generation = generation
        self.traceStore = traceStore
        self.eventLoops = eventLoops
        self.metricsText = metricsText
    }

    public static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    public func handle(_ request: ControlRequest) async -> ControlResponse {
        if !Self.probes.contains(request.path), let token = token() {
            guard let presented = AccessToken.bearer(fromAuthorization: request.authorization), token.matches(presented) else {
                return refuseUnauthorized(request)
            }
        }
        guard request.method == "GET" else {
            return ControlResponse(status: 405, body: ControlResponse.error("only GET is served here, not \(request.method)", status: 405).body,
                                   headers: [("Allow", "GET")])
        }
        switch request.path {
        case "/healthz": return await health()
        case "/readyz": return await readiness()
        case "/metrics": return ControlResponse(status: 200, body: metricsText(), contentType: Self.prometheusContentType)
        case "/ocsp": return ocsp()
        default:
            if request.path.hasPrefix("/devices/"), request.path.hasSuffix("/trace") {
                let device = String(request.path.dropFirst("/devices/".count).dropLast("/trace".count))
                if !device.isEmpty { return await trace(device: device, since: request.query["since"]) }
            }
            return .error("no such route: GET \(request.path)", status: 404)
        }
    }

    private func refuseUnauthorized(_ request: ControlRequest) -> ControlResponse {
        unauthorized.increment()
        let why = request.authorization == nil ? "no Authorization header" : "a wrong or malformed token"
        if let count = unauthorizedWarning.occurred() {
            // At most a line a minute, counting the refusals since the line before.
            logger?.warning("admin listener: refused \(count) request(s) without a valid admin token since the last such line (the latest: \(request.method) \(request.path), \(why))")
        }
        return ControlResponse(
            status: 401,
            body: ControlResponse.error("this endpoint needs the admin token (admin.token_file): send Authorization: Bearer TOKEN (\(why) was given)", status: 401).body,
            headers: [("WWW-Authenticate", "Bearer realm=\"staplegate admin\"")])
    }

    // MARK: - Probes

    /// Each event loop runs a task: a loop stuck in a busy handshake or a deadlock fails this.
    private func health() async -> ControlResponse {
        let loops = Array(eventLoops.makeIterator())
        let answered = loops.map { $0.submit {} }
        let deadline = loops[0].scheduleTask(in: .seconds(2)) {}
        let all = EventLoopFuture.andAllSucceed(answered, on: loops[0])
        let first = loops[0].makePromise(of: Bool.self)
        all.whenSuccess { first.succeed(true) }
        deadline.futureResult.whenSuccess { first.succeed(false) }
        let alive = (try? await first.futureResult.get()) ?? false
        deadline.cancel()
        return alive ? .text("ok\n") : .text("event loops not answering\n", status: 503)
    }

    public struct Readiness: Codable, Sendable {
        public struct Failure: Codable, Sendable {
            /// listener, upstream, stapling or fleet_database.
            public let check: String
            public let reason: String
        }

        /// One configured broker, as sessions see it (a down broker is skipped while another is up).
        public struct Broker: Codable, Sendable {
            /// As configured: `127.0.0.1:1883`, `[::1]:1883`, `unix:/run/mosquitto/mosquitto.sock`.
            public let broker: String
            public let up: Bool
            /// When it went up or down (or when the gateway started using it, if it never failed).
            public let since: Date
            /// Why it could not be reached the last time it could not; kept after it is back.
            public let lastError: String?
        }

        /// The fleet's shared database, as the gateway's health probe last found it.
        public struct FleetDatabaseState: Codable, Sendable {
            /// Its URL, without any secret.
            public let database: String
            /// connecting, ready or unreachable.
            public let state: String
            /// Why it is unreachable.
            public let reason: String?
            /// Whether an unreachable database fails readiness (`fleet.required_for_readiness`).
            public let requiredForReadiness: Bool
        }

        public let ready: Bool
        public let failing: [Failure]
        public let brokers: [Broker]
        /// nil with `fleet.store: sqlite`.
        public let fleetDatabase: FleetDatabaseState?
    }

    private func readiness() async -> ControlResponse {
        var failing: [Readiness.Failure] = []
        if !isAcceptingDevices() {
            failing.append(.init(check: "listener", reason: "the device listener is not accepting connections"))
        }
        // Ready while any broker answers: the others are skipped until they are back.
        let upstream = await upstream.report()
        if let failure = upstream.failure {
            failing.append(.init(check: "upstream", reason: failure))
        }
        if let refusal = generation().refusalReason() {
            failing.append(.init(check: "stapling", reason: refusal))
        }
        // Reported always; a failure only when the operator asked for it: without its database
        // the gateway still admits the devices it knows and asks the responder about others.
        let database = fleetDatabase.map { database -> Readiness.FleetDatabaseState in
            let health = database.health
            var reason: String?
            if case let .unreachable(why) = health { reason = why }
            return .init(database: database.location, state: health.label, reason: reason,
                         requiredForReadiness: fleetDatabaseRequired)
        }
        if let database, fleetDatabaseRequired, database.state != FleetDatabase.Health.ready.label {
            failing.append(.init(check: "fleet_database",
                                 reason: "the fleet database \(database.database) is \(database.state)" + (database.reason.map { ": \($0)" } ?? "")))
        }
        let brokers = upstream.brokers.map { status in
            Readiness.Broker(broker: "\(status.broker)", up: status.up, since: status.since, lastError: status.lastError)
        }
        return .json(Readiness(ready: failing.isEmpty, failing: failing, brokers: brokers, fleetDatabase: database),
                     status: failing.isEmpty ? 200 : 503)
    }

    // MARK: - OCSP

    public struct OCSPState: Codable, Sendable {
        public struct Staple: Codable, Sendable {
            public let subject: String
            public let serial: String
            /// good, revoked, unknown or none (nothing verified yet).
            public let status: String
            public let serving: Bool
            public let thisUpdate: Date?
            public let nextUpdate: Date?
            public let secondsToNextUpdate: Double?
            public let consecutiveFailures: Int
            public let lastResult: String?
        }

        public let staplingEnabled: Bool
        public let staples: [Staple]
        public let deviceChecksEnabled: Bool
        /// The device-status cache, most recently used first (as `staplegate ocsp cache`).
        public let deviceCache: [CachedOCSPStatus.Listing]
    }

    private func ocsp() -> ControlResponse {
        let now = Date()
        let serving = generation()
        let stapling = serving.stapling, checker = serving.checker
        let staples = (stapling?.statuses(now: now) ?? []).map { status in
            OCSPState.Staple(subject: status.subject, serial: status.serial, status: status.certStatus,
                             serving: status.serving, thisUpdate: status.thisUpdate, nextUpdate: status.nextUpdate,
                             secondsToNextUpdate: status.nextUpdate.map { $0.timeIntervalSince(now).rounded() },
                             consecutiveFailures: status.consecutiveFailures, lastResult: status.lastResult)
        }
        return .json(OCSPState(staplingEnabled: stapling != nil, staples: staples, deviceChecksEnabled: checker != nil,
                               deviceCache: checker?.cache.entries().map(\.listing) ?? []))
    }

    // MARK: - Traces

    private func trace(device: String, since: String?) async -> ControlResponse {
        guard let traceStore else {
            return .error("tracing is off (trace.enabled: false, or the store could not be opened)", status: 503)
        }
        var after: Date?
        if let since {
            guard let duration = ConfigDuration.parse(since), duration > .zero else {
                return .error("since must be a duration such as 90s, 15m, 1h or 3d, not \"\(since)\"", status: 400)
            }
            after = Date().addingTimeInterval(-duration.timeInterval)
        }
        // What this gateway has recorded up to now, the events of a session that just ended included.
        await traceStore.written()
        let events: [TraceEvent]
        do {
            events = try await traceStore.reader().events(device: device, since: after)
        } catch {
            return .error("\(error)", status: 500)
        }
        guard !events.isEmpty else {
            return .json(["error": "no trace events for device \(device)", "device": device], status: 404)
        }
        // The objects `staplegate trace DEVICE --json` prints, as one array.
        let body = (try? TraceTimeline.jsonEncoder().encode(events)).map(Array.init) ?? Array("[]".utf8)
        return ControlResponse(status: 200, body: body)
    }
}
