import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import StapleGateConfig
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

        let gateway = Gateway(loaded: loaded, logger: logger)
        let group = ServiceGroup(
            services: [gateway],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
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
