import ArgumentParser
import Foundation
import StapleGateServer
import StapleGateSimulator

extension LoadOptions.Mode: ExpressibleByArgument {}
extension LoadOptions.TLSVersion: ExpressibleByArgument {}

struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Load a front (StapleGate, nginx stream, Mosquitto's TLS listener) with many libmosquitto sessions.",
        discussion: """
        Runs as its own process, a few threads driving every session through libmosquitto's \
        external-loop API (epoll), and reports what it measured and the CPU it used itself.

        sessions    open --sessions sessions, at most --concurrency between connect and CONNACK \
        at once, hold them idle for --hold seconds, disconnect them: the time to open them all \
        (first connect → last CONNACK) and every failure with its reason.
        throughput  --publishers sessions publish QoS 0 messages of --payload-size bytes to \
        --topic for --duration seconds, as fast as they can or at --rate messages/s in total; \
        --subscribers sessions receive them: messages and bytes per second.
        latency     the same at a fixed --rate (below saturation); each payload carries a \
        sequence number and its send time (CLOCK_MONOTONIC): publish → deliver p50, p90, p99, \
        p99.9 and max.

        Exits 1 when a session failed to open or was dropped (the report is printed all the \
        same), 64 for unusable options.
        """
    )

    @Argument(help: "sessions, throughput or latency.") var mode: LoadOptions.Mode

    @Option(help: "Host of the front under test (also the name its certificate must carry, unless --server-name).")
    var host = "127.0.0.1"
    @Option(help: "Its port.") var port = 8883
    @Option(help: "The name the server certificate must carry (default: --host).") var serverName: String?
    @Flag(help: "Plain MQTT, no TLS (a broker's own listener, for a baseline).") var noTLS = false
    @Option(help: "CA bundle to verify the server with.") var cafile: String?
    @Option(help: "Client certificate chain (PEM) every session presents.") var cert: String?
    @Option(help: "The private key of --cert (PEM).") var key: String?
    @Option(help: "Folder of client identities used round robin: <prefix>-N.pem with <prefix>-N.key (or <prefix>-shared.key), N = 1, 2, …")
    var devicesDir: String?
    @Option(help: "File name prefix in --devices-dir (default: device).") var devicePrefix: String?
    @Option(help: "The TLS version offered, 1.2 or 1.3 (only that one).") var tlsVersion: LoadOptions.TLSVersion = .v1_3
    @Option(help: "TLS 1.3 cipher suites, OpenSSL syntax (e.g. TLS_AES_128_GCM_SHA256).") var ciphersuites: String?
    @Option(help: "TLS 1.2 ciphers, OpenSSL syntax (e.g. ECDHE-ECDSA-AES128-GCM-SHA256).") var ciphers: String?
    @Option(help: "Key exchange groups, OpenSSL syntax (e.g. X25519 or P-256).") var groups: String?
    @Option(help: "MQTT client ids are <prefix>-1, <prefix>-2, … (default: staplegate-load-<pid>).") var clientIDPrefix: String?
    @Option(help: "MQTT keepalive, seconds (0: none).") var keepalive = 60
    @Option(help: "Worker threads (default: one per core it may run on).") var threads: Int?
    @Option(help: "Seconds a session may take from connect to CONNACK before it counts as failed.") var connectTimeout = 30.0

    @Option(help: "sessions mode: sessions to open (default: 1000).") var sessions: Int?
    @Option(help: "sessions mode: most sessions between connect and CONNACK at once (default: 64).") var concurrency: Int?
    @Option(help: "sessions mode: seconds to keep them open (default: 10).") var hold: Double?

    @Option(help: "throughput/latency: publishing sessions (default: 4).") var publishers: Int?
    @Option(help: "throughput/latency: subscribing sessions, each receives every message (default: 1).") var subscribers: Int?
    @Option(help: "throughput/latency: topic (default: staplegate/load/<pid>).") var topic: String?
    @Option(help: "throughput/latency: payload bytes (default: 64; latency needs at least 24).") var payloadSize: Int?
    @Option(help: "throughput/latency: messages per second over all publishers (required for latency; throughput default: as fast as possible).")
    var rate: Double?
    @Option(help: "throughput/latency: seconds of publishing (default: 10).") var duration: Double?
    @Option(help: "throughput/latency: longest wait, once publishing stopped, for the last messages (default: 5).") var drainTimeout: Double?

    @Flag(help: "Print one JSON object with every figure (units in the key names) instead of the summary.") var json = false

    /// Options named on the command line that only some modes use.
    private var modeSpecificGiven: Set<String> {
        let given: [(String, Bool)] = [
            ("--sessions", sessions != nil), ("--concurrency", concurrency != nil), ("--hold", hold != nil),
            ("--publishers", publishers != nil), ("--subscribers", subscribers != nil), ("--topic", topic != nil),
            ("--payload-size", payloadSize != nil), ("--rate", rate != nil), ("--duration", duration != nil),
            ("--drain-timeout", drainTimeout != nil),
        ]
        return Set(given.filter(\.1).map(\.0))
    }

    func loadOptions() throws(LoadOptionsError) -> LoadOptions {
        var options = LoadOptions(mode: mode, clientIDPrefix: clientIDPrefix ?? "staplegate-load-\(getpid())",
                                  topic: topic ?? "staplegate/load/\(getpid())",
                                  threads: threads ?? UsableCores.count)
        options.host = host
        options.port = port
        options.serverName = serverName
        options.useTLS = !noTLS
        options.caFile = cafile
        options.identity = try LoadOptions.identity(certificate: cert, key: key, devicesDirectory: devicesDir, devicePrefix: devicePrefix)
        options.tlsVersion = tlsVersion
        options.ciphersuites = ciphersuites
        options.ciphers = ciphers
        options.groups = groups
        options.keepalive = keepalive
        options.connectTimeout = connectTimeout
        if let sessions { options.sessions = sessions }
        if let concurrency { options.concurrency = concurrency }
        if let hold { options.hold = hold }
        if let publishers { options.publishers = publishers }
        if let subscribers { options.subscribers = subscribers }
        if let payloadSize { options.payloadSize = payloadSize }
        options.rate = rate
        if let duration { options.duration = duration }
        if let drainTimeout { options.drainTimeout = drainTimeout }
        return try options.validated(given: modeSpecificGiven)
    }

    func validate() throws {
        do {
            _ = try loadOptions()
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        let report: LoadReport
        do {
            report = try LoadGenerator(options: try loadOptions(), note: { line in
                FileHandle.standardError.write(Data("staplegate load: \(line)\n".utf8))
            }).run()
        } catch {
            // Files that cannot be used (CA, certificates, keys) or too many sessions for the open-files limit.
            FileHandle.standardError.write(Data("staplegate load: \(error)\n".utf8))
            throw ExitCode.validationFailure
        }
        print(json ? report.json : report.text)
        if !report.succeeded {
            FileHandle.standardError.write(Data("staplegate load: \(report.sessionsFailed) sessions failed to open, \(report.sessionsDropped) dropped\n".utf8))
            throw ExitCode.failure
        }
    }
}
