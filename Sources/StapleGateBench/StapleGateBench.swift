import ArgumentParser
import Foundation

/// `make bench`: StapleGate, nginx stream and Mosquitto's own TLS listener, side by side on one
/// machine (issue 7). Every front, the broker, the OCSP responder and every load generator is a
/// separate process started here and stopped at the end, on an error and on Ctrl-C.
@main
struct StapleGateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "staplegate-bench",
        abstract: "Benchmark StapleGate against nginx stream and Mosquitto's TLS listener, with the issue's targets.",
        discussion: """
        Writes results.md, results.json and chart.png into the results folder (default \
        .build/bench/results/<timestamp>/, with a `latest` symlink beside it). Needs openssl, \
        mosquitto, nginx with libnginx-mod-stream and gnuplot (`make deps` installs them).
        """
    )

    @Option(help: "Runs of every figure (default 5); the table shows medians with min–max.") var runs: Int?
    @Flag(help: "Tiny sizes (1 s per figure, 50 sessions, 1 run): checks that the bench works, in about a minute.")
    var smoke = false
    @Option(help: "Results folder (default: .build/bench/results/<timestamp>).") var output: String?
    @Option(help: "The staplegate executable (default: the one next to this executable).") var staplegate: String?
    @Option(help: "The configuration column (a) runs, with only this machine's ports, files and folders changed (default: the repository's config/staplegate.yaml).")
    var example: String?
    @Option(help: "Seconds of openssl s_time per handshake figure.") var handshakeSeconds: Int?
    @Option(help: "Slices each handshake figure is split into, alternating with the fronts it is compared with.")
    var handshakeRounds: Int?
    @Option(help: "Seconds of publishing per throughput figure.") var throughputSeconds: Double?
    @Option(help: "Seconds of publishing for the latency figure.") var latencySeconds: Double?
    @Option(help: "Total messages/s for the latency figure (keep it below saturation).") var latencyRate: Double?
    @Option(help: "Idle sessions for the memory and time-to-open figures.") var sessions: Int?
    @Option(help: "Most sessions between connect and CONNACK at once.") var sessionConcurrency: Int?
    @Option(help: "Publishing sessions for throughput and latency.") var publishers: Int?
    @Option(help: "Fleet figures: distinct device certificates, one session each per pass.") var fleetDevices: Int?
    @Option(help: "Fleet figures: most sessions between connect and CONNACK at once.") var fleetConcurrency: Int?
    @Flag(help: "Run the fronts and the load generators on any core, instead of on separate halves of the cores.")
    var noPin = false

    func validate() throws {
        let settings = self.settings
        guard settings.runs >= 1, settings.handshakeSeconds >= 1, settings.handshakeRounds >= 1, settings.throughputSeconds > 0, settings.latencySeconds > 0,
              settings.latencyRate > 0, settings.sessions >= 1, settings.sessionConcurrency >= 1, settings.publishers >= 1,
              settings.fleetDevices >= 1, settings.fleetConcurrency >= 1 else {
            throw ValidationError("every size must be positive (--runs, --handshake-seconds, --sessions, …)")
        }
    }

    var settings: BenchSettings {
        var settings = smoke ? BenchSettings.smoke : BenchSettings()
        if let runs { settings.runs = runs }
        if let handshakeSeconds { settings.handshakeSeconds = handshakeSeconds }
        if let handshakeRounds { settings.handshakeRounds = handshakeRounds }
        if let throughputSeconds { settings.throughputSeconds = throughputSeconds }
        if let latencySeconds { settings.latencySeconds = latencySeconds }
        if let latencyRate { settings.latencyRate = latencyRate }
        if let sessions { settings.sessions = sessions }
        if let sessionConcurrency { settings.sessionConcurrency = sessionConcurrency }
        if let publishers { settings.publishers = publishers }
        if let fleetDevices { settings.fleetDevices = fleetDevices }
        if let fleetConcurrency { settings.fleetConcurrency = fleetConcurrency }
        return settings
    }

    func run() throws {
        ChildRegistry.shared.stopAllOnSignals()
        do {
            try bench()
        } catch {
            ChildRegistry.shared.stopAll()
            progress("failed: \(error)")
            throw ExitCode.failure
        }
    }

    private func bench() throws {
        var settings = self.settings
        let startedAt = Date()
        let start = monotonicSeconds()
        let staplegate = try staplegate ?? Self.sibling("staplegate")
        let pkiScript = try Self.repositoryFile("certs/make-demo-pki.sh")
        // Before anything starts: a missing or broken example fails here, naming the file.
        let example = try ExampleConfiguration(path: self.example ?? Self.repositoryFile("config/staplegate.yaml"))
        try Self.checkPrerequisites()
        // Load generator: 3 descriptors per libmosquitto session; a proxying front: 2 per session.
        if let problem = raiseOpenFilesLimit(needed: settings.sessions * 3 + 64) {
            progress("warning: \(problem)")
            settings.sessions = max(1, (Self.openFilesLimit() - 64) / 3)
            progress("warning: measuring with \(settings.sessions) sessions instead")
        } else {
            progress("open-files limit \(Self.openFilesLimit()): enough for \(settings.sessions) sessions")
        }

        let folder = try output ?? Self.defaultOutput(startedAt)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let cores = CPUPlacement.allowedCores() ?? Array(0..<ProcessInfo.processInfo.activeProcessorCount)
        let placement = noPin ? CPUPlacement.unpinned(cores: cores.count) : CPUPlacement.split(cores)
        if let servers = placement.servers, let clients = placement.clients {
            progress("cores: fronts, broker and responder on \(servers); load generators on \(clients)")
        } else {
            progress("cores: every process on any of \(cores.count)")
        }
        let environment = BenchEnvironment(work: "\(folder)/work", staplegate: staplegate, pkiScript: pkiScript, example: example,
                                           placement: placement)
        progress("column (a): \(example.path) as shipped: \(example.summary)")
        progress("results in \(folder); logs and configurations in \(environment.work)")
        // The fleet figures need PostgreSQL 15; without it they are left out, and the results say why.
        let fleetSkipped = BenchPostgres.missing.map { "fleet figures skipped: \($0)" }
        if let fleetSkipped { progress(fleetSkipped) }
        progress("PKI, OCSP responder, broker")
        try environment.setUp(fleetDevices: fleetSkipped == nil ? settings.fleetDevices : 0)
        defer { environment.tearDown() }
        var database: BenchPostgres?
        defer { database?.stop() }
        if fleetSkipped == nil {
            progress("PostgreSQL for the fleet figures")
            database = try BenchPostgres(work: environment.work, cpus: placement.servers)
        }

        var samples = BenchSamples()
        let measurer = Measurer(environment: environment, settings: settings, log: progress)
        for run in 1...settings.runs {
            progress("run \(run)/\(settings.runs): handshakes, the four fronts in alternation")
            try measureHandshakes(run: run, measurer: measurer, environment: environment, into: &samples)
            for front in FrontKind.allCases {
                progress("run \(run)/\(settings.runs): \(front.title)")
                try measure(front, run: run, measurer: measurer, environment: environment, into: &samples)
            }
            progress("run \(run)/\(settings.runs): StapleGate features (trace, device OCSP), full-handshake CPU")
            try FeatureMeasurer(measurer: measurer, environment: environment, log: progress).measure(run: run, into: &samples)
            if let database {
                progress("run \(run)/\(settings.runs): StapleGate fleet (PostgreSQL store)")
                try FleetMeasurer(database: database, measurer: measurer, environment: environment, log: progress)
                    .measure(run: run, into: &samples)
            }
        }
        database?.stop()
        environment.tearDown()

        let report = ResultsReport(samples: samples, settings: settings, placement: placement, smoke: smoke, startedAt: startedAt,
                                   elapsedSeconds: monotonicSeconds() - start, machine: Self.machine(), fleetSkipped: fleetSkipped,
                                   example: example)
        try report.json().write(to: URL(fileURLWithPath: "\(folder)/results.json"))
        try report.markdown.write(toFile: "\(folder)/results.md", atomically: true, encoding: .utf8)
        if let problem = try report.writeChart(folder: folder) { throw BenchFailure(problem) }
        if output == nil { Self.pointLatest(at: folder) }
        print("\n" + report.markdown)
        progress("done in \(Int(monotonicSeconds() - start)) s: \(folder)/results.md, results.json, chart.png")
    }

    /// The handshake figures of the four fronts, running side by side and measured in alternation
    /// (`Measurer.interleavedHandshakes`), so that their ratios are taken on the same machine.
    private func measureHandshakes(run: Int, measurer: Measurer, environment: BenchEnvironment,
                                   into samples: inout BenchSamples) throws {
        var fronts: [RunningFront] = []
        defer { fronts.forEach { $0.stop() } }
        for kind in FrontKind.allCases {
            let front = try environment.start(kind)
            fronts.append(front)
            // StapleGate's device answer cached first, so its handshakes are cache hits ("defaults:
            // trace on, device OCSP cache hit"); the stripped one checks no device but is warmed alike.
            if kind == .staplegate || kind == .staplegateStripped { try measurer.prepare(front) }
        }
        let subjects = { (mode: String) in
            fronts.map { HandshakeSubject(front: $0, label: "run\(run)-\($0.kind.rawValue)-\(mode)", expectsCacheHits: $0.kind == .staplegate) }
        }
        let full = try measurer.interleavedHandshakes(subjects("full"), resume: false)
        let resumed = try measurer.interleavedHandshakes(subjects("resumed"), resume: true)
        for (index, front) in fronts.enumerated() {
            let group = front.kind.rawValue
            samples.add(group, Figure.fullHandshakesPerSecond.rawValue, full[index].perSecond)
            samples.add(group, Figure.fullHandshakeCPU.rawValue, full[index].cpuMicroseconds)
            samples.add(group, Figure.resumedHandshakesPerSecond.rawValue, resumed[index].perSecond)
            samples.add(group, Figure.resumedHandshakeCPU.rawValue, resumed[index].cpuMicroseconds)
            samples.add(group, Figure.resumedFraction.rawValue, resumed[index].resumedFraction)
            progress("  \(front.kind.shortTitle): full \(Int(full[index].perSecond))/s, \(Int(full[index].cpuMicroseconds)) µs CPU each; "
                + "resumed \(Int(resumed[index].perSecond))/s, \(Int(resumed[index].cpuMicroseconds)) µs CPU each, "
                + "\(Int(resumed[index].resumedFraction * 100)) % resumed")
        }
    }

    /// A front's message and session figures, on a fresh front.
    private func measure(_ kind: FrontKind, run: Int, measurer: Measurer, environment: BenchEnvironment,
                         into samples: inout BenchSamples) throws {
        let front = try environment.start(kind)
        defer { front.stop() }
        // As for the handshakes: the first session is not StapleGate's one device-OCSP lookup.
        if kind == .staplegate || kind == .staplegateStripped { try measurer.prepare(front) }
        let group = kind.rawValue
        let label = "run\(run)-\(group)"
        let settings = measurer.settings

        for (size, throughputFigure, cpuFigure) in [(64, Figure.throughput64, Figure.cpuPerMessage64),
                                                    (4096, Figure.throughput4K, Figure.cpuPerMessage4K)] {
            let result = try measurer.publish(front, mode: "throughput", payloadSize: size, rate: nil,
                                              seconds: settings.throughputSeconds, label: "\(label)-throughput-\(size)")
            // Two crossings per message: a message the broker dropped crossed once (see the notes).
            let crossings = (result.number("messages_sent") ?? 0) + (result.number("messages_received") ?? 0)
            let perMessage = result.frontCPUSeconds.flatMap { crossings > 0 ? $0 / (crossings / 2) * 1e6 : nil }
            samples.add(group, throughputFigure.rawValue, result.number("messages_per_second"))
            samples.add(group, cpuFigure.rawValue, perMessage)
            progress("  throughput \(size) B: \(Int(result.number("messages_per_second") ?? 0)) msg/s, "
                + String(format: "%.2f µs front CPU per message", perMessage ?? .nan))
        }

        let latency = try measurer.publish(front, mode: "latency", payloadSize: 64, rate: settings.latencyRate,
                                           seconds: settings.latencySeconds, label: "\(label)-latency")
        samples.add(group, Figure.latencyP50.rawValue, latency.number("latency_p50_us"))
        samples.add(group, Figure.latencyP99.rawValue, latency.number("latency_p99_us"))
        samples.add(group, Figure.latencyP999.rawValue, latency.number("latency_p999_us"))
        progress("  latency at \(Int(settings.latencyRate)) msg/s: p50 \(Int(latency.number("latency_p50_us") ?? 0)) µs, "
            + "p99 \(Int(latency.number("latency_p99_us") ?? 0)) µs, p99.9 \(Int(latency.number("latency_p999_us") ?? 0)) µs")

        let idle = try measurer.sessions(front, label: "\(label)-sessions")
        let opened = idle.number("sessions_opened") ?? 0
        let perSession = idle.residentWithSessions.flatMap { opened > 0 ? Double($0 - idle.residentBefore) / opened : nil }
        samples.add(group, Figure.rssPerSession.rawValue, perSession)
        samples.add(group, Figure.sessionsOpenSeconds.rawValue, idle.number("open_seconds"))
        samples.add(group, Figure.sessionsFailed.rawValue, idle.number("sessions_failed"))
        progress("  \(Int(opened)) sessions opened in " + String(format: "%.2f s, %.1f KiB RSS each",
                                                                 idle.number("open_seconds") ?? .nan, perSession ?? .nan))
    }
}

private func progress(_ line: String) {
    FileHandle.standardError.write(Data("staplegate-bench: \(line)\n".utf8))
}
