import Foundation

/// Writes results.json, results.md and chart.png for one bench into its results folder.
struct ResultsReport {
    let samples: BenchSamples
    let settings: BenchSettings
    let placement: CPUPlacement
    let smoke: Bool
    let startedAt: Date
    let elapsedSeconds: Double
    let machine: [String: String]
    /// Why the fleet figures were not measured (PostgreSQL 15 missing), or nil.
    let fleetSkipped: String?

    var targets: [TargetVerdict] { TargetVerdict.all(samples) }

    func json() throws -> Data {
        func figures(_ group: String, _ names: [String]) -> [String: Any] {
            var out: [String: Any] = [:]
            for name in names {
                guard let spread = samples.spread(group, name) else { continue }
                out[name] = ["median": spread.median, "min": spread.min, "max": spread.max, "runs": spread.runs]
            }
            return out
        }
        var fronts: [String: Any] = [:]
        for front in FrontKind.allCases {
            fronts[front.rawValue] = ["title": front.title, "figures": figures(front.rawValue, Figure.allCases.map(\.rawValue))]
        }
        let targetObjects = targets.map { target -> [String: Any] in
            ["name": target.name, "goal": target.goal, "value": target.value ?? NSNull(), "limit": target.limit ?? NSNull(),
             "pass": target.pass, "margin": target.margin]
        }
        let settingsObject = try JSONSerialization.jsonObject(with: JSONEncoder().encode(settings))
        let placementObject: [String: Any] = ["servers": placement.servers ?? NSNull(), "clients": placement.clients ?? NSNull(),
                                              "server_cores": placement.serverCores]
        let object: [String: Any] = [
            "bench": "staplegate-bench", "smoke": smoke, "started_at": ISO8601DateFormatter().string(from: startedAt),
            "elapsed_seconds": elapsedSeconds.rounded(), "settings": settingsObject, "machine": machine,
            "cpu_placement": placementObject, "fronts": fronts,
            BenchSamples.ocspGroup: ["figures": figures(BenchSamples.ocspGroup, OCSPFigure.allCases.map(\.rawValue))],
            BenchSamples.fleetGroup: ["figures": figures(BenchSamples.fleetGroup, FleetFigure.allCases.map(\.rawValue)),
                                      "skipped": fleetSkipped.map { $0 as Any } ?? NSNull()],
            "targets": targetObjects, "notes": Self.notes,
        ]
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    var markdown: String {
        let runs = settings.runs
        var lines = [
            "# StapleGate bench\(smoke ? " (smoke: tiny sizes, not figures to quote)" : "")", "",
            "\(ISO8601DateFormatter().string(from: startedAt)); \(machine["cores"] ?? "?") cores, \(machine["kernel"] ?? "?"); "
                + "\(machine["openssl"] ?? "openssl ?"), nginx \(machine["nginx"] ?? "?"), Mosquitto \(machine["mosquitto"] ?? "?"). "
                + "\(runs) run\(runs == 1 ? "" : "s"): median\(runs > 1 ? " (min–max)" : ""); took \(Int(elapsedSeconds)) s. "
                + placementText, "",
            "| Figure | \(FrontKind.allCases.map(\.title).joined(separator: " | ")) | Target |",
            "|---|" + String(repeating: "---:|", count: FrontKind.allCases.count) + "---|",
        ]
        let verdicts = Dictionary(uniqueKeysWithValues: targets.map { ($0.name, $0) })
        let targetOf: [Figure: String] = [.fullHandshakeCPU: "full_handshake_cpu", .resumedHandshakeCPU: "resumed_handshake_cpu",
                                          .cpuPerMessage64: "cpu_per_message_64B", .rssPerSession: "rss_per_idle_session",
                                          .sessionsOpenSeconds: "sessions_open_time"]
        for figure in Figure.allCases {
            let cells = FrontKind.allCases.map { samples.spread($0.rawValue, figure.rawValue)?.text(digits: figure.digits) ?? "–" }
            let target = targetOf[figure].flatMap { verdicts[$0] }.map(Self.verdictText) ?? ""
            lines.append("| \(figure.title) | \(cells.joined(separator: " | ")) | \(target) |")
        }
        lines += ["", "| StapleGate device OCSP | \(runs == 1 ? "value" : "median (min–max)") | Target |", "|---|---:|---|"]
        for figure in OCSPFigure.allCases {
            let digits = figure == .cacheHitOverhead ? 1 : 0
            let target = figure == .cacheHitOverhead ? verdicts["cache_hit_ocsp_overhead"].map(Self.verdictText) ?? "" : ""
            lines.append("| \(figure.title) | \(samples.spread(BenchSamples.ocspGroup, figure.rawValue)?.text(digits: digits) ?? "–") | \(target) |")
        }
        lines += ["", "| StapleGate fleet (PostgreSQL store, issue 14) | \(runs == 1 ? "value" : "median (min–max)") |", "|---|---:|"]
        if let fleetSkipped {
            lines.append("| \(fleetSkipped) | – |")
        } else {
            for figure in FleetFigure.allCases {
                lines.append("| \(figure.title) | \(samples.spread(BenchSamples.fleetGroup, figure.rawValue)?.text(digits: figure.digits) ?? "–") |")
            }
        }
        lines += ["", "Targets (issue 7): \(targets.filter(\.pass).count) of \(targets.count) met.", ""]
        lines += targets.map { "- \($0.pass ? "PASS" : "MISS"): \($0.goal) — \($0.margin)" }
        lines += ["", "Notes:"] + Self.notes.map { "- \($0)" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Where the processes ran, for the heading.
    private var placementText: String {
        guard let servers = placement.servers, let clients = placement.clients else { return "Every process on any core." }
        return "Fronts, broker and responder on core\(servers.contains(",") ? "s" : "") \(servers); "
            + "load generators on core\(clients.contains(",") ? "s" : "") \(clients)."
    }

    static func verdictText(_ verdict: TargetVerdict) -> String {
        "\(verdict.pass ? "✅ pass" : "❌ miss"): \(verdict.margin)"
    }

    /// How each figure is measured: printed under the table and kept in the JSON.
    static let notes = [
        "Same PKI (ECDSA P-256 server and device certificates), TLS 1.3 only, X25519 (set on StapleGate and nginx; "
            + "Mosquitto 2.0.11 has no groups option and OpenSSL's default picks X25519), client certificate required everywhere, all on 127.0.0.1.",
        "Server CPU: utime + stime from /proc/PID/stat of the front's own processes (StapleGate; nginx master + workers; "
            + "the TLS Mosquitto), read before and after, divided by the work done. Clock ticks are 10 ms, hence runs of seconds.",
        "Handshakes: `openssl s_time -new` (full) or `-reuse` (TLS 1.3 ticket resumption) with `-www /`: each connection sends "
            + "one non-MQTT request and reads until the front closes, which s_time needs to take in the TLS 1.3 ticket; every "
            + "front rejects it, nginx after dialling Mosquitto (it proxies before any byte arrives), StapleGate without dialling.",
        "StapleGate staples its OCSP response (local `openssl ocsp` responder); nginx and Mosquitto do not staple.",
        "Throughput and latency: `staplegate load` (libmosquitto) publishers → one subscriber, QoS 0, through the front. "
            + "CPU per message = front CPU from the first publish to the last delivery / messages delivered; each message "
            + "crosses the front twice (publisher → broker, broker → subscriber). For (a) and (b) the broker behind is not "
            + "counted; for (c) the broker is the front, so its CPU includes the broker's own routing work.",
        "Latency: publish → deliver at a fixed total rate below saturation (the rate is in results.json's settings). "
            + "Both Mosquittos run with `set_tcp_nodelay true`: with their default, Nagle and delayed ACKs put every "
            + "front's p99.9 at 10–20 ms.",
        "Cores: with two or more, the server side (the front, the broker behind it, the OCSP responder) runs on one "
            + "half of the cores and the load generators on the other (taskset; `--no-pin` turns it off), so the "
            + "generators' own TLS work (≈ 1.3 ms of client CPU per session) does not compete with the front's and the "
            + "time to open the sessions measures the front. nginx gets one worker per server core, as StapleGate one "
            + "event loop per core it may run on.",
        "Where two fronts' min–max ranges overlap, their difference is within run-to-run noise (larger on a "
            + "machine shared with other work); a target judged on such medians is not settled.",
        "RSS per idle session: (VmRSS of the front's processes with every session open, 1 s after the last CONNACK − VmRSS "
            + "before) / sessions. All sessions present the same device certificate with distinct client ids. "
            + "Time to open: first connect → last CONNACK, at most `session_concurrency` in flight.",
        "StapleGate device OCSP: off = the (a) full-handshake figure (device_ocsp disabled); cache hit = device_ocsp on, "
            + "the device's answer cached by one connection first, every timed handshake a hit; first connect = device_ocsp "
            + "on with cache_lifetime 1ms, so every handshake asks the loopback responder as a device's first connect does "
            + "(s_time presents one certificate, so a fresh certificate per handshake is approximated by an expired cache entry). "
            + "The responder's CPU is shown apart and not counted in StapleGate's.",
        "StapleGate fleet (issue 14), against a PostgreSQL 15 the bench starts (fsync off, on the fronts' cores): "
            + "the cache-hit figure again with `fleet.store: postgres` (a local hit must not touch the database), beside the "
            + "same run's SQLite figure. Then a reader gateway started on an empty table, a writer gateway asking the responder "
            + "about `fleet_devices` certificates (good answers go to the table, not to the other gateways), and the reader "
            + "taking one session per certificate (`staplegate load sessions --devices-dir`): every one a local miss answered "
            + "by the table; then the same load again on the reader: every one a local hit. A first load with one certificate "
            + "takes the reader's first-load costs out of the miss pass. CPU per session = the reader's CPU from the first "
            + "connect to the last CONNACK / sessions: full handshake + MQTT CONNECT/CONNACK through to the broker (+ the table "
            + "read). The check rows come from the reader's metrics (hits, misses, responder requests) and the table (rows it "
            + "wrote): a pass that is not all hits, or not all table answers without a responder request, leaves its figure out.",
    ]

    /// chart.png: throughput and CPU per message per front at both payload sizes, and RSS per idle session.
    func writeChart(folder: String) throws -> String? {
        func value(_ front: FrontKind, _ figure: Figure) -> String {
            samples.median(front, figure).map { String(format: "%.3f", $0) } ?? "?"
        }
        let labels: [FrontKind: String] = [.staplegate: "StapleGate", .nginx: "nginx stream", .mosquitto: "Mosquitto TLS"]
        let rows = FrontKind.allCases.map { front in
            ["\"\(labels[front]!)\"", value(front, .throughput64), value(front, .throughput4K), value(front, .cpuPerMessage64),
             value(front, .cpuPerMessage4K), value(front, .rssPerSession)].joined(separator: " ")
        }
        let data = "\(folder)/chart.dat"
        try (["# front throughput64 throughput4K cpu64_us cpu4K_us rss_per_session_kib"] + rows).joined(separator: "\n")
            .appending("\n").write(toFile: data, atomically: true, encoding: .utf8)
        let script = """
        set terminal pngcairo size 1500,500 font ",10"
        set output "\(folder)/chart.png"
        set datafile missing "?"
        set style data histogram
        set style histogram clustered gap 1
        set style fill solid 0.8 border -1
        set boxwidth 0.9
        set grid ytics
        set yrange [0:*]
        set key top right
        set multiplot layout 1,3 title "StapleGate bench: medians of \(settings.runs) run\(settings.runs == 1 ? "" : "s")"
        set title "QoS 0 throughput (messages/s)"
        plot "\(data)" using 2:xtic(1) title "64 B", "" using 3 title "4 KiB"
        set title "Front CPU per message (µs)"
        plot "\(data)" using 4:xtic(1) title "64 B", "" using 5 title "4 KiB"
        set title "RSS per idle session (KiB)"
        plot "\(data)" using 6:xtic(1) title "idle session"
        unset multiplot

        """
        let scriptPath = "\(folder)/chart.gnuplot"
        try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let gnuplot = try ChildProcess("gnuplot", "gnuplot", [scriptPath], logPath: "\(folder)/chart.log")
        guard gnuplot.waitForExit(timeout: 60) == 0 else {
            return "gnuplot failed; \(folder)/chart.log:\n\(gnuplot.logTail())"
        }
        return nil
    }
}
