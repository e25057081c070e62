import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import NIOCore
import NIOPosix
import StapleGateConfig
import StapleGateFleet
import StapleGateOCSP
import StapleGateServer
import StapleGateTLS
import StapleGateTrace

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway in the foreground: SIGTERM drains it, SIGINT (Ctrl-C) stops it at once, SIGHUP reloads."
    )

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String

    func run() async throws {
        let loaded = try loadConfigurationOrExit(path: config)
        let (level, format) = (loaded.configuration.logLevel, loaded.configuration.logFormat)
        LocalTimeZone.readOnce()
        LoggingSystem.bootstrap { label in makeLogHandler(label: label, format: format, level: level) }
        var logger = Logger(label: "staplegate")
        // In a fleet every line names its gateway, so that logs gathered in one place say
        // which gateway did what (as trace events do).
        if let instance = loaded.configuration.fleet.instance {
            logger[metadataKey: "instance"] = "\(instance)"
        }
        let metricsRegistry = PrometheusMetrics.bootstrap()
        for warning in loaded.warnings { logger.warning("\(warning)") }
        OpenFileLimit.raiseToHardLimit(logger: logger)
        MallocThresholds.apply()

        // One event loop per core this process may use (taskset, CPUAffinity=), not per core of
        // the machine; set before anything touches NIO's shared group, as NIO requires.
        if ProcessInfo.processInfo.environment["NIO_SINGLETON_GROUP_LOOP_COUNT"] == nil {
            NIOSingletons.groupLoopCountSuggestion = UsableCores.count
        }
        let eventLoops = MultiThreadedEventLoopGroup.singleton
        let fleetDatabase = try openFleetDatabase(loaded.configuration, logger: logger)
        let builder = GatewayGenerationBuilder(eventLoops: eventLoops, logger: logger, fleetDatabase: fleetDatabase)
        let generation = try builder.build(loaded)
        logger.notice("session tickets: \(generation.resumptionSummary)")
        logger.notice("device chains verified \(generation.deviceChainSummary)")
        if let stapling = generation.stapling {
            // Before the listener opens: the first handshake after a start is stapled too.
            await stapling.loadPersisted()
            await stapling.prime()
        }
        let liveSessions = LiveSessions(capacity: SessionCapacity.resolve(loaded.configuration.listen.maxSessions, logger: logger),
                                        logger: logger)
        let traceStore = openTraceStore(loaded.configuration, database: fleetDatabase, logger: logger)
        let systemd = SystemdNotifier()
        let gateway = Gateway(generation: generation, group: eventLoops, logger: logger, liveSessions: liveSessions,
                              traceStore: traceStore, systemd: systemd)
        let refresher = StaplingRefresher(stapling: generation.stapling)
        let monitor = SessionRevocationMonitor(checker: generation.checker, sessions: liveSessions, traceStore: traceStore,
                                               logger: logger)
        let reloader = ReloadCoordinator(
            configPath: config,
            participants: .init(gateway: gateway, builder: builder, stapling: refresher, monitor: monitor),
            systemd: systemd, logger: logger)
        let routes = ControlRoutes(monitor: monitor, traceStore: traceStore,
                                   maximumMessageTrace: loaded.configuration.trace.maximumMessageTraceDuration,
                                   reload: { await reloader.reload() })
        // Graceful shutdown runs from the last service to the first, each waited for: the gateway
        // drains first while stapling, rechecks, the control socket and the watchdog go on.
        var services: [any Service] = [
            refresher, monitor, reloader,
            ControlSocket(path: loaded.configuration.controlSocketPath, group: eventLoops, logger: logger,
                          handler: { await routes.handle($0) }),
        ]
        // Before the gateway: services stop in reverse order, so /readyz answers during the drain.
        if let admin = makeAdminServer(loaded.configuration, gateway: gateway, traceStore: traceStore, fleetDatabase: fleetDatabase,
                                       registry: metricsRegistry, eventLoops: eventLoops, logger: logger) {
            services.append(admin)
        }
        if let fleet = builder.deviceStatusFleet {
            services.append(FleetRevocationRelay(fleet: fleet, monitor: monitor, logger: logger))
        }
        if let systemd, let interval = systemd.watchdogInterval {
            services.append(WatchdogKeepAlive(notifier: systemd, interval: interval, group: eventLoops))
        }
        services.append(gateway)
        // SIGTERM (systemctl stop) drains for listen.drain_grace_period; SIGINT (Ctrl-C) stops at once.
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm], cancellationSignals: [.sigint],
                                 logger: logger)
        // Device statuses are written behind; whatever is still queued is saved before exiting.
        defer {
            builder.deviceStatusCache?.store?.flush()
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

/// The fleet's database (`fleet.store: postgres`), given a few seconds to answer so that the
/// first handshakes find what the fleet knows; a database still away is retried in the
/// background while the gateway serves from memory.
private func openFleetDatabase(_ configuration: GatewayConfiguration, logger: Logger) throws -> FleetDatabase? {
    let database: FleetDatabase?
    do {
        database = try configuration.fleet.openDatabase(logger: logger)
    } catch {
        logger.critical("\(error)")
        throw ExitCode.failure
    }
    if let database, !database.readyBlocking(within: .seconds(5)) {
        logger.warning("starting without the fleet database \(database.location) (\(database.health.label)): devices are checked with the responder and their answers are shared once it is back")
    }
    return database
}

/// The trace store (the state directory's file, or the fleet's database), or nil when tracing is
/// off or the store cannot be opened (then the gateway runs untraced rather than not at all, and
/// says so).
private func openTraceStore(_ configuration: GatewayConfiguration, database: FleetDatabase?,
                            logger: Logger) -> (any TraceStore)? {
    guard configuration.trace.enabled else { return nil }
    do {
        return try FleetStores.trace(database: database, sqlitePath: configuration.traceStorePath,
                                     configuration: configuration.trace, logger: logger)
    } catch {
        logger.error("\(error); devices are not traced")
        return nil
    }
}
