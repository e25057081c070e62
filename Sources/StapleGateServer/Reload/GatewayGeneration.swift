import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StapleGateAdmission
import StapleGateConfig
import StapleGateFleet
import StapleGateOCSP
import StapleGateTLS

/// Everything new device connections are built from, as one configuration file produced it:
/// the TLS context (with the device checker as its gate), the stapling service filling that
/// context's staples, and the settings admission and the proxy read. A reload builds a new
/// generation beside the one serving and swaps it in whole; connections already open keep the
/// one they were accepted with, so an established session never sees a half-applied change.
public final class GatewayGeneration: Sendable {
    public let configuration: GatewayConfiguration
    public let serverContext: ServerContext
    /// nil when OCSP checks are off for every device CA.
    public let checker: DeviceStatusChecker?
    /// nil when stapling is off.
    public let stapling: StaplingService?

    public init(configuration: GatewayConfiguration, serverContext: ServerContext, checker: DeviceStatusChecker? = nil,
                stapling: StaplingService? = nil) {
        self.configuration = configuration
        self.serverContext = serverContext
        self.checker = checker
        self.stapling = stapling
    }

    /// Why a new connection must be refused now (a strict staple policy with no staple), or nil.
    public func refusalReason() -> String? { stapling?.refusalReason() }

    /// The server certificates' fingerprints, in configuration order: what decides whether a
    /// reload changes the certificate devices see.
    public var serverCertificateFingerprints: [String] {
        serverContext.material.identities.map(\.leaf.sha256Fingerprint)
    }

    /// How device chains are verified (from the issuing CA up, or in full and why), for the log.
    public var deviceChainSummary: String { serverContext.deviceChainSummary }

    /// How sessions resume (which keys seal tickets, never the keys themselves), for the log.
    public var resumptionSummary: String {
        serverContext.resumption?.summary ?? "tickets sealed with OpenSSL's random keys of this TLS context"
    }

    /// The device CA bundle's certificates by fingerprint, with their subjects.
    public var deviceCASubjects: [String: String] {
        Dictionary(serverContext.material.deviceCAs.map { ($0.sha256Fingerprint, $0.subject) }) { first, _ in first }
    }
}

/// Builds generations: at start and for each reload. What must outlive a reload lives here —
/// the device-status cache (statuses are keyed by CertID, so they stay right whatever the new
/// configuration says; a reload must not make the whole fleet ask the responder again), and
/// the session cache used without `tls.session_ticket_keys` (a reload must not end every
/// device's resumption).
public final class GatewayGenerationBuilder: Sendable {
    private let eventLoops: EventLoopGroup
    private let logger: Logger
    private let statusCache = NIOLockedValueBox<OCSPStatusCache?>(nil)
    /// Made once per process; a key file or the fleet's keys, when configured, take its place.
    private let processSessions = ServerSessionCache()
    /// `tls.session_ticket_keys: fleet`: started at the first build that asks for it, then kept
    /// (with its ring) for the life of the process, reloads included.
    private let fleetTicketKeys = NIOLockedValueBox<FleetTicketKeys?>(nil)
    /// The fleet's database with `fleet.store: postgres`, opened once at start; nil: each
    /// store is this gateway's own file.
    public let fleetDatabase: FleetDatabase?
    /// The other gateways of the fleet, for device checks (nil: on its own); one per process,
    /// kept across reloads.
    public let deviceStatusFleet: (any DeviceStatusFleet)?

    public init(eventLoops: EventLoopGroup, logger: Logger, fleetDatabase: FleetDatabase? = nil) {
        self.eventLoops = eventLoops
        self.logger = logger
        self.fleetDatabase = fleetDatabase
        deviceStatusFleet = FleetStores.deviceStatusFleet(database: fleetDatabase, logger: logger)
    }

    /// The generation `loaded` describes. Its stapling service is built but not started: the
    /// caller loads persisted staples and primes it before the generation serves anyone.
    public func build(_ loaded: LoadedConfiguration) throws -> GatewayGeneration {
        let checker = makeDeviceStatusChecker(loaded)
        let serverContext = try loaded.serverContext.with(resumption: resumption(loaded), deviceCertificateGate: checker)
        var stapling: StaplingService?
        let configuration = loaded.configuration
        if configuration.stapling.enabled {
            stapling = try StaplingService(
                serverContext: serverContext, configuration: configuration.stapling,
                persistence: StaplePersistence(directory: configuration.stateDirectory),
                archive: FleetStores.staples(database: fleetDatabase, stateDirectory: configuration.stateDirectory, logger: logger),
                client: OCSPHTTPClient(group: eventLoops), logger: logger)
        }
        return GatewayGeneration(configuration: configuration, serverContext: serverContext, checker: checker,
                                 stapling: stapling)
    }

    /// What `tls.session_ticket_keys` asks for: the process's session cache, or tickets sealed
    /// with the key file's keys or the fleet's.
    private func resumption(_ loaded: LoadedConfiguration) throws -> any SessionResumption {
        // Sized by every build, so a reload's new size applies (shrinking drops the oldest).
        processSessions.resize(to: loaded.configuration.tls.sessionCacheSize)
        switch loaded.configuration.tls.sessionTicketKeys {
        case .process:
            return processSessions
        case .file:
            return loaded.sessionTicketKeys ?? processSessions
        case .fleet:
            return try fleetTicketKeys.withLockedValue { started in
                if let started { return started.ring }
                let keys = try FleetStores.ticketKeys(database: fleetDatabase, configuration: loaded.configuration.fleet,
                                                      logger: logger)
                started = keys
                return keys.ring
            }
        }
    }

    /// The device checker the configuration asks for (nil when OCSP is off for every device
    /// CA), on the one status cache, filled from the state directory the first time so that
    /// known devices reconnect without a responder request after a restart.
    private func makeDeviceStatusChecker(_ loaded: LoadedConfiguration) -> DeviceStatusChecker? {
        let configuration = loaded.configuration.deviceOCSP
        guard configuration.defaultPolicy.enabled || configuration.overrides.contains(where: \.policy.enabled) else {
            logger.notice("device OCSP checks are off")
            return nil
        }
        let cache = statusCache.withLockedValue { cache in
            if let cache { return cache }
            let opened = openStatusCache(loaded)
            cache = opened
            return opened
        }
        let identitySource = loaded.configuration.admission.identity
        return DeviceStatusChecker(configuration: configuration, deviceCAs: loaded.serverContext.material.deviceCAs,
                                   client: OCSPHTTPClient(group: eventLoops), cache: cache, logger: logger,
                                   fleet: deviceStatusFleet, identify: { DeviceIdentity.of($0, source: identitySource) })
    }

    private func openStatusCache(_ loaded: LoadedConfiguration) -> OCSPStatusCache {
        let configuration = loaded.configuration.deviceOCSP
        // The store is chosen here, once (fleet.store): the cache and the checker only know
        // the protocol.
        let path = loaded.configuration.deviceOCSPCachePath
        var store: (any DeviceStatusStore)?
        do {
            store = try FleetStores.deviceStatus(database: fleetDatabase, sqlitePath: path, logger: logger)
        } catch {
            logger.error("\(error); device statuses are cached in memory only")
        }
        let cache = OCSPStatusCache(capacity: configuration.cacheCapacity, store: store)
        do {
            let loadedCount = try cache.loadPersisted(now: Date())
            logger.notice("device OCSP checks on", metadata: [
                "cached_statuses_loaded": "\(loadedCount)", "cache": "\(store?.location ?? path)",
                "store": "\(store == nil ? "memory" : loaded.configuration.fleet.store.rawValue)",
                "unreachable": "\(configuration.defaultPolicy.unreachable.rawValue)",
            ])
        } catch {
            logger.error("cannot read the persisted device statuses in \(store?.location ?? path): \(error)")
        }
        return cache
    }

    /// The status cache, once device checks have been on (to flush it at exit).
    public var deviceStatusCache: OCSPStatusCache? { statusCache.withLockedValue { $0 } }
}
