import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import NIOCore
import NIOPosix
import StapleGateConfig
import StapleGateOCSP
import StapleGateServer

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway in the foreground until SIGTERM or SIGINT."
    )

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String

    func run() async throws {
        let loaded = try loadConfigurationOrExit(path: config)
        let level = loaded.configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "staplegate")
        for warning in loaded.warnings { logger.warning("\(warning)") }
        OpenFileLimit.raiseToHardLimit(logger: logger)

        let eventLoops = MultiThreadedEventLoopGroup.singleton
        var services: [any Service] = []
        let stapling = try makeStaplingService(loaded, eventLoops: eventLoops, logger: logger)
        if let stapling {
            // Before the listener opens: the first handshake after a start is stapled too.
            stapling.loadPersisted()
            await stapling.prime()
            services.append(StaplingRefresher(stapling: stapling))
        }
        let gateway = Gateway(loaded: loaded, group: eventLoops, logger: logger,
                              admissionGate: { stapling?.refusalReason() })
        services.append(gateway)
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        do {
            try await group.run()
        } catch let error as Gateway.StartError {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}

/// The stapling service the configuration asks for, or nil when stapling is off.
private func makeStaplingService(_ loaded: LoadedConfiguration, eventLoops: EventLoopGroup, logger: Logger) throws -> StaplingService? {
    let configuration = loaded.configuration
    guard configuration.stapling.enabled else { return nil }
    return try StaplingService(
        serverContext: loaded.serverContext, configuration: configuration.stapling,
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
