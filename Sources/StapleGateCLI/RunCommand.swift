import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import NIOCore
import NIOPosix
import StapleGateConfig
import StapleGateOCSP
import StapleGateServer
import StapleGateTLS
import StapleGateTrace

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway in the foreground until SIGTERM or SIGINT."
    )

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String

    func run() async throws {
        let loaded = try loadConfigurationOrExit(path: config)
        let (level, format) = (loaded.configuration.logLevel, loaded.configuration.logFormat)
        LoggingSystem.bootstrap { label in makeLogHandler(label: label, format: format, level: level) }
        let logger = Logger(label: "staplegate")
        for warning in loaded.warnings { logger.warning("\(warning)") }
        OpenFileLimit.raiseToHardLimit(logger: logger)

        let eventLoops = MultiThreadedEventLoopGroup.singleton
        var services: [any Service] = []
        let checker = makeDeviceStatusChecker(loaded, eventLoops: eventLoops, logger: logger)
        let serverContext = try checker.map { try loaded.serverContext.with(deviceCertificateGate: $0) } ?? loaded.serverContext
        let stapling = try makeStaplingService(loaded, serverContext: serverContext, eventLoops: eventLoops, logger: logger)
        if let stapling {
            // Before the listener opens: the first handshake after a start is stapled too.
            stapling.loadPersisted()
            await stapling.prime()
            services.append(StaplingRefresher(stapling: stapling))
        }
        let liveSessions = LiveSessions(capacity: SessionCapacity.resolve(loaded.configuration.listen.maxSessions, logger: logger),
                                        logger: logger)
        let traceStore = openTraceStore(loaded.configuration, logger: logger)
        var deviceStatus: (@Sendable (X509Certificate) -> CachedOCSPStatus?)?
        if let checker { deviceStatus = { checker.cachedStatus(of: $0) } }
        let systemd = SystemdNotifier()
        let gateway = Gateway(configuration: loaded.configuration, serverContext: serverContext, group: eventLoops,
                              logger: logger, admissionGate: { stapling?.refusalReason() }, liveSessions: liveSessions,
                              traceStore: traceStore, deviceStatus: deviceStatus, systemd: systemd)
        services.append(gateway)
        if let systemd, let interval = systemd.watchdogInterval {
            services.append(WatchdogKeepAlive(notifier: systemd, interval: interval, group: eventLoops))
        }
        let monitor = checker.map { SessionRevocationMonitor(checker: $0, sessions: liveSessions, logger: logger) }
        if let monitor { services.append(monitor) }
        let routes = ControlRoutes(checker: checker, monitor: monitor, traceStore: traceStore,
                                   maximumMessageTrace: loaded.configuration.trace.maximumMessageTraceDuration)
        services.append(ControlSocket(path: loaded.configuration.controlSocketPath, group: eventLoops, logger: logger,
                                      handler: { await routes.handle($0) }))
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // Device statuses are written behind; whatever is still queued is saved before exiting.
        defer {
            checker?.cache.store?.flush()
            traceStore?.flush()
        }
        do {
            try await group.run()
        } catch let error as Gateway.StartError {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}

/// The stapling service the configuration asks for, or nil when stapling is off.
private func makeStaplingService(_ loaded: LoadedConfiguration, serverContext: ServerContext, eventLoops: EventLoopGroup,
                                 logger: Logger) throws -> StaplingService? {
    let configuration = loaded.configuration
    guard configuration.stapling.enabled else { return nil }
    return try StaplingService(
        serverContext: serverContext, configuration: configuration.stapling,
        persistence: StaplePersistence(directory: configuration.stateDirectory),
        client: OCSPHTTPClient(group: eventLoops), logger: logger)
}

/// Each device session holds two descriptors (device and broker), so the default soft limit of
/// 1024 would cap a fleet at ~500 devices; the hard limit is what the operator granted.
enum OpenFileLimit {
    static func raiseToHardLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let previous = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            logger.info("raised the open-files limit from \(previous) to \(limit.rlim_max)")
        }
    }
}

/// The device checker the configuration asks for (nil when OCSP is off for every device CA),
/// with its cache filled from the state directory so that known devices reconnect without a
/// responder request after a restart.
private func makeDeviceStatusChecker(_ loaded: LoadedConfiguration, eventLoops: EventLoopGroup, logger: Logger) -> DeviceStatusChecker? {
    let configuration = loaded.configuration.deviceOCSP
    guard configuration.defaultPolicy.enabled || configuration.overrides.contains(where: \.policy.enabled) else {
        logger.notice("device OCSP checks are off")
        return nil
    }
    let path = loaded.configuration.deviceOCSPCachePath
    var store: OCSPCacheStore?
    do { store = try OCSPCacheStore(path: path) } catch {
        logger.error("\(error); device statuses are cached in memory only")
    }
    let cache = OCSPStatusCache(capacity: configuration.cacheCapacity, store: store)
    do {
        let loadedCount = try cache.loadPersisted(now: Date())
        logger.notice("device OCSP checks on", metadata: [
            "cached_statuses_loaded": "\(loadedCount)", "cache": "\(path)",
            "unreachable": "\(configuration.defaultPolicy.unreachable.rawValue)",
        ])
    } catch {
        logger.error("cannot read the persisted device statuses in \(path): \(error)")
    }
    return DeviceStatusChecker(configuration: configuration, deviceCAs: loaded.serverContext.material.deviceCAs,
                               client: OCSPHTTPClient(group: eventLoops), cache: cache, logger: logger)
}

/// The trace store, or nil when tracing is off or the store cannot be opened (then the gateway
/// runs untraced rather than not at all, and says so).
private func openTraceStore(_ configuration: GatewayConfiguration, logger: Logger) -> TraceStore? {
    let trace = configuration.trace
    guard trace.enabled else { return nil }
    do {
        return try TraceStore(path: configuration.traceStorePath, retention: trace.retention, maximumBytes: trace.maximumBytes,
                              queueCapacity: trace.queueCapacity, logger: logger)
    } catch {
        logger.error("\(error); devices are not traced")
        return nil
    }
}
