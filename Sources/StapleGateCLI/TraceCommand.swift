import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import StapleGateConfig
import StapleGateFleet
import StapleGateServer
import StapleGateTrace

struct TraceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Show what happened to a device: TLS, certificate checks, CONNECT, admission, broker, disconnect.",
        subcommands: [TraceShowCommand.self, TraceEnableCommand.self, TraceDisableCommand.self],
        defaultSubcommand: TraceShowCommand.self
    )
}

/// A duration given on the command line ("90s", "15m", "1h", "3d").
struct CommandDuration: ExpressibleByArgument {
    let duration: Duration
    init?(argument: String) {
        guard let duration = ConfigDuration.parse(argument), duration > .zero else { return nil }
        self.duration = duration
    }
}

struct TraceShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print a device's timeline (the default: `staplegate trace DEVICE`), or recent refusals with --failures.",
        discussion: """
            Reads trace.sqlite in the state directory; with --config naming a fleet on PostgreSQL (fleet.store: postgres), \
            the fleet's events from every gateway instead. Works while the gateway runs and after it stopped.
            """
    )

    @OptionGroup var state: StateDirectoryOptions

    @Argument(help: "The device identity (certificate CN by default, see admission.identity).")
    var device: String?

    @Flag(name: .long, help: "List recent refusals and failures across all devices, with their reasons.")
    var failures = false

    @Option(name: .long, help: "Only events newer than this (e.g. 15m, 1h, 3d).")
    var since: CommandDuration?

    @Flag(name: .long, help: "Keep printing new events as they are written (Ctrl-C to stop).")
    var follow = false

    @Flag(name: .long, help: "One JSON object per event.")
    var json = false

    func validate() throws {
        guard (device == nil) == failures else { throw ValidationError("give a device, or --failures") }
        if follow && failures { throw ValidationError("--follow follows one device") }
    }

    func run() async throws {
        do {
            try await show()
        } catch let error as TraceStoreError {
            throw CommandFailure(message: error.message)
        }
    }

    private func show() async throws {
        let reader = try await openReader()
        // Placed before the first listing is read: nothing written meanwhile is missed.
        let follower = follow ? try await reader.follower(device: device!) : nil
        let after = since.map { Date().addingTimeInterval(-$0.duration.timeInterval) }
        let events = failures ? try await reader.failures(since: after) : try await reader.events(device: device!, since: after)
        if events.isEmpty && !follow {
            // JSON Lines readers (jq) get an empty stream, not a sentence.
            if !json { print(failures ? "no refusals or failures recorded" : "no events for \(device!)") }
            return
        }
        emit(events)
        guard let follower else { return }
        follower.markShown(events)
        // A read that fails (the fleet's database restarting) moves no cursor: said once, then
        // retried, and nothing written meanwhile is missed.
        var failing = false
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(500))
            do {
                emit(try await follower.next())
                failing = false
            } catch {
                if !failing { FileHandle.standardError.write(Data("staplegate: \(error); retrying\n".utf8)) }
                failing = true
            }
        }
    }

    /// `--state-dir`: that gateway's file. `--config`: what its `fleet` section says, the file
    /// in its state directory or the fleet's database (then every gateway's events).
    private func openReader() async throws -> any TraceReading {
        guard let config = state.config else {
            return try FleetStores.traceReader(database: nil, sqlitePath: "\(try state.directory())/trace.sqlite")
        }
        let configuration = try loadConfigurationOrExit(path: config).configuration
        var logger = Logger(label: "staplegate.trace")
        logger.logLevel = .error
        let database = try configuration.fleet.openDatabase(logger: logger)
        if let database, !(await database.ready(within: .seconds(10), orFirstFailure: true)) {
            let reason = if case let .unreachable(why) = database.health { why } else { "no answer within 10 s" }
            throw CommandFailure(message: "cannot read the traces in the fleet database \(database.location): \(reason)")
        }
        return try FleetStores.traceReader(database: database, sqlitePath: configuration.traceStorePath)
    }

    private func emit(_ events: [TraceEvent]) {
        // Across devices (--failures) each line names its device.
        let lines = json ? TraceTimeline.jsonLines(events) : TraceTimeline.lines(events, showDevice: failures)
        for line in lines { print(line) }
        // --follow into a pipe (grep, a service manager) must not wait for a full buffer.
        fflush(nil)  // every output stream (stdout is a C global Swift 6 will not touch)
    }
}

struct TraceEnableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable",
        abstract: "Record each PUBLISH of a device (direction, topic, QoS, size; never the payload) for a limited time.",
        discussion: """
            Applies to the device's sessions that start from now on, and extends the trace of its sessions already traced; \
            in a fleet on PostgreSQL (fleet.store: postgres), on every gateway of the fleet within a second.
            """
    )

    @OptionGroup var state: StateDirectoryOptions

    @Argument(help: "The device identity.")
    var device: String

    @Option(name: .customLong("for"), help: "How long (e.g. 15m, 1h; at most trace.max_message_trace).")
    var duration: CommandDuration

    func run() async throws {
        let seconds = Int(duration.duration.timeInterval.rounded(.up))
        let target = "/trace/enable?device=\(Self.encode(device))&seconds=\(seconds)"
        let body = try await control(.POST, target, state: state)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let answer = try decoder.decode(ControlRoutes.MessageTraceState.self, from: Data(body))
        let until = answer.until.map { ISO8601DateFormatter().string(from: $0) } ?? "-"
        print("message trace on for \(answer.device) until \(until): sessions that start from now on record their publishes, and so do its sessions already traced")
    }

    static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? text
    }
}

struct TraceDisableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Stop recording a device's publishes.")

    @OptionGroup var state: StateDirectoryOptions

    @Argument(help: "The device identity.")
    var device: String

    func run() async throws {
        _ = try await control(.POST, "/trace/disable?device=\(TraceEnableCommand.encode(device))", state: state)
        print("message trace off for \(device): its sessions stop recording their publishes")
    }
}

/// One request to the running gateway; its error text on failure.
private func control(_ method: HTTPMethod, _ target: String, state: StateDirectoryOptions) async throws -> [UInt8] {
    let (status, body): (Int, [UInt8])
    do {
        (status, body) = try await ControlClient.send(method: method, target: target, socketPath: try state.controlSocket())
    } catch let failure as ControlClient.Failure {
        throw CommandFailure(message: failure.description)
    }
    guard status == 200 else { throw CommandFailure(message: OCSPCacheCommand.errorText(body)) }
    return body
}
